"""One metered block with a spend journal, for tests that kill it part-way.

Usage: python metered_job.py JOURNAL REFERENCE [options]

The key and the server come from `AMAI_API_KEY` and `AMAI_BASE_URL`. The job prints a
line at each step so that the test can kill it at a known point:

- `checking`: the check is about to go out; the block has not started.
- `working`: inside the block; nothing is journaled yet.
- `sending`: the spend is journaled and its request is about to go out.
- `answered`: the server answered the spend; the entry is not marked done yet.
- `retrying`: a failed attempt, waiting to retry.
- `done`: the block ended and the spend was charged (and, in the journal, marked done).

Each `--hold-*` option makes the job wait at that step until it is killed.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from typing import Any

import httpx

from amaimedia import AmaiClient

FOREVER = 60.0  # long enough for any test; short enough not to linger if one dies


def say(line: str) -> None:
    print(line, flush=True)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("journal")
    parser.add_argument("reference")
    parser.add_argument("--work", type=float, default=0.0, help="seconds the work takes")
    parser.add_argument("--max-retries", type=int, default=2)
    parser.add_argument(
        "--pause-before-spend", type=float, default=0.0, help="seconds between journal and spend"
    )
    parser.add_argument("--hold-before-spend", action="store_true")
    parser.add_argument("--hold-after-answer", action="store_true")
    parser.add_argument("--hold-retries", action="store_true")
    parser.add_argument("--hold-in-check", action="store_true")
    parser.add_argument("--hold-after-done", action="store_true")
    args = parser.parse_args()

    def on_request(request: httpx.Request) -> None:
        if request.url.path.endswith("/check"):
            say("checking")
            if args.hold_in_check:
                time.sleep(FOREVER)
        if request.url.path.endswith("/spend"):
            say("sending")
            time.sleep(FOREVER if args.hold_before_spend else args.pause_before_spend)

    def on_response(response: httpx.Response) -> None:
        if response.request.url.path.endswith("/spend"):
            say("answered")
            if args.hold_after_answer:
                time.sleep(FOREVER)

    def retry_wait(seconds: float) -> None:
        say("retrying")
        time.sleep(FOREVER if args.hold_retries else seconds)

    hooks: dict[str, list[Callable[..., Any]]] = {
        "request": [on_request],
        "response": [on_response],
    }
    with (
        httpx.Client(event_hooks=hooks) as http,
        AmaiClient(
            spend_journal=args.journal, http_client=http, max_retries=args.max_retries
        ) as client,
    ):
        client._sleep = retry_wait
        with client.metered("dub", units=3, reference=args.reference):
            say("working")
            time.sleep(args.work)
    say("done")
    if args.hold_after_done:
        time.sleep(FOREVER)
    return 0


if __name__ == "__main__":
    sys.exit(main())
