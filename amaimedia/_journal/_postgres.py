"""The PostgreSQL spend journal: one table, shared by every worker of a fleet.

Entries live in `amaimedia_spends`, created on first use (with `amaimedia_schema`, which
records the layout's version) in one transaction under an advisory lock, so that workers
starting at once take turns.

While a worker sends a spend it holds a claim on the entry: a session-level advisory lock
on the entry's id, held by one of the process's connections. Another worker skips a
claimed entry. PostgreSQL drops a session's locks when its connection ends, so the entries
of a worker that died (killed, out of memory, its machine gone) can be replayed as soon as
the server notices, with no lease to wait out.

A metered block costs two round trips: one statement writes the pending entry and takes
its claim (the claim exists before the entry is visible to anyone, so no replay can slip
in between), and commits durably; one records the outcome with `synchronous_commit =
off`, then ends the claim, in that order (a replay that takes the claim next sees the
outcome). A lost outcome only leads to a replay, which the API answers without charging
again.

The connection string's password never leaves this module: `location` shows the URL
without it, errors are worded without it, and the frames that held it are cut out of the
tracebacks of the failures this module raises.

Layout 2 (amaimedia 0.2) gives each row its authentication code (`mac`, computed by the
clients: `_integrity.py`) and the journal its random salt (`amaimedia_schema.salt`). A
layout 1 journal is upgraded in place when it is opened, by a role that owns its tables;
the rows 0.1 wrote keep their old scope and no code, and are reported, never sent, until
a client adopts them explicitly.
"""

from __future__ import annotations

import contextlib
import os
import select
import threading
import weakref
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Final

from amaimedia._exceptions import APIError, SpendJournalError
from amaimedia._logging import logger
from amaimedia._tracebacks import forget_frames_holding
from amaimedia._types import Units

from ._integrity import encode_units, new_salt
from ._protocol import EntryId, StoredEntry, read_entry

if TYPE_CHECKING:
    import psycopg

    from ._postgres_book import PostgresReservationBook

__all__ = ["PostgresSpendJournal"]

SCHEMA_VERSION: Final = 2
# Advisory locks: entry claims use the two-key form under this namespace ("amai"); the
# schema lock uses the one-key form, a separate key space.
_NAMESPACE: Final = 0x616D6169
_SCHEMA_LOCK: Final = 0x616D61696D656469
# Connections a journal opens per process, unless told otherwise.
_MAX_CONNECTIONS: Final = 4
# How long a connection attempt may take when the URL does not say (connect_timeout).
_CONNECT_TIMEOUT_S: Final = 5
# Done entries are kept for a while as an audit trail, then pruned when a journal opens.
_KEEP_DONE: Final = timedelta(days=7)

_CREATE = (
    """
    CREATE TABLE IF NOT EXISTS amaimedia_schema (
        name TEXT PRIMARY KEY,
        version INTEGER NOT NULL,
        salt TEXT
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS amaimedia_spends (
        id BIGSERIAL PRIMARY KEY,
        scope TEXT NOT NULL,
        tool TEXT NOT NULL,
        units TEXT NOT NULL,
        reference TEXT NOT NULL,
        created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
        attempts INTEGER NOT NULL DEFAULT 0,
        last_error TEXT,
        error_code TEXT,
        state TEXT NOT NULL DEFAULT 'pending',
        charged BIGINT,
        done_at TIMESTAMPTZ,
        mac TEXT,
        UNIQUE (scope, tool, reference)
    )
    """,
    """
    CREATE INDEX IF NOT EXISTS amaimedia_spends_pending
        ON amaimedia_spends (scope, id) WHERE state = 'pending'
    """,
)

# Everything a rewritten entry gets afresh: its units, time and code, and its history.
_UNPARSABLE: Final = (
    "cannot parse the connection string of a PostgreSQL spend journal (it is not shown: it "
    "may hold a password); pass a postgresql:// URL or key=value pairs"
)
_ADD = """
INSERT INTO amaimedia_spends (scope, tool, units, reference, created_at, mac)
VALUES (%s, %s, %s, %s, COALESCE(%s::timestamptz, now()), %s)
ON CONFLICT (scope, tool, reference) DO UPDATE SET
    units = excluded.units, created_at = excluded.created_at, mac = excluded.mac,
    state = 'pending', done_at = NULL, charged = NULL,
    attempts = 0, last_error = NULL, error_code = NULL
RETURNING id
"""
# The entry's claim is taken in the statement that writes it, before it is committed.
_ADD_AND_CLAIM = f"""
WITH added AS ({_ADD})
SELECT id, pg_try_advisory_lock(
    (%s # (id >> 32))::int,
    (((id & 4294967295) + 2147483648) %% 4294967296 - 2147483648)::int
) FROM added
"""
_TRY_LOCK = "SELECT pg_try_advisory_lock(%s, %s)"
_UNLOCK = "SELECT pg_advisory_unlock(%s, %s)"
_STATE = "SELECT state FROM amaimedia_spends WHERE id = %s FOR UPDATE"
# The time as text, decoded row by row: a value psycopg cannot load (`infinity`) would
# otherwise fail the whole listing.
_PENDING = """
SELECT id, tool, units, reference,
    to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"+00:00"'),
    attempts, last_error, error_code, mac
FROM amaimedia_spends WHERE scope = %s AND state = 'pending' ORDER BY id
"""


def _psycopg() -> Any:
    try:
        import psycopg
    except ImportError as exc:
        raise ImportError(
            "a PostgreSQL spend journal needs psycopg 3: pip install 'amaimedia[postgres]'"
        ) from exc
    return psycopg


class PostgresSpendJournal:
    """A PostgreSQL table of spends, shared by every worker that opens the same database.

    The PostgreSQL implementation of the `SpendJournal` protocol. The table is created on
    first use when it does not exist (the role needs `CREATE` on its schema then, and only
    then). Each process keeps its own connections, opened when first needed: a journal
    built before `fork()` is safe to use in the children. Thread-safe.

    Args:
        conninfo: A `postgresql://` URL or a libpq `key=value` string. Its password is
            kept out of every repr, log line and error. `connect_timeout` defaults to 5 s.
        max_connections: How many connections the journal opens in each process, at
            most. Each metered block in flight needs one for a moment at its start and
            one at its end; claims stay on the connection that took them.

    Raises:
        ImportError: psycopg is not installed.
        ValueError: `max_connections` is less than 1.
        SpendJournalError: The database cannot be reached, or holds a journal written by a
            newer SDK.
    """

    def __init__(self, conninfo: str, *, max_connections: int = _MAX_CONNECTIONS) -> None:
        if isinstance(max_connections, bool) or not isinstance(max_connections, int):
            raise TypeError(
                f"max_connections must be an int, got {type(max_connections).__name__}"
            )
        if max_connections < 1:
            raise ValueError(f"max_connections must be 1 or more, got {max_connections}")
        if not isinstance(conninfo, str):
            raise TypeError(
                f"a PostgreSQL journal needs a connection string, got {type(conninfo).__name__}"
            )
        pg = _psycopg()
        try:
            params = pg.conninfo.conninfo_to_dict(conninfo)
        except pg.Error:
            params = None
        secrets = (conninfo, None if params is None else params.get("password"))
        # From here on no frame of this constructor holds the connection string.
        del conninfo
        if params is None:
            # Before the string is understood, nothing of it is safe to show.
            del secrets
            raise SpendJournalError(_UNPARSABLE)
        self._secrets = tuple(
            secret
            for secret in (*secrets, os.environ.get("PGPASSWORD"))
            if isinstance(secret, str) and secret
        )
        params.setdefault("connect_timeout", _CONNECT_TIMEOUT_S)
        params.setdefault("application_name", "amaimedia")
        self._params = params
        del secrets, params
        self.location = _location(self._params)
        self._max_connections = max_connections
        self._pools: dict[int, _Sessions] = {}
        self._pools_lock = threading.Lock()
        self._books: dict[int, PostgresReservationBook] = {}
        with self._session("open") as session, session.db.transaction():
            self._salt = _prepare(session.db, self.location)

    def __repr__(self) -> str:
        # Safe on a journal whose constructor failed too (a traceback shows it).
        return f"PostgresSpendJournal({getattr(self, 'location', '(not opened)')!r})"

    def __reduce__(self) -> str | tuple[object, ...]:
        # A pickle would carry the password to wherever it goes.
        raise TypeError("a PostgreSQL spend journal cannot be pickled; open it in each process")

    # -- connections -----------------------------------------------------------------

    def _sessions(self) -> _Sessions:
        """This process's connections.

        A child of `fork()` starts with none. The parent's are dropped there, not
        closed: psycopg never ends a session from a process other than the one that
        opened it, so the parent's connections, and the claims they hold, stay intact.
        """
        pid = os.getpid()
        with self._pools_lock:
            sessions = self._pools.get(pid)
            if sessions is None:
                _inherited.extend(self._pools.values())
                self._pools = {pid: (sessions := _Sessions(self._connect, self._max_connections))}
            return sessions

    def _connect(self) -> psycopg.Connection[Any]:
        connection: psycopg.Connection[Any] = _psycopg().connect(**self._params, autocommit=True)
        return connection

    @contextlib.contextmanager
    def _session(self, what: str, entry: EntryId | None = None) -> Iterator[_Session]:
        """A connection for one operation: the one holding `entry`'s claim, or any free one.

        A connection that failed is closed and forgotten, with the claims it held.
        """
        psycopg = _psycopg()
        sessions = self._sessions()
        try:
            with sessions.use(entry) as session:
                yield session
        except psycopg.Error as exc:
            raise self._error(what, exc) from exc

    def reservation_book(self) -> PostgresReservationBook:
        """This process's view of the fleet's reservation book, in the journal's database.

        One per journal and process, with a connection of its own (`_postgres_book.py`).
        A child of `fork()` gets a new one; the parent's is kept there, unused.
        """
        from ._postgres_book import PostgresReservationBook

        pid = os.getpid()
        with self._pools_lock:
            book = self._books.get(pid)
            if book is None:
                _inherited.extend(self._books.values())
                book = PostgresReservationBook(self._connect, self._error, self.location)
                self._books = {pid: book}
            return book

    @property
    def salt(self) -> str:
        """The journal's random salt, made with its tables."""
        return self._salt

    def close(self) -> None:
        """Close this process's connections; the journal reconnects when used again.

        The claims they held end with them, and so do the reservations of its book.
        """
        self._sessions().close()
        book = self._books.get(os.getpid())
        if book is not None:
            book.close()

    # -- errors ----------------------------------------------------------------------

    def _error(self, what: str, exc: BaseException) -> SpendJournalError:
        error = SpendJournalError(
            f"cannot {what} the spend journal {self.location}: {self._scrub(str(exc))}"
        )
        error.__cause__ = exc
        forget_frames_holding(error, self._secrets, "the database password")
        return error

    def _scrub(self, message: str) -> str:
        for secret in self._secrets:
            message = message.replace(secret, "***")
        return message.strip()

    # -- the protocol ----------------------------------------------------------------

    def add(
        self,
        scope: str,
        tool: str,
        units: Units,
        reference: str,
        *,
        created_at: datetime | None = None,
        mac: str | None = None,
    ) -> EntryId:
        """Commit a pending spend, durably, and return its entry id.

        Writing the same `(scope, tool, reference)` again makes that entry pending again,
        with the new units, time and code and a fresh history, rather than adding a
        second one.
        """
        values = _values(scope, tool, units, reference, created_at, mac)
        with self._session("write") as session:
            row = session.db.execute(_ADD, values).fetchone()
        assert row is not None  # RETURNING gives the row written
        return int(row[0])

    def add_and_claim(
        self,
        scope: str,
        tool: str,
        units: Units,
        reference: str,
        *,
        created_at: datetime | None = None,
        mac: str | None = None,
    ) -> tuple[EntryId, bool]:
        """Commit a pending spend and claim it, in one statement; see `SpendJournal`."""
        values = _values(scope, tool, units, reference, created_at, mac)
        with self._session("write") as session:
            row = session.db.execute(_ADD_AND_CLAIM, (*values, _NAMESPACE)).fetchone()
            assert row is not None  # RETURNING gives the row written
            entry, claimed = int(row[0]), bool(row[1])
            if claimed and not session.keep(entry):
                # Another thread of this process holds it; the lock taken was a second one.
                session.db.execute(_UNLOCK, _lock_keys(entry))
                claimed = False
        return entry, claimed

    @staticmethod
    def accepts(connection: object, *, is_async: bool) -> bool:
        """Whether `add_in` (or `add_in_async`) can write on `connection`."""
        psycopg = _psycopg()
        kind = psycopg.AsyncConnection if is_async else psycopg.Connection
        return isinstance(connection, kind)

    def add_in(
        self,
        connection: psycopg.Connection[Any],
        scope: str,
        tool: str,
        units: Units,
        reference: str,
        *,
        created_at: datetime | None = None,
        mac: str | None = None,
    ) -> EntryId:
        """Write a pending spend in the caller's own transaction on `connection`.

        It commits (or rolls back) with whatever else that transaction writes.
        """
        psycopg = _psycopg()
        values = _values(scope, tool, units, reference, created_at, mac)
        try:
            row = connection.execute(_ADD, values).fetchone()
        except psycopg.Error as exc:
            raise self._error("write", exc) from exc
        assert row is not None  # RETURNING gives the row written
        return int(row[0])

    async def add_in_async(
        self,
        connection: psycopg.AsyncConnection[Any],
        scope: str,
        tool: str,
        units: Units,
        reference: str,
        *,
        created_at: datetime | None = None,
        mac: str | None = None,
    ) -> EntryId:
        """`add_in` on an async connection: the write awaits, the event loop runs on."""
        psycopg = _psycopg()
        values = _values(scope, tool, units, reference, created_at, mac)
        try:
            cursor = await connection.execute(_ADD, values)
            row = await cursor.fetchone()
        except psycopg.Error as exc:
            raise self._error("write", exc) from exc
        assert row is not None  # RETURNING gives the row written
        return int(row[0])

    def mark_done(self, entry: EntryId, charged: int, *, mac: str | None = None) -> None:
        """Record that the server confirmed the spend, and end this process's claim.

        The pending row's code is replaced by the done row's (`None` leaves none): a row
        flipped back to pending by hand matches no code. The `release` that follows has
        nothing left to do.
        """
        self._settle(
            entry, f"state = 'done', charged = {int(charged)}, done_at = now(), mac = {{}}", mac
        )

    def mark_failed(self, entry: EntryId, error: BaseException) -> None:
        """Record a failed attempt, and end this process's claim; the entry stays pending."""
        code = error.error if isinstance(error, APIError) else None
        self._settle(
            entry, "attempts = attempts + 1, last_error = {}, error_code = {}", str(error), code
        )

    def _settle(self, entry: EntryId, change: str, *texts: str | None) -> None:
        """Update an entry without waiting for the disk, then end its claim if held here.

        One round trip: a transaction whose commit does not wait for the WAL flush, then
        the unlock, after the commit. `change` is SQL made of numbers only, with a `{}`
        for each of `texts`, which are quoted by the driver.
        """
        with self._session("write", entry) as session:
            if texts:
                sql = _psycopg().sql
                literals = [sql.Literal(text).as_string(session.db) for text in texts]
                change = change.format(*literals)
            statement = (
                "BEGIN; SET LOCAL synchronous_commit = off; "
                f"UPDATE amaimedia_spends SET {change} WHERE id = {int(entry)}; COMMIT"
            )
            held = session.lets_go(entry)
            if held:
                statement += "; SELECT pg_advisory_unlock({}, {})".format(*_lock_keys(entry))
            try:
                session.db.execute(statement.encode())
            except _psycopg().Error:
                # A connection that broke in the statement took the claim with it.
                if not (session.db.broken or session.db.closed):  # pragma: no branch
                    # The update failed on a live connection: what followed it in the
                    # string never ran. The transaction it left open is ended, and the
                    # claim, still held, is this process's again, for `release`.
                    with contextlib.suppress(_psycopg().Error):
                        session.db.execute("ROLLBACK")
                    if held:
                        session.keep(entry)
                raise

    def mark_refused(self, entry: EntryId, reason: str) -> None:
        """Record why a pending entry is not sent, as its `last_error`."""
        with self._session("write") as session:
            session.db.execute(
                "UPDATE amaimedia_spends SET last_error = %s WHERE id = %s AND state = 'pending'",
                (reason, entry),
            )

    def rescope(self, entry: EntryId, scope: str, mac: str) -> bool:
        """Move a pending entry to another scope with its code there; see `SpendJournal`."""
        errors = _psycopg().errors
        try:
            with self._session("write") as session:
                cursor = session.db.execute(
                    "UPDATE amaimedia_spends SET scope = %s, mac = %s "
                    "WHERE id = %s AND state = 'pending'",
                    (scope, mac, entry),
                )
                return cursor.rowcount == 1
        except SpendJournalError as exc:
            if isinstance(exc.__cause__, errors.UniqueViolation):
                return False  # that scope has an entry of this tool and reference
            raise

    def pending(self, scope: str) -> list[StoredEntry]:
        """The pending entries of one scope, oldest first; see `SpendJournal`."""
        with self._session("read") as session:
            rows = session.db.execute(_PENDING, (scope,)).fetchall()
        return [read_entry(row, _time) for row in rows]

    def claim(self, entry: EntryId) -> bool:
        """Take the exclusive right to send an entry; `False` if someone else holds it."""
        with self._session("claim an entry of") as session:
            return session.claim(entry)

    def claim_pending(self, entry: EntryId) -> bool:
        """Claim an entry if it is still pending; `False` if it is taken or settled.

        The state is read after the claim, with `FOR UPDATE`: an outcome being written by
        the worker that just let the entry go is waited for, never read stale.
        """
        with self._session("claim an entry of") as session:
            if not session.claim(entry):
                return False
            try:
                row = session.db.execute(_STATE, (entry,)).fetchone()
            except BaseException:
                session.let_go(entry)
                raise
            if row is not None and row[0] == "pending":
                return True
            session.let_go(entry)
            return False

    def release(self, entry: EntryId) -> None:
        """Give a claim back. A connection that was lost held nothing any more."""
        sessions = self._sessions()
        if not sessions.holds(entry):
            return
        with contextlib.suppress(SpendJournalError), self._session("release", entry) as session:
            session.let_go(entry)


class _Session:
    """One connection of a process, and the claims it holds.

    A session that is garbage collected (its journal was) closes its connection, in the
    process that opened it only.
    """

    __slots__ = ("__weakref__", "busy", "claims", "db", "sessions")

    def __init__(self, db: psycopg.Connection[Any], sessions: _Sessions) -> None:
        self.db = db
        self.sessions = sessions
        self.claims: set[EntryId] = set()
        self.busy = True
        weakref.finalize(self, _close_in, os.getpid(), db)

    def keep(self, entry: EntryId) -> bool:
        """Record a claim this connection took; `False` if another of ours holds it."""
        return self.sessions.record(entry, self)

    def claim(self, entry: EntryId) -> bool:
        """Take a claim on this connection, unless this process or another holds it."""
        if self.sessions.holds(entry):
            return False
        row = self.db.execute(_TRY_LOCK, _lock_keys(entry)).fetchone()
        if not (row and row[0]):
            return False
        if not self.keep(entry):  # pragma: no cover - another thread of ours, in between
            self.db.execute(_UNLOCK, _lock_keys(entry))
            return False
        return True

    def lets_go(self, entry: EntryId) -> bool:
        """Forget a claim about to be ended in a statement; whether this one held it."""
        return self.sessions.forget(entry, self)

    def let_go(self, entry: EntryId) -> None:
        """End a claim this connection holds."""
        if self.lets_go(entry):  # pragma: no branch - only called by the holder
            self.db.execute(_UNLOCK, _lock_keys(entry))


class _Sessions:
    """The connections of one journal in one process, at most `limit` of them.

    A claim lives on the connection that took it, so the claim's end must go through
    that same connection: `use(entry)` waits for it. Other operations take any idle
    connection, or open one while under the limit. A connection that failed is closed
    and forgotten, and its claims with it (PostgreSQL ended them with the session).
    """

    def __init__(self, connect: Any, limit: int) -> None:
        self._connect = connect
        self._limit = limit
        self._all: list[_Session] = []
        self._holders: dict[EntryId, _Session] = {}
        self._opening = 0
        self._changed = threading.Condition(threading.Lock())

    def holds(self, entry: EntryId) -> bool:
        with self._changed:
            return entry in self._holders

    def record(self, entry: EntryId, session: _Session) -> bool:
        with self._changed:
            if entry in self._holders:
                return False
            self._holders[entry] = session
            session.claims.add(entry)
            return True

    def forget(self, entry: EntryId, session: _Session) -> bool:
        with self._changed:
            if self._holders.get(entry) is not session:
                return False
            del self._holders[entry]
            session.claims.discard(entry)
            return True

    @contextlib.contextmanager
    def use(self, entry: EntryId | None) -> Iterator[_Session]:
        session = self._take(entry)
        try:
            yield session
        except BaseException:
            if session.db.broken or session.db.closed:
                self._drop(session)
            else:
                self._put_back(session)
            raise
        self._put_back(session)

    def _take(self, entry: EntryId | None) -> _Session:
        while True:
            session = self._take_open(entry)
            if session is None:
                break
            if _alive(session.db):
                return session
            # It died while idle (the database restarted): its claims died with it.
            self._drop(session)
        return self._open()

    def _take_open(self, entry: EntryId | None) -> _Session | None:
        """An open connection marked busy, or `None` when a new one may be opened."""
        with self._changed:
            while True:
                holder = None if entry is None else self._holders.get(entry)
                if holder is not None:
                    if not holder.busy:  # pragma: no branch - busy: another thread, a moment
                        holder.busy = True
                        return holder
                else:
                    for session in self._all:
                        if not session.busy:
                            session.busy = True
                            return session
                    if len(self._all) + self._opening < self._limit:
                        self._opening += 1
                        return None
                self._changed.wait()

    def _open(self) -> _Session:
        try:
            db = self._connect()
        finally:
            with self._changed:
                self._opening -= 1
                self._changed.notify_all()
        session = _Session(db, self)
        with self._changed:
            self._all.append(session)
        return session

    def _put_back(self, session: _Session) -> None:
        with self._changed:
            session.busy = False
            self._changed.notify_all()

    def _drop(self, session: _Session) -> None:
        with self._changed:
            if session in self._all:  # pragma: no branch - not when close() took it first
                self._all.remove(session)
            for entry in session.claims:
                self._holders.pop(entry, None)
            session.claims.clear()
            self._changed.notify_all()
        session.db.close()

    def close(self) -> None:
        with self._changed:
            sessions, self._all = self._all, []
            self._holders.clear()
            self._changed.notify_all()
        for session in sessions:
            if session.claims and not (session.db.broken or session.db.closed):
                # Ended now, not when the server gets round to ending the session.
                with contextlib.suppress(_psycopg().Error):
                    session.db.execute("SELECT pg_advisory_unlock_all()")
            session.claims.clear()
            session.db.close()


# The connections of journals a forked child inherited: the parent's sessions and books,
# kept unused (never closed, nor collected) for as long as the child lives.
_inherited: list[_Sessions | PostgresReservationBook] = []


def _close_in(pid: int, db: psycopg.Connection[Any]) -> None:
    if os.getpid() == pid:  # pragma: no branch - another pid: in a forked child
        db.close()


def _alive(db: psycopg.Connection[Any]) -> bool:
    """Whether an idle connection still has its session, found without a round trip.

    An idle connection has nothing to read: the journal listens for nothing, and every
    answer is read with its statement. A socket that can be read all the same holds the
    server's goodbye (it was restarted, or ended the session) or the end of the stream.
    """
    if db.closed or db.broken:  # pragma: no cover - such a connection is dropped after use
        return False
    try:
        readable, _, _ = select.select([db.fileno()], [], [], 0)
    except (OSError, ValueError):  # pragma: no cover - a descriptor closed under us
        return False
    return not readable


def _lock_keys(entry: EntryId) -> tuple[int, int]:
    """The two 32-bit advisory lock keys of an entry, distinct for every 63-bit id."""
    low = entry & 0xFFFFFFFF
    return _NAMESPACE ^ (entry >> 32), low - (1 << 32) if low >= 1 << 31 else low


def _prepare(db: psycopg.Connection[Any], location: str) -> str:
    """Create the journal's tables unless they exist, upgrade older ones; the salt.

    Runs in one transaction under an advisory lock, so that workers opening a new journal
    at once take turns. A database whose tables exist at this layout needs no `CREATE`
    privilege, nor ownership of the tables; upgrading from layout 1 needs ownership.
    """
    db.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
    row = db.execute(
        "SELECT to_regclass('amaimedia_schema') IS NOT NULL, "
        "to_regclass('amaimedia_spends') IS NOT NULL"
    ).fetchone()
    version = None
    if row is not None and row[0]:
        found = db.execute("SELECT version FROM amaimedia_schema WHERE name = 'spends'").fetchone()
        version = None if found is None else int(found[0])
    if version is not None and version > SCHEMA_VERSION:
        raise SpendJournalError(
            f"the database holds a spend journal of layout version {version}, written by a "
            f"newer amaimedia (this one reads version {SCHEMA_VERSION}): upgrade amaimedia"
        )
    has_spends = row is not None and bool(row[1])
    if version == 1:
        _upgrade_from_1(db, location, has_spends=has_spends)
    if version is None or not has_spends:
        for statement in _CREATE:
            db.execute(statement)
        db.execute(
            "INSERT INTO amaimedia_schema (name, version, salt) VALUES ('spends', %s, %s) "
            "ON CONFLICT (name) DO NOTHING",
            (SCHEMA_VERSION, new_salt()),
        )
    db.execute(
        "DELETE FROM amaimedia_spends WHERE state = 'done' AND done_at < now() - %s",
        (_KEEP_DONE,),
    )
    salt = db.execute("SELECT salt FROM amaimedia_schema WHERE name = 'spends'").fetchone()
    if salt is None or not salt[0]:
        raise SpendJournalError(
            "the spend journal is damaged: amaimedia_schema has lost the journal's salt"
        )
    return str(salt[0])


def _upgrade_from_1(db: psycopg.Connection[Any], location: str, *, has_spends: bool) -> None:
    """Layout 1 to 2: a code column (empty for the old rows), and the journal's salt.

    The rows 0.1 wrote carry no code and keep their old scope: nothing here can tell
    whether someone changed them, so they are kept, reported and never sent until a
    client adopts them explicitly (`replay_pending(adopt_unauthenticated=True)`).
    """
    errors = _psycopg().errors
    try:
        db.execute("ALTER TABLE amaimedia_schema ADD COLUMN IF NOT EXISTS salt TEXT")
        if has_spends:
            db.execute("ALTER TABLE amaimedia_spends ADD COLUMN IF NOT EXISTS mac TEXT")
    except errors.InsufficientPrivilege as exc:
        raise SpendJournalError(
            f"the spend journal {location} is of layout 1 (amaimedia 0.1) and must be "
            "upgraded to layout 2 by a role that owns its tables: open it once as that role "
            f"({str(exc).strip()})"
        ) from None
    db.execute(
        "UPDATE amaimedia_schema SET version = %s, salt = %s WHERE name = 'spends'",
        (SCHEMA_VERSION, new_salt()),
    )
    pending = 0
    if has_spends:
        found = db.execute(
            "SELECT count(*) FROM amaimedia_spends WHERE state = 'pending'"
        ).fetchone()
        pending = 0 if found is None else int(found[0])
    log = logger.warning if pending else logger.info
    log(
        "upgraded the spend journal %s to layout 2, whose rows are authenticated with the "
        "API key; %d pending entr%s written by amaimedia 0.1 carry no authentication: they are "
        "kept, and not sent until adopted (replay_pending(adopt_unauthenticated=True), or "
        "amaimedia replay --adopt-unauthenticated)",
        location,
        pending,
        "y" if pending == 1 else "ies",
    )


def describe(conninfo: str) -> str:
    """Where a journal at `conninfo` is, without its password, and without connecting.

    Raises:
        ImportError: psycopg is not installed.
        SpendJournalError: The string cannot be parsed (it is not shown).
    """
    pg = _psycopg()
    try:
        params = pg.conninfo.conninfo_to_dict(conninfo)
    except pg.Error:
        params = None
    del conninfo
    if params is None:
        raise SpendJournalError(_UNPARSABLE)
    return _location(params)


def _location(params: dict[str, Any]) -> str:
    """The database as a URL without its password: safe for reprs and logs."""
    user = params.get("user")
    host = params.get("host") or "localhost"
    if "/" in str(host):
        host = f"[{host}]"  # a Unix socket directory
    port = params.get("port")
    database = params.get("dbname") or ""
    where = f"{host}:{port}" if port else str(host)
    who = f"{user}@" if user else ""
    return f"postgresql://{who}{where}/{database}"


def _values(
    scope: str,
    tool: str,
    units: Units,
    reference: str,
    created_at: datetime | None,
    mac: str | None,
) -> tuple[object, ...]:
    return (scope, tool, encode_units(units), reference, created_at, mac)


def _time(value: object) -> datetime:
    """A time as `_PENDING` gives it: ISO text in UTC, `NULL` for an infinite one."""
    if not isinstance(value, str):
        raise ValueError("an infinite time")
    return datetime.fromisoformat(value)
