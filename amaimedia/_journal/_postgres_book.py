"""The PostgreSQL reservation book: admission shared by every worker of a fleet.

Reservations are rows of `amaimedia_reservations`, created on first use when missing (under
the journal's schema lock; a role without `CREATE` works once the table exists). The table
is an addition the journal's readers ignore, so the journal's layout version is unchanged:
a bump would make the SDKs of the same journal layout refuse the database in a rolling
upgrade, for a table they never read.

Liveness needs no lease. Each process's book keeps one connection of its own (not from the
journal's pool: a reservation lasts as long as its block, minutes of work) holding a
session advisory lock on a random 63-bit key, the `holder` of its rows. A row counts while
its holder's lock is held, as `pg_locks` shows it (for the one-key form of
`pg_advisory_lock`, `classid` is the key's high 32 bits, `objid` its low 32 bits and
`objsubid` 1). A worker killed by SIGKILL loses its connection, so its lock, so its rows
stop counting as soon as the server notices the connection is gone; they are deleted by the
next admission in their scope.

Admission is atomic per scope: one transaction takes an advisory lock derived from the
scope, then one statement deletes the dead rows, sums the live reservations and the
charges settled within the quote's window, and inserts the new row when the quote's
`balance_after` covers them. A released reservation that charged becomes a settled row
(`settled_at`, `tokens` = what was charged), counted by the quotes on their way; one that
charged nothing is deleted.

`release()` may be called on an event loop, so it never waits for the database: one
thread per book owns the connection and runs every request in order, admissions waited
for, releases not. The thread keeps this process's live reservations in memory: when the
connection is lost (the database restarted), it connects again, takes a new holder lock
and writes them again under it, at the next request or within a second while any live
reservation would otherwise go uncounted.
"""

from __future__ import annotations

import hashlib
import os
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, TypeVar

from amaimedia._admission import Decision
from amaimedia._exceptions import SpendJournalError
from amaimedia._logging import logger

from ._book_thread import BookThread

# The journal's own helpers, one package: its schema lock (the table is made under it, as
# the journal's are), its idle-connection check, its lazy import of psycopg.
from ._postgres import _SCHEMA_LOCK, _alive, _psycopg

if TYPE_CHECKING:
    import psycopg

__all__ = ["PostgresReservationBook"]

_T = TypeVar("_T")

# Settled rows are counted by a quote for its window only (seconds); they are kept this
# long, then pruned by the admissions of their scope.
_KEEP_SETTLED: Final = "5 minutes"
# How often the book's thread checks, while it holds live reservations and has nothing to
# do, that its connection still holds its lock: after a database restart, the rows are
# written again within about this long, not at this process's next admission only.
_WATCH_S: Final = 1.0

_CREATE = (
    """
    CREATE TABLE IF NOT EXISTS amaimedia_reservations (
        id BIGSERIAL PRIMARY KEY,
        scope TEXT NOT NULL,
        tokens BIGINT NOT NULL,
        holder BIGINT NOT NULL,
        created_at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
        settled_at TIMESTAMPTZ
    )
    """,
    "CREATE INDEX IF NOT EXISTS amaimedia_reservations_scope ON amaimedia_reservations (scope)",
)
# The holders whose lock is held now, in this database (advisory locks are per database).
_LIVE = """
live AS (
    SELECT (classid::bigint << 32) | objid::bigint AS holder FROM pg_locks
    WHERE locktype = 'advisory' AND granted AND objsubid = 1
        AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
)
"""
# After the scope's lock: the statement's snapshot is taken after every earlier admission
# of the scope committed. Its parts all see that snapshot (the DELETE's effect is not
# visible to the sums), hence the liveness test in the sums too.
_ADMIT = f"""
WITH {_LIVE},
gone AS (
    DELETE FROM amaimedia_reservations
    WHERE scope = %(scope)s AND (
        (settled_at IS NULL AND holder NOT IN (SELECT holder FROM live))
        OR settled_at < clock_timestamp() - interval '{_KEEP_SETTLED}'
    )
),
book AS (
    SELECT
        COALESCE(SUM(tokens) FILTER (
            WHERE settled_at IS NULL AND holder IN (SELECT holder FROM live)), 0) AS held,
        COUNT(*) FILTER (
            WHERE settled_at IS NULL AND holder IN (SELECT holder FROM live)) AS blocks,
        COALESCE(SUM(tokens) FILTER (
            WHERE settled_at > clock_timestamp() - %(window)s * interval '1 second'), 0)
            AS recent
    FROM amaimedia_reservations WHERE scope = %(scope)s
),
added AS (
    INSERT INTO amaimedia_reservations (scope, tokens, holder)
    SELECT %(scope)s, %(cost)s, %(holder)s FROM book
    WHERE %(balance_after)s - (held + recent) >= 0
    RETURNING id
)
SELECT held + recent, blocks, (SELECT id FROM added) FROM book
"""
_RESERVED = f"""
WITH {_LIVE}
SELECT COALESCE(SUM(tokens), 0) FROM amaimedia_reservations
WHERE scope = %s AND settled_at IS NULL AND holder IN (SELECT holder FROM live)
"""
# A row written again after a reconnection keeps its id; another process may have
# deleted it meanwhile (its holder was dead), or not yet.
_REWRITE = """
INSERT INTO amaimedia_reservations (id, scope, tokens, holder) VALUES (%s, %s, %s, %s)
ON CONFLICT (id) DO UPDATE SET holder = excluded.holder, settled_at = NULL
"""
_SETTLE = (
    "UPDATE amaimedia_reservations SET settled_at = clock_timestamp(), tokens = %s WHERE id = %s"
)
_DELETE = "DELETE FROM amaimedia_reservations WHERE id = %s"


def scope_lock(scope: str) -> int:
    """The advisory lock key of a scope's admissions: 64 bits of a digest, signed."""
    digest = hashlib.sha256(b"amaimedia reservations\0" + scope.encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


@dataclass(frozen=True, slots=True)
class _Held:
    """One live reservation of this process: its row, and what to write again."""

    id: int
    scope: str
    tokens: int


class PostgresReservationBook:
    """A `SharedBook` in the journal's database; see the module's docstring.

    Made by `PostgresSpendJournal.reservation_book()`, one per journal and process.

    Args:
        connect: Opens a new connection (autocommit) to the journal's database.
        error: Words a failure as a `SpendJournalError`, without the password.
        location: The database, without its password, for the repr.
    """

    def __init__(
        self,
        connect: Callable[[], psycopg.Connection[Any]],
        error: Callable[[str, BaseException], SpendJournalError],
        location: str,
    ) -> None:
        self.location = location
        self.pid = os.getpid()
        # The journal lives while its book is used: `connect` and `error` are its bound
        # methods, held here (a cycle through the journal's books, collected with it); its
        # thread's worker holds them weakly only, as a running thread is never collected.
        self._journal_functions = (connect, error)
        self._worker = _Worker(connect, error)
        self._thread = self._worker.thread
        weakref.finalize(self, self._thread.stop)

    def __repr__(self) -> str:
        return f"PostgresReservationBook({self.location!r})"

    def admit(self, scope: str, cost: int, balance_after: int, window: float) -> Decision:
        """Admit or refuse a block, atomically for every worker; see `SharedBook.admit`.

        Raises:
            SpendJournalError: The database cannot be reached or written.
        """
        return self._thread.ask(self._worker.admit, scope, cost, balance_after, window)

    def release(self, reservation: object, charged: int | None) -> None:
        """End a reservation, in the book's thread: never blocks, never raises."""
        if isinstance(reservation, _Held):
            self._thread.tell(self._worker.release, reservation, charged)

    def reserved(self, scope: str) -> int:
        """The tokens reserved in `scope` by every live worker.

        Raises:
            SpendJournalError: The database cannot be reached or read.
        """
        return self._thread.ask(self._worker.reserved, scope)

    def close(self) -> None:
        """End the book's connection and thread; this process's reservations end with it.

        The book opens them again if used after.
        """
        self._thread.ask(self._worker.disconnect)


class _Worker:
    """What the book's thread owns: its connection and holder lock, its live reservations.

    It holds no reference to its book nor its journal (only their functions), so that a
    journal no longer used is collected, and its book's thread stopped.
    """

    def __init__(
        self,
        connect: Callable[[], psycopg.Connection[Any]],
        error: Callable[[str, BaseException], SpendJournalError],
    ) -> None:
        # Weakly: the journal holds the book, and the thread would hold the journal.
        self._connect_to = weakref.WeakMethod(connect)
        self._error_of = weakref.WeakMethod(error)
        self.thread = BookThread(
            "amaimedia-reservations",
            on_stop=self._close,
            on_idle=self._watch,
            # While live reservations would go uncounted if the connection was lost.
            idle_after=lambda: _WATCH_S if self._live else None,
        )
        self._db: psycopg.Connection[Any] | None = None
        self._holder = 0
        self._live: dict[int, _Held] = {}
        self._table_checked = False

    def _connect(self) -> psycopg.Connection[Any]:
        connect = self._connect_to()
        if connect is None:
            raise SpendJournalError("the spend journal of this reservation book was closed")
        return connect()

    def _error(self, what: str, exc: BaseException) -> SpendJournalError:
        error = self._error_of()
        if error is None:  # pragma: no cover - its journal is gone: nothing is shown
            return SpendJournalError(f"cannot {what} the spend journal")
        return error(what, exc)

    def _watch(self) -> None:
        """Connect again if the connection was lost while live reservations need it."""
        if self._db is not None and _alive(self._db):
            return
        try:
            self._connection()
        except SpendJournalError as exc:
            logger.debug("the reservation book cannot reach its database yet: %s", exc)

    def _connection(self) -> psycopg.Connection[Any]:
        """The book's connection, holding its holder lock; (re)made when lost.

        Raises:
            SpendJournalError: The database cannot be reached.
        """
        db = self._db
        if db is not None and _alive(db):
            return db
        self._close()
        psycopg = _psycopg()
        try:
            db = self._connect()
        except psycopg.Error as exc:
            raise self._error("reach", exc) from exc
        try:
            if not self._table_checked:
                _create_table(db)
                self._table_checked = True
            holder = _random_bits(63)
            db.execute("SELECT pg_advisory_lock(%s)", (holder,))
            if self._live:
                _rewrite(db, holder, list(self._live.values()))
        except psycopg.Error as exc:
            db.close()
            raise self._error("write the reservations of", exc) from exc
        self._db, self._holder = db, holder
        return db

    def _close(self) -> None:
        db, self._db = self._db, None
        if db is not None:
            db.close()

    def _retrying(self, what: str, call: Callable[[psycopg.Connection[Any]], _T]) -> _T:
        """Run `call` on the connection; once more on a new one if that one was lost."""
        psycopg = _psycopg()
        for attempt in (1, 2):
            db = self._connection()
            try:
                return call(db)
            except psycopg.Error as exc:
                if not (db.broken or db.closed):
                    raise self._error(what, exc) from exc
                self._close()
                if attempt == 2:
                    raise self._error(what, exc) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    def admit(self, scope: str, cost: int, balance_after: int, window: float) -> Decision:
        def run(db: psycopg.Connection[Any]) -> Decision:
            parameters = {
                "scope": scope,
                "cost": cost,
                "holder": self._holder,
                "balance_after": balance_after,
                "window": window,
            }
            with db.transaction():
                db.execute("SELECT pg_advisory_xact_lock(%s)", (scope_lock(scope),))
                row = db.execute(_ADMIT, parameters).fetchone()
            assert row is not None  # one row, from the aggregate
            reserved, blocks, added = int(row[0]), int(row[1]), row[2]
            if added is None:
                return Decision(False, reserved, blocks)
            held = _Held(int(added), scope, cost)
            self._live[held.id] = held
            return Decision(True, reserved, blocks, held)

        return self._retrying("write the reservations of", run)

    def release(self, held: _Held, charged: int | None) -> None:
        if self._live.pop(held.id, None) is None:
            return
        db = self._db
        if db is None or not _alive(db):
            return  # its holder's lock is gone: the row counts no more
        if charged:
            db.execute(_SETTLE, (charged, held.id))
        else:
            db.execute(_DELETE, (held.id,))

    def reserved(self, scope: str) -> int:
        def run(db: psycopg.Connection[Any]) -> int:
            row = db.execute(_RESERVED, (scope,)).fetchone()
            return 0 if row is None else int(row[0])

        return self._retrying("read the reservations of", run)

    def disconnect(self) -> None:
        self._live.clear()
        self._close()


def _create_table(db: psycopg.Connection[Any]) -> None:
    """Create the table unless it exists, under the journal's schema lock.

    `CREATE ... IF NOT EXISTS` needs the `CREATE` privilege even when the table exists, so
    it runs only when the table is missing.
    """
    with db.transaction():
        db.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
        row = db.execute("SELECT to_regclass('amaimedia_reservations') IS NOT NULL").fetchone()
        if row is None or not row[0]:
            for statement in _CREATE:
                db.execute(statement)


def _rewrite(db: psycopg.Connection[Any], holder: int, live: list[_Held]) -> None:
    """Write this process's live reservations again, under its new holder."""
    with db.transaction():
        for scope in sorted({held.scope for held in live}):  # sorted: no deadlock
            db.execute("SELECT pg_advisory_xact_lock(%s)", (scope_lock(scope),))
        for held in live:
            db.execute(_REWRITE, (held.id, held.scope, held.tokens, holder))


def _random_bits(bits: int) -> int:
    # os.urandom, not `secrets`: a script's own secrets.py, first on sys.path, shadows it.
    return int.from_bytes(os.urandom(8), "big") >> (64 - bits)
