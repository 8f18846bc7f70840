"""`amaimedia replay`: send again what the spend journal holds as pending, once or on a watch.

A round is one `replay_pending()` of the public client, between two reads of
`pending_spends()`: the one before tells the tool and units of each charge, the one after
tells the error each failed spend got in this round (the report's entries are as they
were before it). Nothing else of the client is used, so the command replays exactly as a
program would.

`--previous-key-stdin` reads earlier keys of the account from stdin (after the key, with
`--api-key-stdin`), one per line, and passes them to every round's `replay_pending()` as
`previous_keys`: their entries are adopted and sent with the current key. They are never
printed, and never go anywhere but there.

`--watch` runs rounds until SIGINT or SIGTERM. A signal during the wait between rounds
ends it at once; a signal during a round lets the round finish (each spend is bounded by
`--timeout` and `--max-retries`), and a second one abandons it: the spend in flight stays
pending, and its reference keeps a later replay from charging it twice.
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import json
import signal
import sys
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from time import sleep
from types import FrameType
from typing import TYPE_CHECKING, Any, Final

from amaimedia import (
    AmaiClient,
    AmaiError,
    Charge,
    PendingSpend,
    RefusedSpend,
    ReplayReport,
    SpendJournalError,
)

from ._api import hint_refused_key, read_api_key, report_error
from ._console import Console, fail
from ._exit_codes import ExitCode
from ._parser import DEFAULT_INTERVAL

if TYPE_CHECKING:
    from amaimedia import PostgresSpendJournal

__all__ = ["replay"]

# The stable error string of a 401: the key itself was refused, and nothing can go through.
_KEY_REFUSED: Final = "auth_required"
_POSTGRES_HINT: Final = (
    "a postgresql:// journal needs psycopg 3: pip install 'amaimedia[postgres]'"
)
_STALE_HINT: Final = (
    "stale spends are not sent: the API may have forgotten their references and would "
    "charge them again. Settle them by hand, or, if the API still knows them, replay them "
    "with a larger --max-age (or --max-age none)"
)
_LEGACY_HINT: Final = (
    "entries written by amaimedia 0.1 carry no authentication code and are not sent: once "
    "you know nobody else could write the journal, replay with --adopt-unauthenticated"
)
_TAMPERED_HINT: Final = (
    "a refused entry was changed by someone without the key: find out who can write the "
    "journal before settling it by hand"
)
_STOP_SIGNALS: Final = (signal.SIGINT, signal.SIGTERM)
# The URLs a client's spend_journal opens as a PostgreSQL journal; anything else is a file.
_POSTGRES_SCHEMES: Final = ("postgresql://", "postgres://")


def replay(args: argparse.Namespace) -> int:
    """Run `amaimedia replay` as the arguments say; return its exit status."""
    problem = _argument_problem(args)
    if problem is not None:
        fail(problem)
        return ExitCode.USAGE
    key = read_api_key(args)
    if key is None:
        return ExitCode.AUTH
    previous: list[str] = []
    if args.previous_key_stdin:
        previous = _read_previous_keys()
        if not previous:
            fail(
                "--previous-key-stdin read no key: give the earlier key(s) on stdin, one per line"
            )
            return ExitCode.USAGE
    session = _Session(Console(key), args, key, previous)
    console = session.console
    with console.key_kept_out_of_logs(), console.sdk_warnings():
        try:
            if args.watch:
                return _Watch(session).run()
            return session.once()
        except KeyboardInterrupt:
            console.err(
                "interrupted; a spend that was in flight stays pending, and a later replay "
                "sends it with its reference, which never charges twice"
            )
            return ExitCode.INTERRUPTED


def _read_previous_keys() -> list[str]:
    """The earlier keys, one per line of what is left of stdin; blank lines are skipped.

    At a terminal, one key is asked for, without echo.
    """
    if sys.stdin.isatty():
        typed = getpass.getpass("previous API key: ").strip()
        return [typed] if typed else []
    return [line.strip() for line in sys.stdin.read().splitlines() if line.strip()]


def _argument_problem(args: argparse.Namespace) -> str | None:
    """What is wrong with arguments that are fine one by one, or `None`."""
    if not args.journal.strip():
        return "--journal needs the path of an SQLite file, or a postgresql:// URL"
    if args.interval is not None and not args.watch:
        return "--interval needs --watch: without it, replay runs one round and exits"
    if args.max_age is not None and args.older_than > args.max_age:
        return (
            f"--older-than ({args.older_than:g} s) exceeds --max-age ({args.max_age:g} s): "
            "no entry could be sent"
        )
    return None


class _Fatal(Exception):
    """A failure that ends the command, even a watch; it was printed already."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


class _Session:
    """What the rounds of one run share: the console, the arguments, the hints given."""

    def __init__(
        self, console: Console, args: argparse.Namespace, key: str, previous: list[str]
    ) -> None:
        self.console = console
        self.args = args
        self._key = key
        self._previous = previous
        self._stale_hinted = False
        self._refused_hinted: set[str] = set()

    def once(self) -> int:
        """One round, as from cron: its exit status."""
        try:
            with contextlib.ExitStack() as stack:
                return self.round(self.open(stack), 1)
        except SpendJournalError as exc:
            self.console.err(str(exc))
            return ExitCode.JOURNAL
        except _Fatal as exc:
            return exc.code

    def open(self, stack: contextlib.ExitStack) -> AmaiClient:
        """The client on the journal, both closed by `stack`.

        Raises:
            SpendJournalError: The journal cannot be opened (perhaps for now only).
            _Fatal: Anything else that stops the client from being built; printed.
        """
        args = self.args
        try:
            journal = self._journal(stack)
            # Without --api-key-stdin the client reads AMAI_API_KEY itself, so that its
            # messages about a malformed key name the variable.
            client = AmaiClient(
                self._key if args.api_key_stdin else None,
                base_url=args.base_url,
                timeout=args.timeout,
                max_retries=args.max_retries,
                spend_journal=journal,
            )
        except SpendJournalError:
            raise
        except ImportError as exc:
            # A postgresql:// URL without psycopg: installing it is the only way out.
            self.console.err(str(exc))
            if "amaimedia[postgres]" not in str(exc):
                self.console.err(_POSTGRES_HINT, label="hint")
            raise _Fatal(ExitCode.JOURNAL) from None
        except ValueError as exc:
            # The SDK's check of a setting (an http:// URL off the loopback, a malformed
            # key), before anything was sent.
            self.console.err(str(exc))
            raise _Fatal(ExitCode.USAGE) from None
        except AmaiError as exc:
            raise _Fatal(report_error(self.console, args, exc)) from None
        return stack.enter_context(client)

    def _journal(self, stack: contextlib.ExitStack) -> str | PostgresSpendJournal:
        """What the client gets as its `spend_journal`.

        A PostgreSQL journal is opened here, so that its connections are closed when the
        run ends (a client leaves a journal it opened from a URL open); an SQLite file
        holds nothing that needs closing, and the client opens it from the path.
        """
        target: str = self.args.journal
        if not target.startswith(_POSTGRES_SCHEMES):
            return target
        from amaimedia import PostgresSpendJournal

        journal = PostgresSpendJournal(target)
        stack.callback(journal.close)
        return journal

    def round(self, client: AmaiClient, number: int) -> int:
        """Replay once and print what happened: `OK`, `PENDING`, or `AUTH`.

        Raises:
            SpendJournalError: The journal cannot be read.
            _Fatal: The age rules are impossible (printed).
        """
        args = self.args
        before = client.pending_spends()
        try:
            report = client.replay_pending(
                max_age=args.max_age,
                older_than=args.older_than,
                previous_keys=self._previous,
                adopt_unauthenticated=args.adopt_unauthenticated,
            )
        except ValueError as exc:
            self.console.err(str(exc))
            raise _Fatal(ExitCode.USAGE) from None
        except SpendJournalError:
            raise
        except AmaiError as exc:
            return report_error(self.console, args, exc)
        failed = _as_now(report.failed, client) if report.failed else []
        outcome = _Outcome(number, client.spend_journal or "", report, before, failed)
        if args.json:
            self.console.out(json.dumps(outcome.as_json(), separators=(",", ":")))
        else:
            self._show(outcome)
        refused = [spend for spend in failed if spend.error_code == _KEY_REFUSED]
        if refused:
            self.console.err(refused[0].last_error or "401 auth_required: the key was refused")
            hint_refused_key(self.console, args)
            return ExitCode.AUTH
        return ExitCode.PENDING if report.left_pending else ExitCode.OK

    def _show(self, outcome: _Outcome) -> None:
        report = outcome.report
        sent = len(report) + len(outcome.failed)
        prefix = f"round {outcome.number}: " if self.args.watch else ""
        refused = f", {len(report.refused)} refused" if report.refused else ""
        self.console.out(
            f"{prefix}replayed {sent} spend{'' if sent == 1 else 's'}: "
            f"{len(report)} charged ({outcome.tokens} tokens), {len(outcome.failed)} failed, "
            f"{len(report.stale)} stale, {len(report.held)} held, {len(report.young)} young"
            f"{refused}"
        )
        for spend in outcome.failed:
            attempts = f"{spend.attempts} attempt{'' if spend.attempts == 1 else 's'}"
            self.console.out(
                f"  failed: {spend.tool} x{spend.units}, reference {spend.reference}, "
                f"{attempts}, last error: {spend.last_error or 'none recorded'}"
            )
        for spend in report.stale:
            age = _age(outcome.at - spend.created_at)
            self.console.out(
                f"  stale: {spend.tool} x{spend.units}, reference {spend.reference}, "
                f"{age} old, not sent"
            )
        for refusal in report.refused:
            # What the row holds is whatever someone wrote: shown escaped, on one line.
            self.console.out(
                f"  refused: {_escaped(refusal.tool)} x{_escaped(refusal.units)}, reference "
                f"{_escaped(refusal.reference)}, {refusal.kind}: {refusal.reason}"
            )
        if report.stale and not self._stale_hinted:
            self._stale_hinted = True
            self.console.err(_STALE_HINT, label="hint")
        for kind, hint in (("legacy", _LEGACY_HINT), ("tampered", _TAMPERED_HINT)):
            seen = any(refusal.kind == kind for refusal in report.refused)
            if seen and kind not in self._refused_hinted:
                self._refused_hinted.add(kind)
                self.console.err(hint, label="hint")


def _as_now(spends: list[PendingSpend], client: AmaiClient) -> list[PendingSpend]:
    """`spends` as the journal holds them now: with the error this round gave them.

    A journal that cannot be read again leaves them as they were; the round happened.
    """
    try:
        now = {(spend.tool, spend.reference): spend for spend in client.pending_spends()}
    except SpendJournalError:
        return spends
    return [now.get((spend.tool, spend.reference), spend) for spend in spends]


class _Outcome:
    """One round: its number and time, its report, and the entries seen around it."""

    def __init__(
        self,
        number: int,
        journal: str,
        report: ReplayReport,
        before: list[PendingSpend],
        failed: list[PendingSpend],
    ) -> None:
        self.number = number
        self.at = datetime.now(timezone.utc)
        self.journal = journal
        self.report = report
        self.failed = failed
        self.tokens = sum(charge.charged for charge in report)
        # A charge names only its reference: the entry seen before the round tells the rest.
        self._sent: dict[str, PendingSpend | None] = {}
        for spend in before:
            self._sent[spend.reference] = None if spend.reference in self._sent else spend

    def as_json(self) -> dict[str, Any]:
        report = self.report
        return {
            "round": self.number,
            "at": self.at.isoformat(timespec="seconds"),
            "journal": self.journal,
            "charged": [self._charge_json(charge) for charge in report],
            "charged_tokens": self.tokens,
            "failed": [_spend_json(spend) for spend in self.failed],
            "stale": [_spend_json(spend) for spend in report.stale],
            "held": [_spend_json(spend) for spend in report.held],
            "young": [_spend_json(spend) for spend in report.young],
            "refused": [_refused_json(refusal) for refusal in report.refused],
            "left_pending": report.left_pending,
        }

    def _charge_json(self, charge: Charge) -> dict[str, Any]:
        spend = self._sent.get(charge.reference)
        return {
            "tool": None if spend is None else spend.tool,
            "units": None if spend is None else spend.units,
            "reference": charge.reference,
            "charged": charge.charged,
            "balance_after": charge.balance_after,
        }


def _spend_json(spend: PendingSpend) -> dict[str, Any]:
    return {
        "tool": spend.tool,
        "units": spend.units,
        "reference": spend.reference,
        "created_at": spend.created_at.isoformat(),
        "attempts": spend.attempts,
        "last_error": spend.last_error,
        "error_code": spend.error_code,
    }


def _refused_json(refusal: RefusedSpend) -> dict[str, Any]:
    return {
        "tool": refusal.tool,
        "units": refusal.units,
        "reference": refusal.reference,
        "created_at": None if refusal.created_at is None else refusal.created_at.isoformat(),
        "kind": refusal.kind,
        "reason": refusal.reason,
    }


def _escaped(text: str, limit: int = 80) -> str:
    """Untrusted text for one line of a terminal: control characters escaped, cut short."""
    shown = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text[:limit])
    return shown if len(text) <= limit else f"{shown}…"


def _age(age: timedelta) -> str:
    seconds = age.total_seconds()
    for unit, length in (("days", 86400), ("hours", 3600), ("minutes", 60)):
        if seconds >= 2 * length:
            return f"{seconds // length:.0f} {unit}"
    return f"{seconds:.0f} seconds"


class _Watch:
    """`--watch`: rounds every `--interval` seconds until SIGINT or SIGTERM."""

    def __init__(self, session: _Session) -> None:
        self._session = session
        self._console = session.console
        interval = session.args.interval
        self._interval: float = DEFAULT_INTERVAL if interval is None else interval
        self._signals = _StopSignals()
        self._client: AmaiClient | None = None

    def run(self) -> int:
        """Watch until a signal (`OK`), a refused key (`AUTH`) or a fatal setting."""
        rounds = 0
        with self._signals.caught(), contextlib.ExitStack() as stack:
            while not self._signals.stopping:
                rounds += 1
                with self._signals.in_round():
                    code = self._round(rounds, stack)
                if code is not None:
                    return code
                self._signals.wait(self._interval)
        self._console.note(f"replay stopped after {rounds} round{'' if rounds == 1 else 's'}")
        return ExitCode.OK

    def _round(self, number: int, stack: contextlib.ExitStack) -> int | None:
        """One round; `None` to go on, or the exit status that ends the watch."""
        try:
            if self._client is None:
                self._client = self._session.open(stack)
                self._console.note(
                    f"replaying {self._client.spend_journal} every {self._interval:g} s; "
                    "stop with SIGINT or SIGTERM"
                )
            if self._signals.stopping:
                return None  # asked to stop while the journal was opening: send nothing
            code = self._session.round(self._client, number)
        except SpendJournalError as exc:
            # A database restarting, a disk briefly gone: the next round may well work.
            self._console.err(f"round {number}: {exc}")
            return None
        except _Fatal as exc:
            return exc.code
        return code if code in (ExitCode.AUTH, ExitCode.USAGE) else None


class _Woken(BaseException):
    """Raised by the signal handler into the wait between rounds, to end it at once."""


class _StopSignals:
    """SIGINT and SIGTERM during a watch: the first stops it, a second abandons a round.

    Handlers are installed only from the main thread (the only one Python runs them in)
    and the previous ones are put back afterwards. The handler sets flags; it raises only
    into the wait (`_Woken`, which the wait catches) or, on a second signal, into a round
    (`KeyboardInterrupt`, as Ctrl-C does anywhere).
    """

    def __init__(self) -> None:
        self.stopping = False
        self._waiting = False
        self._in_round = False

    @contextlib.contextmanager
    def caught(self) -> Iterator[None]:
        """Catch the signals for as long as this lasts."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {signum: signal.signal(signum, self._handle) for signum in _STOP_SIGNALS}
        try:
            yield
        finally:
            for signum, handler in previous.items():
                if handler is not None:  # None: set outside Python, cannot be put back
                    signal.signal(signum, handler)

    @contextlib.contextmanager
    def in_round(self) -> Iterator[None]:
        """Mark a round: a second signal during it abandons it."""
        self._in_round = True
        try:
            yield
        finally:
            self._in_round = False

    def wait(self, seconds: float) -> None:
        """Sleep `seconds`, unless a signal asked to stop, before or during the sleep."""
        try:
            try:
                self._waiting = True
                if not self.stopping:
                    sleep(seconds)
            finally:
                self._waiting = False
        except _Woken:
            pass

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self._waiting:
            self._waiting = False
            self.stopping = True
            raise _Woken
        if self.stopping and self._in_round:
            raise KeyboardInterrupt
        self.stopping = True
