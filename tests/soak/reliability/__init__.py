"""Helpers of the reliability suites: fault schedules, the soak's lanes, secret checks.

- `faults`: the kinds of fault the soak injects, seeded per-block plans, and what the
  SDK's documented rules predict for each plan.
- `soak`: lanes (one `FakeAmaiServer` each, run by one thread or one task at a time),
  the transport that records what each attempt saw, and the checks of the results.
- `secrets`: the planted-secret check over logs, exceptions and journal entries.
- `exit_clean.py`: a script run in a subprocess to check what happens at interpreter exit,
  and `exit_run`, which runs it and checks what it charged (for `tests/wire/`).
"""
