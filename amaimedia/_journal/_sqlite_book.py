"""The SQLite reservation book: admission shared by every process using one journal file.

Reservations are rows of a `reservations` table in the journal's file, made on first use.
The journal's readers ignore the table, so the file's layout version is unchanged (an SDK
of the same layout opens a file that has it).

A row counts while its holder lives. A holder is a random key, not a process id: each
process's book holds an exclusive lock on the byte at that offset of the journal's claims
file (`<journal>-claims`, where the entry claims are locked too, at their ids, far below),
for as long as the process lives. The operating system drops the locks of a process that
dies, however it dies, so its rows stop counting at once; a process id could be reused by
an unrelated process, and means nothing across the PID namespaces of containers sharing
the file, where a lock still does. Another holder is alive when its byte cannot be
locked; the rows of dead holders are deleted by the next admission in their scope.

Admission is atomic with `BEGIN IMMEDIATE`: the file's write lock is held from reading
what is reserved to inserting the new row. Charges settled (`settled_at`, in the shared
wall clock of the machine) count for the quote's window.

SQLite waits up to its busy timeout for the write lock, and a release may be asked for on
an event loop: so the book has one thread of its own, with its own connection, that runs
every request in order; admissions are waited for, releases are not.

On Windows the claims file is not locked (claims coordinate the threads of one process
there), so every other process's holder looks dead: the book is then this process's only.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final, TypeVar

from amaimedia._admission import Decision
from amaimedia._exceptions import SpendJournalError
from amaimedia._logging import logger

from ._book_thread import BookThread

# The journal's own helpers, one package: its busy timeout and its claims file, whose
# descriptor must be the process's only one (closing any other would drop its locks).
from ._sqlite import _BUSY_TIMEOUT_MS, _Claims, _claims_for

__all__ = ["SQLiteReservationBook"]

_T = TypeVar("_T")

# Holder keys are offsets in the claims file, above any entry id the journal will reach.
_HOLDERS_FROM: Final = 1 << 61
# Settled rows are counted by a quote for its window only; they are kept this long
# (seconds), then pruned by the admissions of their scope.
_KEEP_SETTLED_S: Final = 300.0

_CREATE = (
    """
    CREATE TABLE IF NOT EXISTS reservations (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        scope TEXT NOT NULL,
        tokens INTEGER NOT NULL,
        holder INTEGER NOT NULL,
        created_at REAL NOT NULL,
        settled_at REAL
    )
    """,
    # A scope's live rows (settled_at NULL, first in the index) and its settled rows by
    # time: what an admission sums, and what it prunes, are ranges of this index.
    "CREATE INDEX IF NOT EXISTS reservations_scope_settled ON reservations (scope, settled_at)",
)


@dataclass(frozen=True, slots=True)
class _Held:
    """One live reservation of this process: its row."""

    id: int
    scope: str


class SQLiteReservationBook:
    """A `SharedBook` in the journal's file; see the module's docstring.

    Made by `SQLiteSpendJournal.reservation_book()`, one per journal and process.

    Args:
        path: The journal's file.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.pid = os.getpid()
        self._state = _State(path)
        self._thread = BookThread("amaimedia-reservations", on_stop=self._state.close)
        weakref.finalize(self, self._thread.stop)

    def __repr__(self) -> str:
        return f"SQLiteReservationBook({str(self.path)!r})"

    def admit(self, scope: str, cost: int, balance_after: int, window: float) -> Decision:
        """Admit or refuse a block, atomically for every process; see `SharedBook.admit`.

        Raises:
            SpendJournalError: The file cannot be read or written.
        """
        asked = time.monotonic()  # the time in the queue widens the window
        return self._thread.ask(self._state.admit, scope, cost, balance_after, window, asked)

    def release(self, reservation: object, charged: int | None) -> None:
        """End a reservation, in the book's thread: never blocks, never raises."""
        if isinstance(reservation, _Held):
            self._thread.tell(self._state.release, reservation, charged)

    def holds(self, reservation: object) -> bool:
        """Whether a reservation of this book still counts; see `SharedBook.holds`."""
        return isinstance(reservation, _Held) and reservation.id in self._state.live

    def reserved(self, scope: str) -> int:
        """The tokens reserved in `scope` by every live process.

        Raises:
            SpendJournalError: The file cannot be read.
        """
        return self._thread.ask(self._state.reserved, scope)

    def close(self) -> None:
        """Close the book's connection; it opens again if the book is used after."""
        self._thread.ask(self._state.close)


class _State:
    """What the book's thread owns: its connection, its holder key, its live rows."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._db: sqlite3.Connection | None = None
        self._claims: _Claims | None = None
        self._holder = 0
        # Written by the book's thread only; `holds()` reads it from any thread.
        self.live: set[int] = set()

    def _connection(self) -> tuple[sqlite3.Connection, _Claims]:
        if self._db is not None and self._claims is not None:
            return self._db, self._claims
        claims = _claims_for(self._path)
        if not self._holder:
            while not claims.acquire(holder := _HOLDERS_FROM + _random_bits(60)):
                continue  # pragma: no cover - a key another process holds: 1 in 2**60
            self._holder = holder
        db = sqlite3.connect(
            self._path,
            timeout=_BUSY_TIMEOUT_MS / 1000,
            isolation_level=None,
            check_same_thread=False,  # closed by the exit hook too
        )
        try:
            # A reservation need not survive a power cut: its process does not either.
            db.execute("PRAGMA synchronous=NORMAL")
            for statement in _CREATE:
                db.execute(statement)
        except BaseException:
            db.close()
            raise
        self._db, self._claims = db, claims
        return db, claims

    def _run(
        self,
        what: str,
        transaction: bool,
        call: Callable[[sqlite3.Connection, _Claims], _T],
    ) -> _T:
        try:
            db, claims = self._connection()
            if not transaction:
                return call(db, claims)
            db.execute("BEGIN IMMEDIATE")
            try:
                result = call(db, claims)
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
            return result
        except sqlite3.Error as exc:
            self.close()
            raise SpendJournalError(
                f"cannot {what} the reservations of the spend journal {self._path}: {exc}"
            ) from exc

    def admit(
        self, scope: str, cost: int, balance_after: int, window: float, asked: float
    ) -> Decision:
        def run(db: sqlite3.Connection, claims: _Claims) -> Decision:
            now = time.time()
            # Under the file's write lock: the time waited for it, and in the queue, counts.
            window_s = window + (time.monotonic() - asked)
            self._forget_the_dead(db, claims, scope, now)
            held, blocks = db.execute(
                "SELECT COALESCE(SUM(tokens), 0), COUNT(*) FROM reservations "
                "WHERE scope = ? AND settled_at IS NULL",
                (scope,),
            ).fetchone()
            (recent,) = db.execute(
                "SELECT COALESCE(SUM(tokens), 0) FROM reservations "
                "WHERE scope = ? AND settled_at > ?",
                (scope, now - window_s),
            ).fetchone()
            reserved = int(held) + int(recent)
            if balance_after - reserved < 0:
                return Decision(False, reserved, int(blocks))
            cursor = db.execute(
                "INSERT INTO reservations (scope, tokens, holder, created_at) VALUES (?, ?, ?, ?)",
                (scope, cost, self._holder, now),
            )
            assert cursor.lastrowid is not None  # an INSERT into a rowid table
            held_row = _Held(cursor.lastrowid, scope)
            self.live.add(held_row.id)
            return Decision(True, reserved, int(blocks), held_row)

        return self._run("write", True, run)

    def _forget_the_dead(
        self, db: sqlite3.Connection, claims: _Claims, scope: str, now: float
    ) -> None:
        """Delete the scope's rows of dead holders, and its settled rows of long ago."""
        holders = db.execute(
            "SELECT DISTINCT holder FROM reservations WHERE scope = ? AND settled_at IS NULL",
            (scope,),
        ).fetchall()
        for (holder,) in holders:
            if holder == self._holder or not claims.acquire(holder):
                continue  # ours, or held by a live process
            claims.release(holder)
            db.execute("DELETE FROM reservations WHERE holder = ?", (holder,))
        db.execute(
            "DELETE FROM reservations WHERE scope = ? AND settled_at < ?",
            (scope, now - _KEEP_SETTLED_S),
        )

    def release(self, held: _Held, charged: int | None) -> None:
        if held.id not in self.live:
            return
        self.live.discard(held.id)

        def run(db: sqlite3.Connection, claims: _Claims) -> None:
            if charged:
                db.execute(
                    "UPDATE reservations SET settled_at = ?, tokens = ? WHERE id = ?",
                    (time.time(), charged, held.id),
                )
            else:
                db.execute("DELETE FROM reservations WHERE id = ?", (held.id,))

        try:
            self._run("write", False, run)
        except SpendJournalError as exc:  # it ends with this process, then
            logger.debug("the reservation book could not end a reservation: %s", exc)

    def reserved(self, scope: str) -> int:
        def run(db: sqlite3.Connection, claims: _Claims) -> int:
            self._forget_the_dead(db, claims, scope, time.time())
            (held,) = db.execute(
                "SELECT COALESCE(SUM(tokens), 0) FROM reservations "
                "WHERE scope = ? AND settled_at IS NULL",
                (scope,),
            ).fetchone()
            return int(held)

        return self._run("read", True, run)

    def close(self) -> None:
        """End this process's reservations, its holder and its connection."""
        db, self._db = self._db, None
        claims, self._claims = self._claims, None
        holder, self._holder = self._holder, 0
        self.live.clear()
        if db is not None:
            with contextlib.suppress(sqlite3.Error):  # they end with the holder anyway
                db.execute("DELETE FROM reservations WHERE holder = ?", (holder,))
            db.close()
        if claims is not None and holder:
            claims.release(holder)


def _random_bits(bits: int) -> int:
    # os.urandom, not `secrets`: a script's own secrets.py, first on sys.path, shadows it.
    return int.from_bytes(os.urandom(8), "big") >> (64 - bits)
