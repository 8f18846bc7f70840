"""`amaimedia replay`: the edges that the main tests (`test_replay.py`) do not reach.

The SDK's warnings when no log handler would show them, a console that cannot be
written, a key that the server echoes into a log record, failures of the SDK and the
journal in the middle of a round, the age of stale entries in every unit, a stop asked
for while the journal opens, and the signal handlers of a watch off the main thread or
over a handler that Python cannot put back. Everything runs in-process against the
offline fake over HTTP; a wait between rounds of a watch is replaced, never slept.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import signal
import sys
import threading
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from amaimedia import (
    AmaiClient,
    AmaiError,
    APIConnectionError,
    PendingSpend,
    ReplayReport,
    SpendFailedError,
    SpendJournalError,
)
from amaimedia._cli import ExitCode, main
from amaimedia.testing import FakeAmaiServer
from tests.journal.sealing import age_entry

TIMEOUT = 30  # seconds; only a hung thread ever comes near it
SDK_LOGGER = logging.getLogger("amaimedia")
POSTGRES_HINT = (
    "amaimedia: hint: a postgresql:// journal needs psycopg 3: pip install 'amaimedia[postgres]'"
)


@dataclass
class Result:
    code: int
    out: str
    err: str


class Bench:
    """A served fake, a key with 10,000 tokens, and an SQLite journal in tmp_path."""

    def __init__(
        self,
        fake: FakeAmaiServer,
        key: str,
        base_url: str,
        journal: Path,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        self.fake = fake
        self.key = key
        self.base_url = base_url
        self.journal = journal
        self._capsys = capsys
        self._made = 0

    def argv(self, *argv: str, journal: str | None = None) -> list[str]:
        target = str(self.journal) if journal is None else journal
        return ["replay", "--journal", target, *argv]

    def run(self, *argv: str, journal: str | None = None) -> Result:
        """`amaimedia replay --journal JOURNAL ARGV...`, in-process; the key never shown."""
        code = main(self.argv(*argv, journal=journal))
        captured = self._capsys.readouterr()
        assert self.key not in captured.out
        assert self.key not in captured.err
        return Result(code, captured.out, captured.err)

    def client(self) -> AmaiClient:
        return AmaiClient(
            self.key, base_url=self.base_url, max_retries=0, spend_journal=str(self.journal)
        )

    def leave_pending(self, tool: str = "chat", units: float = 1) -> str:
        """Run a metered block whose spend fails (a 503); return the reference left pending."""
        self._made += 1
        reference = f"job-{self._made}"
        self.fake.fail_next("spend", status=503)
        with (
            self.client() as client,
            pytest.raises(SpendFailedError),
            client.metered(tool, units, reference=reference),
        ):
            pass
        return reference

    def pending(self) -> list[PendingSpend]:
        with self.client() as client:
            return client.pending_spends()

    def age(self, reference: str, by: timedelta) -> None:
        """Make an entry look written `by` ago, sealed as the SDK would have written it.

        The row's authentication code covers its time: rewritten alone, the row would be
        refused as tampered with (tests/journal/test_integrity.py).
        """
        created = datetime.now(timezone.utc) - by
        age_entry(self.journal, self.key, reference, created, base_url=self.base_url)

    def charged(self) -> list[str]:
        return [spend.reference for spend in self.fake.spends]


@pytest.fixture
def bench(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> Iterator[Bench]:
    fake = FakeAmaiServer()
    key = fake.create_key(balance=10_000)
    with fake.serve() as base_url:
        monkeypatch.setenv("AMAI_BASE_URL", base_url)
        monkeypatch.setenv("AMAI_API_KEY", key)
        yield Bench(fake, key, base_url, tmp_path / "spends.sqlite3", capsys)


def no_log_handlers(monkeypatch: pytest.MonkeyPatch) -> None:
    """The `amaimedia` logger as in a plain process: no handler of its own or above it.

    In pytest the root logger has pytest's handlers; a logger that does not propagate
    does not reach them (and one that an earlier test gave `AMAI_LOG`'s handler has it
    set aside). Entries must be left pending before this, or the warnings of their
    failed spends would go to logging's last resort, on stderr.
    """
    monkeypatch.setattr(SDK_LOGGER, "handlers", [])
    monkeypatch.setattr(SDK_LOGGER, "propagate", False)
    assert not SDK_LOGGER.hasHandlers()


def no_waits(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Replace the wait between rounds with one that fails the test if reached."""
    waits: list[float] = []

    def wait(seconds: float) -> None:
        waits.append(seconds)
        raise AssertionError(f"the watch waited {seconds} s; it should have ended")

    monkeypatch.setattr("amaimedia._cli._replay.sleep", wait)
    return waits


def waits_then(monkeypatch: pytest.MonkeyPatch, *steps: Callable[[], None]) -> list[float]:
    """Replace the wait between rounds: the n-th wait runs `steps[n]` instead of sleeping."""
    waits: list[float] = []

    def wait(seconds: float) -> None:
        waits.append(seconds)
        steps[len(waits) - 1]()

    monkeypatch.setattr("amaimedia._cli._replay.sleep", wait)
    return waits


def sigterm() -> None:
    os.kill(os.getpid(), signal.SIGTERM)


def handlers() -> tuple[Any, Any]:
    return signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)


def fails_with(error: BaseException) -> Callable[..., ReplayReport]:
    """A `replay_pending` that raises `error` and sends nothing."""

    def replay_pending(client: AmaiClient, **ages: Any) -> ReplayReport:
        raise error

    return replay_pending


# the SDK's warnings, and the key kept out of them


def test_without_a_log_handler_the_sdks_warnings_are_labelled_stderr_lines(
    bench: Bench, monkeypatch: pytest.MonkeyPatch
) -> None:
    reference = bench.leave_pending("dub", 2)
    no_log_handlers(monkeypatch)
    bench.fake.fail_next("spend", status=503)

    result = bench.run("--max-retries", "0")

    assert result.code == ExitCode.PENDING
    assert result.out.startswith("replayed 1 spend: 0 charged (0 tokens), 1 failed, 0 stale")
    [warning] = result.err.splitlines()
    assert warning.startswith(
        f"amaimedia: warning: the pending spend dub x2 (reference={reference}) failed again "
        "and stays in the journal: 503 server_error"
    )
    assert SDK_LOGGER.handlers == []  # the command's handler is gone with the run


def test_max_age_0_makes_every_entry_stale_and_its_age_is_told_in_seconds(
    bench: Bench, monkeypatch: pytest.MonkeyPatch
) -> None:
    reference = bench.leave_pending("chat", 3)
    no_log_handlers(monkeypatch)

    result = bench.run("--max-age", "0")

    assert result.code == ExitCode.PENDING
    lines = result.out.splitlines()
    assert lines[0] == (
        "replayed 0 spends: 0 charged (0 tokens), 0 failed, 1 stale, 0 held, 0 young"
    )
    # Written a moment ago: under two minutes is told in seconds, however slow the run.
    age = re.fullmatch(
        rf"  stale: chat x3, reference {reference}, (\d+) seconds old, not sent", lines[1]
    )
    assert age is not None
    assert int(age[1]) < 120
    assert len(lines) == 2
    warning, hint = result.err.splitlines()
    assert warning.startswith("amaimedia: warning: 1 pending spend(s) are older than max_age")
    assert f"the oldest is chat x3 (reference={reference})" in warning
    assert hint.startswith("amaimedia: hint: stale spends are not sent")
    assert bench.charged() == []


def test_with_a_log_handler_the_sdks_warnings_are_left_to_it(
    bench: Bench, caplog: pytest.LogCaptureFixture
) -> None:
    reference = bench.leave_pending("dub", 2)
    caplog.clear()  # the warning of the block's spend that failed
    bench.fake.fail_next("spend", status=503)
    assert SDK_LOGGER.hasHandlers()  # pytest's, on the root logger

    with caplog.at_level(logging.WARNING, logger="amaimedia"):
        result = bench.run("--max-retries", "0")

    assert result.code == ExitCode.PENDING
    assert "warning:" not in result.err
    [record] = caplog.records
    assert record.getMessage().startswith(
        f"the pending spend dub x2 (reference={reference}) failed again"
    )


class BrokenStderr(io.TextIOBase):
    """A stderr whose reader went away: every write fails, as on a closed pipe."""

    def __init__(self) -> None:
        super().__init__()
        self.attempts: list[str] = []

    def write(self, text: str) -> int:
        self.attempts.append(text)
        raise BrokenPipeError(32, "Broken pipe")


def test_a_warning_that_cannot_be_written_does_not_stop_the_round(
    bench: Bench, monkeypatch: pytest.MonkeyPatch
) -> None:
    failing = bench.leave_pending("dub", 2)
    going = bench.leave_pending("chat", 1)
    no_log_handlers(monkeypatch)
    bench.fake.fail_next("spend", status=503)
    broken = BrokenStderr()

    with contextlib.redirect_stderr(broken):
        result = bench.run("--max-retries", "0")

    assert result.code == ExitCode.PENDING
    assert result.out.startswith("replayed 2 spends: 1 charged (5 tokens), 1 failed")
    assert bench.charged() == [going]
    # The warning was tried; logging's own report of the failure was tried too, and its
    # failure swallowed: the round went on to the next spend and printed its report.
    assert broken.attempts[0].startswith(
        f"amaimedia: warning: the pending spend dub x2 (reference={failing}) failed again"
    )
    assert broken.attempts[1] == "--- Logging error ---\n"
    assert len(broken.attempts) == 2


def test_a_key_the_server_echoes_is_blanked_out_of_the_sdks_log_records(
    bench: Bench, caplog: pytest.LogCaptureFixture
) -> None:
    reference = bench.leave_pending("dub", 2)
    caplog.clear()  # the warning of the block's spend that failed
    body = {"ok": False, "error": "server_error", "message": f"upstream refused {bench.key}"}
    bench.fake.fail_next("spend", status=503, body=body)

    with caplog.at_level(logging.WARNING, logger="amaimedia"):
        result = bench.run("--max-retries", "0")

    assert result.code == ExitCode.PENDING
    [record] = caplog.records
    message = record.getMessage()
    assert bench.key not in message
    assert message.startswith(
        f"the pending spend dub x2 (reference={reference}) failed again and stays in the "
        "journal: 503 server_error"
    )
    assert "upstream refused [API key]" in message
    assert "last error: 503 server_error" in result.out
    assert "upstream refused [API key]" in result.out
    assert SDK_LOGGER.filters == []  # the filter is gone with the run


def test_the_echoed_key_is_blanked_out_of_the_stderr_warning_too(
    bench: Bench, monkeypatch: pytest.MonkeyPatch
) -> None:
    bench.leave_pending("dub", 2)
    no_log_handlers(monkeypatch)
    body = {"ok": False, "error": "server_error", "message": f"upstream refused {bench.key}"}
    bench.fake.fail_next("spend", status=503, body=body)

    result = bench.run("--max-retries", "0")  # which asserts the key is not printed

    assert result.code == ExitCode.PENDING
    [warning] = result.err.splitlines()
    assert warning.startswith("amaimedia: warning: the pending spend dub x2")
    assert "503 server_error: upstream refused [API key] (request_id=" in warning


# the client cannot be built


def test_an_import_error_without_the_install_hint_gets_it(
    bench: Bench, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An install missing the SDK's own PostgreSQL module, not only psycopg."""
    bench.leave_pending()
    import amaimedia

    monkeypatch.delattr(amaimedia, "PostgresSpendJournal", raising=False)
    monkeypatch.setitem(sys.modules, "amaimedia._journal._postgres", None)
    requests = len(bench.fake.requests)

    result = bench.run(journal="postgresql://u:s3cretpass@127.0.0.1/db")

    assert result.code == ExitCode.JOURNAL
    assert result.out == ""
    assert result.err.splitlines() == [
        "amaimedia: error: import of amaimedia._journal._postgres halted; None in sys.modules",
        POSTGRES_HINT,
    ]
    assert len(bench.fake.requests) == requests


def test_an_import_error_with_the_install_hint_is_not_hinted_twice(
    bench: Bench, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "psycopg", None)
    result = bench.run(journal="postgresql://u:s3cretpass@127.0.0.1/db")
    assert result.code == ExitCode.JOURNAL
    assert result.err.count("amaimedia[postgres]") == 1
    assert "hint:" not in result.err


def test_an_sdk_error_building_the_client_is_reported_and_nothing_sent(
    bench: Bench, monkeypatch: pytest.MonkeyPatch
) -> None:
    bench.leave_pending()
    requests = len(bench.fake.requests)
    monkeypatch.setitem(sys.modules, "pyodide", types.ModuleType("pyodide"))

    result = bench.run()

    assert result.code == ExitCode.ERROR
    assert result.out == ""
    assert result.err.startswith("amaimedia: error: This looks like a browser runtime (Pyodide)")
    assert len(bench.fake.requests) == requests
    monkeypatch.delitem(sys.modules, "pyodide")
    assert len(bench.pending()) == 1


# failures during a round


def test_a_journal_error_during_the_round_exits_journal(
    bench: Bench, monkeypatch: pytest.MonkeyPatch
) -> None:
    bench.leave_pending()
    error = SpendJournalError("cannot read the spend journal: database is locked")
    monkeypatch.setattr(AmaiClient, "replay_pending", fails_with(error))

    result = bench.run()

    assert result.code == ExitCode.JOURNAL
    assert result.out == ""
    assert result.err == "amaimedia: error: cannot read the spend journal: database is locked\n"
    assert bench.charged() == []


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (AmaiError("this AmaiClient keeps no spend journal"), ExitCode.ERROR),
        (APIConnectionError("connection refused"), ExitCode.CONNECTION),
    ],
    ids=["AmaiError", "APIConnectionError"],
)
def test_an_sdk_error_during_the_round_exits_with_its_status(
    bench: Bench, monkeypatch: pytest.MonkeyPatch, error: AmaiError, code: ExitCode
) -> None:
    bench.leave_pending()
    monkeypatch.setattr(AmaiClient, "replay_pending", fails_with(error))

    result = bench.run()

    assert result.code == code
    assert result.out == ""
    assert result.err == f"amaimedia: error: {error}\n"
    assert bench.charged() == []


def test_a_watch_goes_on_after_an_sdk_error_in_a_round(
    bench: Bench, monkeypatch: pytest.MonkeyPatch
) -> None:
    reference = bench.leave_pending()
    replay_pending = AmaiClient.replay_pending
    rounds: list[int] = []

    def fails_once(client: AmaiClient, **ages: Any) -> ReplayReport:
        rounds.append(len(rounds) + 1)
        if len(rounds) == 1:
            raise APIConnectionError("connection refused")
        return replay_pending(client, **ages)

    monkeypatch.setattr(AmaiClient, "replay_pending", fails_once)
    waits = waits_then(monkeypatch, lambda: None, sigterm)

    result = bench.run("--watch")

    assert result.code == ExitCode.OK
    assert (rounds, waits) == ([1, 2], [30, 30])
    assert result.out.splitlines() == [
        "round 2: replayed 1 spend: 1 charged (5 tokens), 0 failed, 0 stale, 0 held, 0 young"
    ]
    assert "amaimedia: error: connection refused\n" in result.err
    assert result.err.endswith("amaimedia: replay stopped after 2 rounds\n")
    assert bench.charged() == [reference]


def test_failed_spends_are_shown_as_before_when_the_journal_cannot_be_read_again(
    bench: Bench, monkeypatch: pytest.MonkeyPatch
) -> None:
    reference = bench.leave_pending("dub", 2)
    pending_spends = AmaiClient.pending_spends
    reads: list[int] = []

    def second_read_fails(client: AmaiClient) -> list[PendingSpend]:
        reads.append(len(reads) + 1)
        if len(reads) == 2:  # the read after the round
            raise SpendJournalError("cannot read the spend journal: disk I/O error")
        return pending_spends(client)

    monkeypatch.setattr(AmaiClient, "pending_spends", second_read_fails)
    bench.fake.fail_next("spend", status=503)

    result = bench.run("--max-retries", "0")

    assert result.code == ExitCode.PENDING
    assert reads == [1, 2]
    lines = result.out.splitlines()
    assert lines[0] == (
        "replayed 1 spend: 0 charged (0 tokens), 1 failed, 0 stale, 0 held, 0 young"
    )
    # The entry as read before the round: its first attempt and that attempt's error.
    assert lines[1].startswith(
        f"  failed: dub x2, reference {reference}, 1 attempt, last error: 503 server_error"
    )
    assert len(lines) == 2
    assert "disk I/O error" not in result.err  # the round happened; no error to report
    [left] = bench.pending()
    assert (left.reference, left.attempts) == (reference, 2)


def test_stale_entries_give_their_age_in_days_hours_or_minutes(bench: Bench) -> None:
    references = [bench.leave_pending("chat", n) for n in (1, 2, 3)]
    ages = [
        timedelta(days=3, hours=5),
        timedelta(hours=3, minutes=10),
        timedelta(minutes=10, seconds=5),
    ]
    for reference, age in zip(references, ages, strict=True):
        bench.age(reference, age)

    result = bench.run("--max-age", "300")

    assert result.code == ExitCode.PENDING
    assert result.out.splitlines() == [
        "replayed 0 spends: 0 charged (0 tokens), 0 failed, 3 stale, 0 held, 0 young",
        f"  stale: chat x1, reference {references[0]}, 3 days old, not sent",
        f"  stale: chat x2, reference {references[1]}, 3 hours old, not sent",
        f"  stale: chat x3, reference {references[2]}, 10 minutes old, not sent",
    ]
    assert result.err.count("hint: stale spends are not sent") == 1
    assert bench.charged() == []


# --watch, in-process


class SignalledWhileOpening(AmaiClient):
    """The command's client, built while a SIGTERM arrives."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        sigterm()


def test_a_stop_asked_while_the_journal_opens_sends_nothing(
    bench: Bench, monkeypatch: pytest.MonkeyPatch
) -> None:
    reference = bench.leave_pending()
    requests = len(bench.fake.requests)
    monkeypatch.setattr("amaimedia._cli._replay.AmaiClient", SignalledWhileOpening)
    waits = no_waits(monkeypatch)
    before = handlers()

    result = bench.run("--watch", "--json")

    assert result.code == ExitCode.OK
    assert result.out == ""  # no round was run, so no report
    assert waits == []
    assert result.err.splitlines() == [
        f"amaimedia: replaying {bench.journal} every 30 s; stop with SIGINT or SIGTERM",
        "amaimedia: replay stopped after 1 round",
    ]
    assert len(bench.fake.requests) == requests
    assert [spend.reference for spend in bench.pending()] == [reference]
    assert handlers() == before


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--base-url", "http://example.com"], "uses plain http"),
        (["--max-age", str(1000 * 365 * 86400)], "max_age must be a number of seconds"),
    ],
    ids=["client-setting", "round-setting"],
)
def test_a_fatal_setting_ends_a_watch_with_usage(
    bench: Bench, monkeypatch: pytest.MonkeyPatch, argv: list[str], message: str
) -> None:
    bench.leave_pending()
    requests = len(bench.fake.requests)
    waits = no_waits(monkeypatch)
    before = handlers()

    result = bench.run("--watch", *argv)

    assert result.code == ExitCode.USAGE
    assert waits == []
    assert result.out == ""
    assert message in result.err
    assert "replay stopped" not in result.err
    assert len(bench.fake.requests) == requests
    assert len(bench.pending()) == 1
    assert handlers() == before


def test_a_watch_without_psycopg_ends_with_journal(
    bench: Bench, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "psycopg", None)
    waits = no_waits(monkeypatch)
    result = bench.run("--watch", journal="postgresql://u:s3cretpass@127.0.0.1/db")
    assert result.code == ExitCode.JOURNAL
    assert waits == []
    assert "pip install 'amaimedia[postgres]'" in result.err
    assert "s3cretpass" not in result.out + result.err


def test_a_watch_off_the_main_thread_ends_normally_with_the_signals_untouched(
    bench: Bench, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    bench.leave_pending()
    bench.fake.revoke(bench.key)
    waits = no_waits(monkeypatch)
    installed: list[int] = []
    install = signal.signal

    def recorded(signum: int, handler: Any) -> Any:
        installed.append(signum)
        return install(signum, handler)

    monkeypatch.setattr(signal, "signal", recorded)
    codes: list[int] = []
    before = handlers()

    thread = threading.Thread(target=lambda: codes.append(main(bench.argv("--watch"))))
    thread.start()
    thread.join(TIMEOUT)

    assert not thread.is_alive()
    assert codes == [ExitCode.AUTH]
    assert waits == []
    assert installed == []  # not even tried: Python runs handlers in the main thread only
    assert handlers() == before
    captured = capsys.readouterr()
    assert "401 auth_required" in captured.err
    assert "hint: check AMAI_API_KEY" in captured.err
    assert bench.key not in captured.out + captured.err


def test_a_previous_handler_set_outside_python_is_not_put_back(
    bench: Bench, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`signal.signal` returns None for a handler that C code set: there is nothing to restore.

    Python only reports that for a handler it did not install, which no test process has;
    the stand-in for `signal.signal` reports it for SIGTERM.
    """
    bench.leave_pending()
    bench.fake.revoke(bench.key)
    no_waits(monkeypatch)
    install = signal.signal
    calls: list[tuple[int, Any]] = []

    def sigterm_set_in_c(signum: int, handler: Any) -> Any:
        calls.append((signum, handler))
        previous = install(signum, handler)
        return None if signum == signal.SIGTERM else previous

    before = handlers()
    monkeypatch.setattr(signal, "signal", sigterm_set_in_c)
    try:
        result = bench.run("--watch")
    finally:
        install(signal.SIGTERM, before[1])

    assert result.code == ExitCode.AUTH
    assert "Traceback" not in result.err
    # Both caught; only SIGINT put back, and nothing was set to None (a TypeError).
    assert [signum for signum, _ in calls] == [signal.SIGINT, signal.SIGTERM, signal.SIGINT]
    assert calls[2][1] == before[0]
    assert all(handler is not None for _, handler in calls)
    assert signal.getsignal(signal.SIGINT) == before[0]
