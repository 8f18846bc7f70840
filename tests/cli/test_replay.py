"""`amaimedia replay`: pending spends of a real journal, sent to the offline fake over HTTP.

Entries are left pending the way production leaves them: a metered block whose spend the
fake answers with a 503, with no retries, so that `SpendFailedError` leaves the entry in
the journal. Every in-process run goes through `Replayer.run`, which also asserts that
the key appears in neither stdout nor stderr. `--watch` runs as a real process for its
signals, and in-process (with the wait replaced) for what happens between rounds.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import queue
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import pytest

from amaimedia import (
    AmaiClient,
    PendingSpend,
    PostgresSpendJournal,
    ReplayReport,
    SpendFailedError,
    SpendJournal,
)
from amaimedia._cli import ExitCode, main
from amaimedia.testing import FakeAmaiServer
from tests.journal.sealing import age_entry

if TYPE_CHECKING:
    from tests.postgres import PostgresServer

TIMEOUT = 30  # seconds; only a hung child process ever comes near it
PROMPT = 10  # seconds: how soon a watcher must be gone after its signal


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json_lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.out.splitlines()]


class Replayer:
    """A served fake, a key with 10,000 tokens, and an SQLite journal in tmp_path."""

    def __init__(
        self, fake: FakeAmaiServer, key: str, base_url: str, journal: Path, capsys: Any
    ) -> None:
        self.fake = fake
        self.key = key
        self.base_url = base_url
        self.journal = journal
        self._capsys = capsys
        self._made = 0

    def run(self, *argv: str, journal: str | None = None) -> Result:
        """`amaimedia replay --journal JOURNAL ARGV...`, in-process."""
        target = str(self.journal) if journal is None else journal
        code = main(["replay", "--journal", target, *argv])
        captured = self._capsys.readouterr()
        assert self.key not in captured.out
        assert self.key not in captured.err
        return Result(code, captured.out, captured.err)

    def client(self, journal: str | SpendJournal | None = None) -> AmaiClient:
        """A client on the journal: the SQLite file, or a journal object of the test's."""
        target = str(self.journal) if journal is None else journal
        return AmaiClient(self.key, base_url=self.base_url, max_retries=0, spend_journal=target)

    def leave_pending(
        self, tool: str = "chat", units: float = 1, *, journal: SpendJournal | None = None
    ) -> str:
        """Run a metered block whose spend fails; return the reference left pending."""
        self._made += 1
        reference = f"job-{self._made}"
        self.fake.fail_next("spend", status=503)
        with (
            self.client(journal) as client,
            pytest.raises(SpendFailedError),
            client.metered(tool, units, reference=reference),
        ):
            pass
        return reference

    def pending(self, journal: SpendJournal | None = None) -> list[PendingSpend]:
        with self.client(journal) as client:
            return client.pending_spends()

    def age(self, reference: str, by: timedelta) -> None:
        """Make an entry look written `by` ago, sealed as the SDK would have written it."""
        created = datetime.now(timezone.utc) - by
        age_entry(self.journal, self.key, reference, created, base_url=self.base_url)

    def charged(self) -> list[str]:
        return [spend.reference for spend in self.fake.spends]


@pytest.fixture
def replayer(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> Iterator[Replayer]:
    fake = FakeAmaiServer()
    key = fake.create_key(balance=10_000)
    with fake.serve() as base_url:
        monkeypatch.setenv("AMAI_BASE_URL", base_url)
        monkeypatch.setenv("AMAI_API_KEY", key)
        yield Replayer(fake, key, base_url, tmp_path / "spends.sqlite3", capsys)


def closed_port() -> int:
    """A loopback port that nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def test_new_exit_codes_are_a_stable_interface() -> None:
    assert (ExitCode.PENDING, ExitCode.JOURNAL) == (9, 10)
    assert len({int(code) for code in ExitCode}) == len(ExitCode)


# one round


def test_every_pending_spend_is_charged_once(replayer: Replayer) -> None:
    references = [
        replayer.leave_pending("chat", 1),
        replayer.leave_pending("dub", 2.5),
        replayer.leave_pending("chat", 3),
    ]
    assert replayer.charged() == []

    result = replayer.run()

    assert result.code == ExitCode.OK
    assert result.out == (
        "replayed 3 spends: 3 charged (120 tokens), 0 failed, 0 stale, 0 held, 0 young\n"
    )
    assert replayer.charged() == references
    assert replayer.fake.balance(replayer.key) == 10_000 - 120
    assert replayer.pending() == []
    again = replayer.run()
    assert again.code == ExitCode.OK
    assert again.out.startswith("replayed 0 spends: 0 charged (0 tokens)")
    assert replayer.charged() == references


def test_a_spend_that_fails_again_exits_pending_and_stays(replayer: Replayer) -> None:
    failing = replayer.leave_pending("dub", 2)
    going = replayer.leave_pending("chat", 1)
    replayer.fake.fail_next("spend", status=503)  # the oldest goes first, and fails

    result = replayer.run("--max-retries", "0")

    assert result.code == ExitCode.PENDING
    lines = result.out.splitlines()
    assert lines[0] == (
        "replayed 2 spends: 1 charged (5 tokens), 1 failed, 0 stale, 0 held, 0 young"
    )
    # The error is this round's: the entry's second attempt.
    assert lines[1].startswith(
        f"  failed: dub x2, reference {failing}, 2 attempts, last error: 503 server_error"
    )
    assert len(lines) == 2
    assert replayer.charged() == [going]
    [left] = replayer.pending()
    assert (left.reference, left.attempts, left.error_code) == (failing, 2, "server_error")


def test_stale_entries_are_reported_not_sent_until_max_age_allows(replayer: Replayer) -> None:
    old = replayer.leave_pending("dub", 1)
    fresh = replayer.leave_pending("chat", 1)
    replayer.age(old, timedelta(days=8))

    result = replayer.run()

    assert result.code == ExitCode.PENDING
    assert result.out.splitlines() == [
        "replayed 1 spend: 1 charged (5 tokens), 0 failed, 1 stale, 0 held, 0 young",
        f"  stale: dub x1, reference {old}, 8 days old, not sent",
    ]
    assert "hint: stale spends are not sent" in result.err
    assert "--max-age" in result.err
    assert replayer.charged() == [fresh]
    assert [spend.reference for spend in replayer.pending()] == [old]

    ten_days = replayer.run("--max-age", str(10 * 86400))
    assert ten_days.code == ExitCode.OK
    assert ten_days.out.startswith("replayed 1 spend: 1 charged (40 tokens)")
    assert replayer.charged() == [fresh, old]


def test_max_age_none_sends_entries_however_old(replayer: Replayer) -> None:
    ancient = replayer.leave_pending("chat", 2)
    replayer.age(ancient, timedelta(days=400))
    assert replayer.run().code == ExitCode.PENDING
    assert replayer.charged() == []

    result = replayer.run("--max-age", "none")

    assert result.code == ExitCode.OK
    assert replayer.charged() == [ancient]


def test_older_than_skips_young_entries(replayer: Replayer) -> None:
    young = replayer.leave_pending()

    skipped = replayer.run("--older-than", "3600")

    assert skipped.code == ExitCode.PENDING
    assert skipped.out == (
        "replayed 0 spends: 0 charged (0 tokens), 0 failed, 0 stale, 0 held, 1 young\n"
    )
    assert replayer.charged() == []
    replayer.age(young, timedelta(hours=2))
    assert replayer.run("--older-than", "3600").code == ExitCode.OK
    assert replayer.charged() == [young]


def test_json_is_one_object_with_the_numbers(replayer: Replayer) -> None:
    failing = replayer.leave_pending("dub", 2)
    stale = replayer.leave_pending("voice_clone", 4)
    going = replayer.leave_pending("chat", 3)
    replayer.age(stale, timedelta(days=30))
    replayer.fake.fail_next("spend", status=503)

    result = replayer.run("--json", "--max-retries", "0")

    assert result.code == ExitCode.PENDING
    [report] = result.json_lines()
    assert report["round"] == 1
    assert datetime.fromisoformat(report["at"]).tzinfo is not None
    assert report["journal"] == str(replayer.journal)
    assert report["charged"] == [
        {
            "tool": "chat",
            "units": 3,
            "reference": going,
            "charged": 15,
            "balance_after": 10_000 - 15,
        }
    ]
    assert report["charged_tokens"] == 15
    [failed] = report["failed"]
    assert {key: failed[key] for key in ("tool", "units", "reference", "attempts")} == {
        "tool": "dub",
        "units": 2,
        "reference": failing,
        "attempts": 2,
    }
    assert failed["error_code"] == "server_error"
    assert failed["last_error"].startswith("503 server_error")
    [old] = report["stale"]
    assert (old["tool"], old["units"], old["reference"]) == ("voice_clone", 4, stale)
    age = datetime.now(timezone.utc) - datetime.fromisoformat(old["created_at"])
    assert timedelta(days=29) < age < timedelta(days=31)
    assert (report["held"], report["young"]) == ([], [])
    assert report["left_pending"] == 2


def test_json_with_nothing_pending(replayer: Replayer) -> None:
    result = replayer.run("--json")
    assert result.code == ExitCode.OK
    [report] = result.json_lines()
    assert report["charged"] == report["failed"] == report["stale"] == []
    assert report["left_pending"] == 0


def test_the_key_can_come_from_stdin(replayer: Replayer, monkeypatch: pytest.MonkeyPatch) -> None:
    reference = replayer.leave_pending()
    monkeypatch.delenv("AMAI_API_KEY")
    monkeypatch.setattr(sys, "stdin", io.StringIO(replayer.key + "\n"))
    result = replayer.run("--api-key-stdin")
    assert result.code == ExitCode.OK
    assert replayer.charged() == [reference]


def test_another_keys_entries_are_not_touched(
    replayer: Replayer, monkeypatch: pytest.MonkeyPatch
) -> None:
    replayer.leave_pending()
    monkeypatch.setenv("AMAI_API_KEY", replayer.fake.create_key(balance=100))
    result = replayer.run()
    assert result.code == ExitCode.OK
    assert result.out.startswith("replayed 0 spends")
    assert replayer.charged() == []


# the key refused, the journal unusable, the arguments impossible


def test_a_refused_key_exits_auth_and_leaves_the_spends_pending(replayer: Replayer) -> None:
    reference = replayer.leave_pending()
    replayer.fake.revoke(replayer.key)

    result = replayer.run()

    assert result.code == ExitCode.AUTH
    assert "1 failed" in result.out
    assert "401 auth_required" in result.err
    assert "hint: check AMAI_API_KEY" in result.err
    [left] = replayer.pending()
    assert (left.reference, left.error_code) == (reference, "auth_required")


def test_a_postgres_journal_that_cannot_be_reached_exits_journal(replayer: Replayer) -> None:
    url = f"postgresql://u:s3cretpass@127.0.0.1:{closed_port()}/db"
    result = replayer.run(journal=url)
    assert result.code == ExitCode.JOURNAL
    assert "cannot open the spend journal postgresql://u@127.0.0.1:" in result.err
    assert "s3cretpass" not in result.out + result.err
    assert replayer.fake.requests == []


def test_a_postgres_journal_without_psycopg_says_what_to_install(
    replayer: Replayer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "psycopg", None)  # import psycopg raises ImportError
    result = replayer.run(journal="postgresql://u:s3cretpass@127.0.0.1/db")
    assert result.code == ExitCode.JOURNAL
    assert "pip install 'amaimedia[postgres]'" in result.err
    assert "s3cretpass" not in result.out + result.err


def test_a_file_that_is_not_a_journal_exits_journal(replayer: Replayer) -> None:
    replayer.journal.write_text("not a database, only text " * 100)
    result = replayer.run()
    assert result.code == ExitCode.JOURNAL
    assert f"cannot use {replayer.journal} as a spend journal" in result.err
    assert result.out == ""


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--max-age", "-1"], "argument --max-age: seconds are a finite number"),
        (["--max-age", "inf"], "'none' sends entries however old"),
        (["--max-age", "soon"], "not a number of seconds: 'soon'"),
        (["--older-than", "nan"], "argument --older-than: seconds are a finite number"),
        (["--older-than", "-5"], "argument --older-than"),
        (["--interval", "5"], "--interval needs --watch"),
        (["--watch", "--interval", "0"], "the interval must be more than 0 seconds"),
        (["--watch", "--interval", "-1"], "argument --interval"),
        (["--older-than", "100", "--max-age", "50"], "--older-than (100 s) exceeds --max-age"),
        (["--max-age", str(1000 * 365 * 86400)], "max_age must be a number of seconds"),
        (["--timeout", "0"], "timeout must be a positive number"),
        (["--base-url", "http://example.com"], "uses plain http"),
        (["--max-retries", "many"], "argument --max-retries"),
        (["--journal", " "], "--journal needs the path of an SQLite file"),
    ],
)
def test_impossible_arguments_exit_usage_and_send_nothing(
    replayer: Replayer, argv: list[str], message: str
) -> None:
    replayer.leave_pending()
    requests = len(replayer.fake.requests)
    result = replayer.run(*argv)
    assert result.code == ExitCode.USAGE
    assert message in result.err
    assert len(replayer.fake.requests) == requests
    assert len(replayer.pending()) == 1


def test_a_missing_journal_option_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["replay"]) == ExitCode.USAGE
    assert "the following arguments are required: --journal" in capsys.readouterr().err


def test_no_key_exits_auth(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    journal = tmp_path / "spends.sqlite3"
    assert main(["replay", "--journal", str(journal)]) == ExitCode.AUTH
    assert "set AMAI_API_KEY" in capsys.readouterr().err
    assert not journal.exists()  # not even opened


def test_help_lists_replay_and_its_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["replay", "--help"]) == ExitCode.OK
    out = capsys.readouterr().out
    for option in ("--journal", "--watch", "--interval", "--older-than", "--max-age"):
        assert option in out
    assert f"\n    9  {ExitCode.PENDING.meaning}\n" in out
    assert f"\n   10  {ExitCode.JOURNAL.meaning}\n" in out
    assert main(["--help"]) == ExitCode.OK
    assert "    replay " in capsys.readouterr().out


# --watch, in-process: the wait between rounds is replaced


class Waits:
    """Stands in for the watcher's sleep: runs `steps[n]` at the n-th wait."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, *steps: Callable[[], None]) -> None:
        self.steps = list(steps)
        self.seconds: list[float] = []
        monkeypatch.setattr("amaimedia._cli._replay.sleep", self)

    def __call__(self, seconds: float) -> None:
        self.seconds.append(seconds)
        self.steps[len(self.seconds) - 1]()


def sigterm() -> None:
    # Arrives while the watcher waits, as it would from another process.
    os.kill(os.getpid(), signal.SIGTERM)


def handlers() -> tuple[Any, Any]:
    return signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)


def test_watch_keeps_trying_a_database_that_is_down(
    replayer: Replayer, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"postgresql://u:s3cretpass@127.0.0.1:{closed_port()}/db"
    Waits(monkeypatch, lambda: None, sigterm)
    result = replayer.run("--watch", journal=url)
    assert result.code == ExitCode.OK
    assert result.out == ""
    assert result.err.count("cannot open the spend journal postgresql://u@127.0.0.1:") == 2
    assert "round 1: " in result.err
    assert "round 2: " in result.err
    assert "s3cretpass" not in result.err


def test_watch_waits_the_default_interval_and_prints_human_rounds(
    replayer: Replayer, monkeypatch: pytest.MonkeyPatch
) -> None:
    reference = replayer.leave_pending()
    waits = Waits(monkeypatch, lambda: None, sigterm)
    result = replayer.run("--watch")
    assert result.code == ExitCode.OK
    assert waits.seconds == [30, 30]
    assert result.out.splitlines() == [
        "round 1: replayed 1 spend: 1 charged (5 tokens), 0 failed, 0 stale, 0 held, 0 young",
        "round 2: replayed 0 spends: 0 charged (0 tokens), 0 failed, 0 stale, 0 held, 0 young",
    ]
    assert f"replaying {replayer.journal} every 30 s" in result.err
    assert replayer.charged() == [reference]


def test_watch_ends_with_auth_when_the_key_is_refused(
    replayer: Replayer, monkeypatch: pytest.MonkeyPatch
) -> None:
    replayer.leave_pending()
    replayer.fake.revoke(replayer.key)
    waits = Waits(monkeypatch)  # any wait would fail: there are no steps
    before = handlers()
    result = replayer.run("--watch", "--interval", "1")
    assert result.code == ExitCode.AUTH
    assert waits.seconds == []
    assert "401 auth_required" in result.err
    assert len(replayer.pending()) == 1
    assert handlers() == before


def test_a_signal_during_a_round_lets_it_finish(
    replayer: Replayer, monkeypatch: pytest.MonkeyPatch
) -> None:
    references = [replayer.leave_pending(), replayer.leave_pending()]
    replay_pending = AmaiClient.replay_pending

    def signalled_then_replayed(client: AmaiClient, **ages: Any) -> ReplayReport:
        os.kill(os.getpid(), signal.SIGTERM)
        return replay_pending(client, **ages)

    monkeypatch.setattr(AmaiClient, "replay_pending", signalled_then_replayed)
    waits = Waits(monkeypatch)
    result = replayer.run("--watch", "--json")
    assert result.code == ExitCode.OK
    assert waits.seconds == []  # stopped after the round, without waiting
    [report] = result.json_lines()
    assert report["left_pending"] == 0
    assert replayer.charged() == references


def test_a_second_signal_abandons_the_round(
    replayer: Replayer, monkeypatch: pytest.MonkeyPatch
) -> None:
    reference = replayer.leave_pending()

    def signalled_twice(client: AmaiClient, **ages: Any) -> ReplayReport:
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGINT)
        raise AssertionError("the second signal did not stop the round")

    monkeypatch.setattr(AmaiClient, "replay_pending", signalled_twice)
    before = handlers()
    result = replayer.run("--watch")
    assert result.code == ExitCode.INTERRUPTED
    assert "interrupted; a spend that was in flight stays pending" in result.err
    assert "Traceback" not in result.err
    assert [spend.reference for spend in replayer.pending()] == [reference]
    assert handlers() == before


def test_watch_off_the_main_thread_leaves_the_signals_alone(
    replayer: Replayer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    reference = replayer.leave_pending()

    def wait(seconds: float) -> None:
        raise KeyboardInterrupt  # no handler could be installed: the only way out here

    monkeypatch.setattr("amaimedia._cli._replay.sleep", wait)
    argv = ["replay", "--journal", str(replayer.journal), "--watch", "--json"]
    codes: list[int] = []
    before = handlers()
    thread = threading.Thread(target=lambda: codes.append(main(argv)))
    thread.start()
    thread.join(TIMEOUT)
    assert codes == [ExitCode.INTERRUPTED]
    assert handlers() == before
    assert replayer.charged() == [reference]
    captured = capsys.readouterr()
    assert json.loads(captured.out)["left_pending"] == 0
    assert replayer.key not in captured.out + captured.err


# --watch as a real process


class Watcher:
    """`python -m amaimedia replay --watch ...` with its stdout read line by line."""

    def __init__(self, replayer: Replayer, *argv: str) -> None:
        env = {**os.environ, "AMAI_API_KEY": replayer.key, "AMAI_BASE_URL": replayer.base_url}
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "amaimedia",
                "replay",
                "--journal",
                str(replayer.journal),
                "--watch",
                *argv,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)

    def next_round(self) -> dict[str, Any]:
        report: dict[str, Any] = json.loads(self.lines.get(timeout=TIMEOUT))
        return report

    def stop(self, signum: int) -> tuple[int, str, float]:
        """Send `signum`; the exit status, stderr, and how long the exit took."""
        sent = time.monotonic()
        self.proc.send_signal(signum)
        try:
            code = self.proc.wait(timeout=TIMEOUT)
            took = time.monotonic() - sent
            assert self.proc.stderr is not None
            err = self.proc.stderr.read()
        finally:
            self.close()
        return code, err, took

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=TIMEOUT)
        self._reader.join(timeout=TIMEOUT)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_watch_process_replays_in_rounds_and_exits_0_on_a_signal(
    replayer: Replayer, signum: signal.Signals
) -> None:
    reference = replayer.leave_pending("dub", 1)
    watcher = Watcher(replayer, "--interval", "0.2", "--json")
    try:
        rounds = [watcher.next_round(), watcher.next_round()]
    except BaseException:
        watcher.close()
        raise
    code, err, took = watcher.stop(signum)
    assert [report["round"] for report in rounds] == [1, 2]
    assert [charge["reference"] for charge in rounds[0]["charged"]] == [reference]
    assert rounds[1]["charged"] == []
    assert (code, took < PROMPT) == (0, True), err
    assert "Traceback" not in err
    assert re.search(r"amaimedia: replay stopped after \d+ rounds\n\Z", err)
    assert replayer.key not in err
    assert replayer.charged() == [reference]


@pytest.mark.slow
def test_a_signal_ends_a_long_wait_at_once(replayer: Replayer) -> None:
    watcher = Watcher(replayer, "--interval", "600", "--json")
    try:
        assert watcher.next_round()["left_pending"] == 0
        time.sleep(0.2)  # well into the wait
    except BaseException:
        watcher.close()
        raise
    code, err, took = watcher.stop(signal.SIGTERM)
    assert code == 0, err
    assert took < 5
    assert "Traceback" not in err
    assert err.endswith("amaimedia: replay stopped after 1 round\n")


@pytest.mark.slow
def test_one_round_in_a_process_prints_the_sdks_warnings_as_its_own(replayer: Replayer) -> None:
    reference = replayer.leave_pending("dub", 2)
    replayer.fake.fail_next("spend", status=503)
    env = {**os.environ, "AMAI_API_KEY": replayer.key, "AMAI_BASE_URL": replayer.base_url}
    journal = str(replayer.journal)
    result = subprocess.run(
        [sys.executable, "-m", "amaimedia", "replay", "--max-retries", "0", "--journal", journal],
        capture_output=True,
        text=True,
        env=env,
        timeout=TIMEOUT,
        check=False,
    )
    assert result.returncode == ExitCode.PENDING, result.stderr
    assert result.stdout.startswith("replayed 1 spend: 0 charged (0 tokens), 1 failed")
    assert result.stderr.startswith(
        f"amaimedia: warning: the pending spend dub x2 (reference={reference}) failed again"
    )
    assert replayer.key not in result.stdout + result.stderr


# a PostgreSQL journal, end to end


def test_a_postgres_journal_is_replayed(replayer: Replayer, postgres_url: str) -> None:
    password = urlsplit(postgres_url).password
    assert password
    with contextlib.closing(PostgresSpendJournal(postgres_url)) as journal:
        references = [
            replayer.leave_pending("chat", 1, journal=journal),
            replayer.leave_pending("dub", 1, journal=journal),
        ]

        result = replayer.run("--json", journal=postgres_url)

        assert replayer.pending(journal) == []
        location = journal.location
    assert result.code == ExitCode.OK, result.err
    [report] = result.json_lines()
    assert report["journal"] == location
    assert password not in location
    assert password not in result.out + result.err
    assert [charge["reference"] for charge in report["charged"]] == references
    assert report["charged_tokens"] == 45
    assert replayer.charged() == references


def test_stdout_and_stderr_never_hold_a_planted_password(replayer: Replayer) -> None:
    """The journal's argument itself is never echoed, whatever else goes wrong."""
    url = f"postgresql://u:s3cretpass@127.0.0.1:{closed_port()}/db"
    for argv in (["--max-age", "-1"], ["--interval", "1"], ["-v"], ["--json"]):
        result = replayer.run(*argv, journal=url)
        assert result.code in (ExitCode.USAGE, ExitCode.JOURNAL)
        assert "s3cretpass" not in result.out + result.err


def test_watch_goes_on_while_the_database_restarts(
    replayer: Replayer,
    postgres_server: PostgresServer,
    postgres_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if not postgres_server.managed:
        pytest.skip("stops and starts the server: only one that the suite made")
    with contextlib.closing(PostgresSpendJournal(postgres_url)) as journal:
        first = replayer.leave_pending("chat", 1, journal=journal)
        later: list[str] = []
        waits: list[float] = []

        def wait(seconds: float) -> None:
            waits.append(seconds)
            if len(waits) == 1:
                postgres_server.stop()
            elif len(waits) == 2:
                postgres_server.start()
                # A journal of its own: the old one's connections died with the server.
                with contextlib.closing(PostgresSpendJournal(postgres_url)) as fresh:
                    later.append(replayer.leave_pending("dub", 1, journal=fresh))
            elif later[0] in replayer.charged() or len(waits) > 8:
                sigterm()

        monkeypatch.setattr("amaimedia._cli._replay.sleep", wait)
        result = replayer.run("--watch", "--json", journal=postgres_url)
    with contextlib.closing(PostgresSpendJournal(postgres_url)) as journal:
        assert replayer.pending(journal) == []

    assert result.code == ExitCode.OK, result.err
    rounds = result.json_lines()
    assert [charge["reference"] for charge in rounds[0]["charged"]] == [first]
    assert [charge["reference"] for charge in rounds[-1]["charged"]] == later
    assert rounds[0]["round"] == 1
    # Round 2 found the server gone, said so, and the watch went on.
    assert 2 not in [report["round"] for report in rounds]
    assert re.search(r"error: round 2: cannot \w+ the spend journal postgresql://", result.err)
    password = urlsplit(postgres_url).password
    assert password
    assert password not in result.out + result.err
    assert replayer.charged() == [first, *later]


# -- a rotated key, rows refused, entries of amaimedia 0.1 -------------------------------

# amaimedia 0.1's layout of the SQLite journal, as it created it.
LAYOUT_1 = """
CREATE TABLE spends (
    id INTEGER PRIMARY KEY AUTOINCREMENT, scope TEXT NOT NULL, tool TEXT NOT NULL,
    units TEXT NOT NULL, reference TEXT NOT NULL, created_at TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0, last_error TEXT, error_code TEXT,
    state TEXT NOT NULL DEFAULT 'pending', charged INTEGER, done_at TEXT,
    UNIQUE (scope, tool, reference)
)
"""


def leave_pending_with(replayer: Replayer, key: str, reference: str) -> None:
    """A pending entry written by another key (the one before a rotation)."""
    replayer.fake.fail_next("spend", status=503)
    with (
        AmaiClient(
            key, base_url=replayer.base_url, max_retries=0, spend_journal=replayer.journal
        ) as old,
        pytest.raises(SpendFailedError),
        old.metered("chat", 1, reference=reference),
    ):
        pass


def test_previous_keys_from_stdin_adopt_a_rotated_keys_entries(
    replayer: Replayer, monkeypatch: pytest.MonkeyPatch
) -> None:
    old_key = replayer.fake.create_key()
    leave_pending_with(replayer, old_key, "job-old")
    assert replayer.run().out.startswith("replayed 0 spends")  # the new key sees none

    monkeypatch.setattr(sys, "stdin", io.StringIO(f"\n{old_key}\n\n"))
    result = replayer.run("--previous-key-stdin")

    assert result.code == ExitCode.OK, result.err
    assert result.out.startswith("replayed 1 spend: 1 charged (5 tokens)")
    assert replayer.charged() == ["job-old"]
    new_account = replayer.fake.account_id(replayer.key)
    assert [spend.account for spend in replayer.fake.spends] == [new_account]
    assert old_key not in result.out + result.err
    assert replayer.pending() == []


def test_the_key_and_previous_keys_can_all_come_from_stdin(
    replayer: Replayer, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second = replayer.fake.create_key(), replayer.fake.create_key()
    leave_pending_with(replayer, first, "job-1")
    leave_pending_with(replayer, second, "job-2")
    monkeypatch.delenv("AMAI_API_KEY")
    monkeypatch.setattr(sys, "stdin", io.StringIO(f"{replayer.key}\n{first}\n{second}\n"))

    result = replayer.run("--api-key-stdin", "--previous-key-stdin", "--json")

    assert result.code == ExitCode.OK, result.err
    [report] = result.json_lines()
    assert [charge["reference"] for charge in report["charged"]] == ["job-1", "job-2"]
    assert report["refused"] == []
    assert first not in result.out + result.err
    assert second not in result.out + result.err


@pytest.mark.parametrize(
    ("stdin", "message"),
    [
        ("", "--previous-key-stdin read no key"),
        ("\n  \n", "--previous-key-stdin read no key"),
        ("amai_live_has space_0123456789\n", r"previous_keys\[0\] contains whitespace"),
        ("amai_live_ok_0123456789abcdef\n\x00bad\n", r"previous_keys\[1\] contains characters"),
    ],
)
def test_previous_keys_that_are_no_keys_are_a_usage_error_that_never_shows_them(
    replayer: Replayer, monkeypatch: pytest.MonkeyPatch, stdin: str, message: str
) -> None:
    reference = replayer.leave_pending()
    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))

    result = replayer.run("--previous-key-stdin")

    assert result.code == ExitCode.USAGE
    assert re.search(message, result.err)
    for line in stdin.split():
        assert line not in result.out + result.err
    assert replayer.charged() == []
    assert [spend.reference for spend in replayer.pending()] == [reference]


def test_a_row_changed_without_the_key_is_shown_refused_and_exits_pending(
    replayer: Replayer,
) -> None:
    reference = replayer.leave_pending("chat", 1)
    going = replayer.leave_pending("chat", 1)
    with contextlib.closing(sqlite3.connect(replayer.journal)) as db, db:
        db.execute(
            "UPDATE spends SET tool = ?, units = '240' WHERE reference = ?",
            ("dub\x1b]0;owned\x07\x1b[2J", reference),
        )

    result = replayer.run()

    assert result.code == ExitCode.PENDING
    summary, refused = result.out.splitlines()
    assert summary == (
        "replayed 1 spend: 1 charged (5 tokens), 0 failed, 0 stale, 0 held, 0 young, 1 refused"
    )
    assert refused.startswith(
        f"  refused: dub\\x1b]0;owned\\x07\\x1b[2J x240, reference {reference}, tampered: "
    )
    assert "\x1b" not in result.out + result.err  # the terminal never gets the escapes
    assert "hint: a refused entry was changed by someone without the key" in result.err
    assert replayer.charged() == [going]
    [report] = replayer.run("--json").json_lines()
    [shown] = report["refused"]
    assert (shown["reference"], shown["units"], shown["kind"]) == (reference, "240", "tampered")
    assert report["left_pending"] == 1


def test_entries_of_amaimedia_0_1_are_sent_only_with_adopt_unauthenticated(
    replayer: Replayer,
) -> None:
    scope = hashlib.sha256(f"{replayer.base_url.rstrip('/')}\n{replayer.key}".encode())
    created = (datetime.now(timezone.utc) - timedelta(hours=1)).isoformat()
    with contextlib.closing(sqlite3.connect(replayer.journal)) as db, db:
        db.execute(LAYOUT_1)
        db.execute("PRAGMA user_version = 1")
        db.execute(
            "INSERT INTO spends (scope, tool, units, reference, created_at) "
            "VALUES (?, 'dub', '2', 'job-01', ?)",
            (scope.hexdigest()[:32], created),
        )

    refused = replayer.run()

    assert refused.code == ExitCode.PENDING
    assert "  refused: dub x2, reference job-01, legacy: " in refused.out
    assert "replay with --adopt-unauthenticated" in refused.err
    assert replayer.charged() == []

    adopted = replayer.run("--adopt-unauthenticated")

    assert adopted.code == ExitCode.OK, adopted.err
    assert adopted.out.startswith("replayed 1 spend: 1 charged (80 tokens)")
    assert replayer.charged() == ["job-01"]
    assert replayer.run().code == ExitCode.OK  # adopted: nothing left
