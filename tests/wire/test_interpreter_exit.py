"""Nothing is left open at interpreter exit, after both clients were used hard under faults.

`exit_clean.py` (in `tests/soak/reliability/`, with the soak's fault schedules) runs in a
fresh interpreter with `-X dev -W error`: 16 threads on one `AmaiClient` with a spend
journal, then 100 tasks on one `AsyncAmaiClient` over each async transport, against a
`FakeAmaiServer` on loopback with faults queued. It must exit 0 with nothing at all on
stderr: no unclosed socket or transport, no "Event loop is closed"; and what it charged
must match the server's ledger.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from amaimedia.testing import FakeAmaiServer
from tests.soak.reliability.exit_run import check_exit_run, run_exit_script
from tests.soak.reliability.soak import START_BALANCE

pytestmark = pytest.mark.slow


def test_nothing_is_left_open_at_interpreter_exit(tmp_path: Path) -> None:
    fake = FakeAmaiServer()
    key = fake.create_key(balance=START_BALANCE)
    with fake.serve() as base_url:
        done = run_exit_script(fake, key, base_url, tmp_path / "spends.sqlite3")
    assert done.returncode == 0, done.stderr
    # -X dev shows every ResourceWarning, -W error turns each into an error printed at
    # exit: an unclosed socket, transport or event loop would show here.
    assert done.stderr == ""
    result = check_exit_run(fake, key, done.stdout)
    assert result["charged"]
    assert result["not_charged"]
