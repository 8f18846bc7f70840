"""The API key stays secret under faults: in what `AMAI_LOG=debug` prints, and in frames.

The fault soak (tests/soak/test_fault_soak.py) runs the planted-secret check over
everything it produced in process: every log record of the SDK, httpx and httpcore at
DEBUG, every exception with its chained causes and its traceback (frame locals included),
every SpendFailedError and every PendingSpend left in a journal. This file covers the
one output the soak cannot capture in process, the stderr handler that `AMAI_LOG`
installs, in a fresh interpreter whose clients meet every kind of fault; and the frame
locals of connection errors over both async transports.
"""

from __future__ import annotations

import asyncio
import re
import traceback
from pathlib import Path
from typing import Literal

import pytest

from amaimedia import AmaiError, APIConnectionError, AsyncAmaiClient
from amaimedia.testing import FakeAmaiServer
from tests.soak.reliability.exit_run import check_exit_run, run_exit_script
from tests.soak.reliability.secrets import SecretScanner
from tests.soak.reliability.soak import START_BALANCE

# `[2026-07-03 12:00:00,123 DEBUG amaimedia] ...`: the format of the AMAI_LOG handler.
LOG_LINE = re.compile(r"\[\d{4}-\d\d-\d\d [\d:,]+ (DEBUG|INFO|WARNING) amaimedia\] \S")


@pytest.mark.slow
def test_amai_log_debug_under_faults_never_prints_the_key(tmp_path: Path) -> None:
    fake = FakeAmaiServer()
    key = fake.create_key(balance=START_BALANCE)
    with fake.serve() as base_url:
        done = run_exit_script(fake, key, base_url, tmp_path / "spends.sqlite3", AMAI_LOG="debug")
    assert done.returncode == 0, done.stderr[-3000:]
    check_exit_run(fake, key, done.stdout)

    lines = done.stderr.splitlines()
    # The log is real: requests and answers of both endpoints, retries, failed spends.
    text = done.stderr
    for expected in ("POST /api/v1/tools/check", "POST /api/v1/tools/spend", "Retrying"):
        assert expected in text
    assert "-> 429" in text
    assert "-> 503" in text or "-> 502" in text or "-> 500" in text
    # Nothing but log lines: a warning or an error at exit would be a line of its own.
    assert [line for line in lines if not LOG_LINE.match(line)] == []

    scanner = SecretScanner([key])
    assert scanner.leaks(f"Authorization: Bearer {key}")
    assert [line for line in lines if scanner.leaks(line)] == []
    assert not scanner.leaks(done.stdout)


def frames_holding(scanner: SecretScanner, exc: BaseException) -> list[str]:
    """Each frame local, in `exc` and its causes, that error trackers would capture
    (`capture_locals`, Sentry's local variables) and that holds a piece of a key; this
    test's own frames, which hold the key on purpose, aside."""
    found = []
    pending = [traceback.TracebackException.from_exception(exc, capture_locals=True)]
    while pending:
        captured = pending.pop()
        for frame in captured.stack:
            if frame.filename == __file__:
                continue
            for name, value in (frame.locals or {}).items():
                if scanner.leaks(value):
                    found.append(
                        f"{Path(frame.filename).name}:{frame.lineno} {frame.name}: {name}"
                    )
        pending.extend(c for c in (captured.__cause__, captured.__context__) if c is not None)
    return found


@pytest.mark.parametrize("transport", ["httpx", "aiohttp"])
@pytest.mark.parametrize("fault", [{"drop": True}, {"delay": 5.0}], ids=["cut", "timeout"])
def test_connection_errors_hold_no_key_in_frame_locals(
    transport: Literal["httpx", "aiohttp"], fault: dict[str, object]
) -> None:
    """Error trackers capture the locals of every frame of an exception and its causes.
    Found by the fault soak: over aiohttp, each APIConnectionError and APITimeoutError
    chained frames whose locals held the Authorization header (`headers` in the
    transport's `_exchange`, and in aiohttp's own `ClientSession._request`)."""
    if transport == "aiohttp":
        pytest.importorskip("aiohttp")
    fake = FakeAmaiServer()
    key = fake.create_key()
    scanner = SecretScanner([key])
    fake.fail_next("check", **fault)  # type: ignore[arg-type]

    async def fail(base_url: str) -> AmaiError:
        async with AsyncAmaiClient(
            api_key=key, base_url=base_url, timeout=0.3, max_retries=0, transport=transport
        ) as client:
            with pytest.raises(APIConnectionError) as info:
                await client.check("chat")
            return info.value

    with fake.serve() as base_url:
        error = asyncio.run(fail(base_url))
    assert frames_holding(scanner, error) == []
