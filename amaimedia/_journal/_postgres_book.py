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
`objsubid` 1). A worker killed by SIGKILL loses its connection, so its lock. A holder whose
lock is gone may be dead, or may only have lost its connection (a database restart, a
session ended by an administrator or a proxy) and be about to write its rows again under a
new lock: so the next admission in the scope does not delete its rows at once but marks
them settled a few seconds ahead (`_LOST_HOLDER_GRACE_S`), which counts them for every
quote until then, and they end after that unless written again. A killed worker's
reservation stops counting a few seconds after the server noticed; one that only lost its
connection keeps counting, as its book's thread writes its rows again within about a
second of the database answering again.

Admission is atomic per scope, and one round trip: a function of the SDK's, made with the
table, takes an advisory lock derived from the scope, marks the rows of lost holders,
deletes the settled rows past keeping, sums the live reservations and the charges settled
within the quote's window (the lost holders' rows among them), and inserts the new row
when the quote's `balance_after` covers them. A released reservation that charged becomes
a settled row (`settled_at`, `tokens` = what was charged), counted by the quotes on their
way; one that charged nothing is deleted.

The book's commits do not wait for the disk (`synchronous_commit = off`): a reservation
means something only while its holder's connection lives, and a server that crashes ends
every connection; the live reservations are written again from memory on the next one.
What such a crash can lose is a release of its last fraction of a second: a charge then
stops counting before its window ends, so a quote sent before it landed may admit a block
the balance no longer covers (a restart of the database has the same effect).

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
import time
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
# How long a release waits for an admission to carry it, at most (seconds): one round trip
# for both. Until it is sent, its reservation counts in full, as it did before.
_RELEASE_WAIT_S: Final = 0.02
# How often the book's thread checks, while it holds live reservations and has nothing to
# do, that its connection still holds its lock: after a database restart, the rows are
# written again within about this long, not at this process's next admission only.
_WATCH_S: Final = 1.0
# How long a reservation whose holder's lock is gone still counts (seconds). Its holder may
# be dead, or only have lost its connection (a database restart, a dropped session): then it
# writes the row again under a new lock within about `_WATCH_S`, and until it has, the
# others must not admit against the tokens it still needs. A killed worker's reservation
# therefore ends this long after an admission first finds it dead.
_LOST_HOLDER_GRACE_S: Final = 3

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
    # A scope's live rows (settled_at NULL, last in the index) and its settled rows by time:
    # what an admission sums, and what it prunes, are ranges of this index.
    """
    CREATE INDEX IF NOT EXISTS amaimedia_reservations_scope_settled
    ON amaimedia_reservations (scope, settled_at)
    """,
)
# Releases, as two arrays: the rows, and what each charged. A row that charged becomes a
# settled one, counted by the quotes of its window (from now: a release sent late counts
# later, never less); one that charged nothing is deleted. Sent with the next admission,
# or alone (`_RELEASE_ALONE`).
_RELEASE = """
WITH released AS (SELECT * FROM unnest({released}, {charged}) AS r(id, charged)),
gone AS (
    DELETE FROM amaimedia_reservations r USING released
    WHERE r.id = released.id AND released.charged = 0
)
UPDATE amaimedia_reservations r SET settled_at = clock_timestamp(), tokens = released.charged
FROM released WHERE r.id = released.id AND released.charged > 0
"""
_RELEASE_ALONE = _RELEASE.format(released="%s::bigint[]", charged="%s::bigint[]")
# Admission, one round trip: a function, whose every statement takes a snapshot of its
# own (VOLATILE), so that the statements after the scope's lock see every earlier
# admission of the scope committed. Called alone (autocommit), it is its own transaction:
# the lock ends with it. Its name carries its version: a later SDK that words it otherwise
# makes another. `now()` is the transaction's start, before the lock was waited for: the
# window it opens reaches back at least as far as asked, never less.
# v2: a row whose holder is gone is not deleted at once but counted `_LOST_HOLDER_GRACE_S`
# more (as if charged then), since its holder may be writing it again; v1 deleted it.
_ADMIT_FUNCTION: Final = "amaimedia_admit_v2"
_ADMIT_SIGNATURE: Final = (
    f"{_ADMIT_FUNCTION}(bigint, text, bigint, bigint, bigint, float8, bigint[], bigint[])"
)
_CREATE_ADMIT = f"""
CREATE OR REPLACE FUNCTION {_ADMIT_FUNCTION}(
    p_lock bigint, p_scope text, p_cost bigint, p_holder bigint, p_balance_after bigint,
    p_window float8, p_released bigint[], p_charged bigint[],
    OUT reserved bigint, OUT blocks bigint, OUT added bigint)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    v_live bigint[];
    v_held bigint;
    v_recent bigint;
BEGIN
    IF cardinality(p_released) > 0 THEN
        {_RELEASE.format(released="p_released", charged="p_charged")};
    END IF;
    PERFORM pg_advisory_xact_lock(p_lock);
    SELECT COALESCE(array_agg((l.classid::bigint << 32) | l.objid::bigint), '{{}}')
    INTO v_live FROM pg_locks l
    WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
        AND l.database = (SELECT d.oid FROM pg_database d WHERE d.datname = current_database());
    UPDATE amaimedia_reservations r
    SET settled_at = now() + interval '{_LOST_HOLDER_GRACE_S} seconds'
    WHERE r.scope = p_scope AND r.settled_at IS NULL AND NOT r.holder = ANY (v_live);
    DELETE FROM amaimedia_reservations r
    WHERE r.scope = p_scope AND r.settled_at < now() - interval '{_KEEP_SETTLED}';
    SELECT COALESCE(SUM(r.tokens), 0), COUNT(*) INTO v_held, blocks
    FROM amaimedia_reservations r
    WHERE r.scope = p_scope AND r.settled_at IS NULL AND r.holder = ANY (v_live);
    SELECT COALESCE(SUM(r.tokens), 0) INTO v_recent
    FROM amaimedia_reservations r
    WHERE r.scope = p_scope AND r.settled_at > now() - p_window * interval '1 second';
    reserved := v_held + v_recent;
    IF p_balance_after - reserved >= 0 THEN
        INSERT INTO amaimedia_reservations (scope, tokens, holder)
        VALUES (p_scope, p_cost, p_holder) RETURNING id INTO added;
    END IF;
END
$$
"""
_ADMIT = (
    f"SELECT reserved, blocks, added FROM {_ADMIT_FUNCTION}"
    "(%s, %s, %s, %s, %s, %s, %s::bigint[], %s::bigint[])"
)
# A book closed: its live rows go, then its holder's lock (one statement, one round trip).
_END_HOLDER = """
WITH gone AS (DELETE FROM amaimedia_reservations WHERE holder = %s AND settled_at IS NULL)
SELECT pg_advisory_unlock(%s)
"""
# A row written again after a reconnection keeps its id; another process may have
# deleted it meanwhile (its holder was dead), or not yet.
_REWRITE = """
INSERT INTO amaimedia_reservations (id, scope, tokens, holder) VALUES (%s, %s, %s, %s)
ON CONFLICT (id) DO UPDATE SET holder = excluded.holder, settled_at = NULL
"""


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
        asked = time.monotonic()  # the time in the queue widens the window
        return self._thread.ask(self._worker.admit, scope, cost, balance_after, window, asked)

    def release(self, reservation: object, charged: int | None) -> None:
        """End a reservation, in the book's thread: never blocks, never raises."""
        if isinstance(reservation, _Held):
            self._thread.tell(self._worker.release, reservation, charged)

    def holds(self, reservation: object) -> bool:
        """Whether a reservation of this book still counts; see `SharedBook.holds`."""
        return isinstance(reservation, _Held) and reservation.id in self._worker.live

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
            on_stop=self.disconnect,
            on_idle=self._idle,
            idle_after=self._idle_after,
        )
        self._db: psycopg.Connection[Any] | None = None
        self._holder = 0
        # Written by the book's thread only; `holds()` reads it from any thread.
        self.live: dict[int, _Held] = {}
        # Released rows not yet sent, and what each charged (0: nothing): the next
        # admission carries them, or they go alone after `_RELEASE_WAIT_S`.
        self._released: list[tuple[int, int]] = []
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

    def _idle_after(self) -> float | None:
        if self._released:
            return _RELEASE_WAIT_S
        # While live reservations would go uncounted if the connection was lost.
        return _WATCH_S if self.live else None

    def _idle(self) -> None:
        if self._released:
            self._send_releases()
        elif self.live:
            self._watch()

    def _send_releases(self) -> None:
        """Send the releases no admission carried; a failure ends them with the connection."""
        db = self._db
        released, self._released = self._released, []
        if not released or db is None or not _alive(db):
            return  # its holder's lock is gone: the rows count no more
        try:
            db.execute(_RELEASE_ALONE, _arrays(released))
        except _psycopg().Error as exc:
            logger.debug("the reservation book could not end a reservation: %s", exc)
            if not (db.broken or db.closed):
                self._close()  # its rows stop counting with its holder's lock

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
            db.execute("SET synchronous_commit TO off")  # see the module's docstring
            # The rows released but not sent were the lost connection's: they count no more.
            self._released.clear()
            holder = _random_bits(63)
            db.execute("SELECT pg_advisory_lock(%s)", (holder,))
            if self.live:
                _rewrite(db, holder, list(self.live.values()))
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

    def admit(
        self, scope: str, cost: int, balance_after: int, window: float, asked: float
    ) -> Decision:
        def run(db: psycopg.Connection[Any]) -> Decision:
            released, charged = _arrays(self._released)
            parameters = (
                scope_lock(scope),
                scope,
                cost,
                self._holder,
                balance_after,
                # The function's now() is its start, before it waits for the scope's lock.
                window + (time.monotonic() - asked),
                released,
                charged,
            )
            row = db.execute(_ADMIT, parameters).fetchone()
            assert row is not None  # one row: the function's
            self._released.clear()  # sent, and committed with the admission
            reserved, blocks, added = int(row[0]), int(row[1]), row[2]
            if added is None:
                return Decision(False, reserved, blocks)
            held = _Held(int(added), scope, cost)
            self.live[held.id] = held
            return Decision(True, reserved, blocks, held)

        return self._retrying("write the reservations of", run)

    def release(self, held: _Held, charged: int | None) -> None:
        if self.live.pop(held.id, None) is not None:
            self._released.append((held.id, charged or 0))

    def reserved(self, scope: str) -> int:
        self._send_releases()  # this process's releases show at once

        def run(db: psycopg.Connection[Any]) -> int:
            # What an admission would count, by the admission itself: a balance below zero
            # admits nothing, and an empty window counts no charge but the lost holders'.
            row = db.execute(_ADMIT, (scope_lock(scope), scope, 0, 0, -1, 0.0, [], [])).fetchone()
            assert row is not None  # one row: the function's
            return int(row[0])

        return self._retrying("read the reservations of", run)

    def disconnect(self) -> None:
        """End the connection; the releases not yet sent go first, the charges among them.

        This process's live rows are deleted and the holder's lock released before the
        connection closes: they stop counting when this returns, not when the server has
        noticed the connection is gone (and a lost holder's grace has passed).
        """
        self._send_releases()
        self.live.clear()
        db = self._db
        if db is not None and _alive(db):
            try:
                db.execute(_END_HOLDER, (self._holder, self._holder))
            except _psycopg().Error as exc:  # the closing ends it all the same
                logger.debug("the reservation book could not release its holder: %s", exc)
        self._close()


def _create_table(db: psycopg.Connection[Any]) -> None:
    """Create the table and the admission function unless they exist, under the schema lock.

    `CREATE ... IF NOT EXISTS` needs the `CREATE` privilege even when the table exists, so
    it runs only when the table (or the function) is missing.
    """
    with db.transaction():
        db.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
        row = db.execute(
            "SELECT to_regclass('amaimedia_reservations') IS NOT NULL,"
            f" to_regprocedure('{_ADMIT_SIGNATURE}') IS NOT NULL"
        ).fetchone()
        assert row is not None  # one row, always
        table, function = row
        if not table:
            for statement in _CREATE:
                db.execute(statement)
        if not function:
            db.execute(_CREATE_ADMIT)


def _rewrite(db: psycopg.Connection[Any], holder: int, live: list[_Held]) -> None:
    """Write this process's live reservations again, under its new holder."""
    with db.transaction():
        for scope in sorted({held.scope for held in live}):  # sorted: no deadlock
            db.execute("SELECT pg_advisory_xact_lock(%s)", (scope_lock(scope),))
        for held in live:
            db.execute(_REWRITE, (held.id, held.scope, held.tokens, holder))


def _arrays(released: list[tuple[int, int]]) -> tuple[list[int], list[int]]:
    """The released rows and what each charged, as the two arrays `_RELEASE` takes."""
    return [row for row, _ in released], [charged for _, charged in released]


def _random_bits(bits: int) -> int:
    # os.urandom, not `secrets`: a script's own secrets.py, first on sys.path, shadows it.
    return int.from_bytes(os.urandom(8), "big") >> (64 - bits)
