"""The PostgreSQL spend journal: one table, shared by every worker of a fleet.

Entries live in `amaimedia_spends`, created on first use (with `amaimedia_schema`, which
records the layout's version) in one transaction under an advisory lock, so that workers
starting at once take turns. Writes that must survive a crash, the pending entry, commit
durably on connections of a small per-process pool; the outcome of a spend (done, or a
failed attempt) commits with `synchronous_commit = off`, since a lost outcome only leads
to a replay that the API answers without charging again.

While a worker sends a spend it holds a claim on the entry: a session-level advisory lock
taken on one connection per process, the claims session. Another worker skips a claimed
entry. PostgreSQL drops a session's locks when its connection ends, so the entries of a
worker that died (killed, out of memory, its machine gone) can be replayed as soon as the
server notices, with no lease to wait out.

The connection string's password never leaves this module: `location` shows the URL
without it, errors are worded without it, and the frames that held it are cut out of the
tracebacks of the failures this module raises.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Final, cast

from amaimedia._exceptions import APIError, SpendJournalError
from amaimedia._logging import logger
from amaimedia._tracebacks import forget_frames_holding
from amaimedia._types import Units

from ._protocol import EntryId, JournalEntry, PendingSpend

if TYPE_CHECKING:
    import psycopg

__all__ = ["PostgresSpendJournal"]

SCHEMA_VERSION: Final = 1
# Advisory locks: entry claims use the two-key form under this namespace ("amai"); the
# schema lock uses the one-key form, a separate key space.
_NAMESPACE: Final = 0x616D6169
_SCHEMA_LOCK: Final = 0x616D61696D656469
# Connections kept open per process for durable writes and reads, beyond the claims one.
_MAX_IDLE: Final = 8
# How long a connection attempt may take when the URL does not say (connect_timeout).
_CONNECT_TIMEOUT_S: Final = 5
# Done entries are kept for a while as an audit trail, then pruned when a journal opens.
_KEEP_DONE: Final = timedelta(days=7)

_CREATE = (
    """
    CREATE TABLE IF NOT EXISTS amaimedia_schema (
        name TEXT PRIMARY KEY,
        version INTEGER NOT NULL
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
        UNIQUE (scope, tool, reference)
    )
    """,
    """
    CREATE INDEX IF NOT EXISTS amaimedia_spends_pending
        ON amaimedia_spends (scope, id) WHERE state = 'pending'
    """,
)

_ADD = """
INSERT INTO amaimedia_spends (scope, tool, units, reference) VALUES (%s, %s, %s, %s)
ON CONFLICT (scope, tool, reference) DO UPDATE SET
    units = excluded.units, state = 'pending', done_at = NULL, charged = NULL,
    attempts = 0, last_error = NULL, error_code = NULL
RETURNING id
"""
_PENDING = """
SELECT id, tool, units, reference, created_at, attempts, last_error, error_code
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
    built before `fork()` is safe to use in the children.

    Args:
        conninfo: A `postgresql://` URL or a libpq `key=value` string. Its password is
            kept out of every repr, log line and error. `connect_timeout` defaults to 5 s.

    Raises:
        ImportError: psycopg is not installed.
        SpendJournalError: The database cannot be reached, or holds a journal written by a
            newer SDK.
    """

    def __init__(self, conninfo: str) -> None:
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
            raise SpendJournalError(
                "cannot parse the connection string of a PostgreSQL spend journal (it is not "
                "shown: it may hold a password); pass a postgresql:// URL or key=value pairs"
            )
        self._secrets = tuple(
            secret
            for secret in (*secrets, os.environ.get("PGPASSWORD"))
            if isinstance(secret, str) and secret
        )
        params.setdefault("connect_timeout", _CONNECT_TIMEOUT_S)
        params.setdefault("application_name", "amaimedia")
        self._params = params
        self.location = _location(params)
        self._lock = threading.Lock()
        self._pid = -1
        self._idle: list[psycopg.Connection[Any]] = []
        self._claims: _Claims | None = None
        with self._connection("open") as db, db.transaction():
            _prepare(db)

    def __repr__(self) -> str:
        return f"PostgresSpendJournal({self.location!r})"

    def __reduce__(self) -> str | tuple[object, ...]:
        # A pickle would carry the password to wherever it goes.
        raise TypeError("a PostgreSQL spend journal cannot be pickled; open it in each process")

    # -- connections -----------------------------------------------------------------

    def _connect(self) -> psycopg.Connection[Any]:
        connection: psycopg.Connection[Any] = _psycopg().connect(**self._params, autocommit=True)
        return connection

    def _in_this_process(self) -> None:
        """Forget connections inherited across `fork()`: they are the parent's sessions.

        They are dropped, not closed: psycopg never ends a session from a process other
        than the one that opened it, so the parent's connections stay intact.
        """
        pid = os.getpid()
        if self._pid != pid:
            self._pid = pid
            self._idle = []
            self._claims = None

    @contextlib.contextmanager
    def _connection(self, what: str) -> Iterator[psycopg.Connection[Any]]:
        """A connection of the pool for one operation, put back when it went well."""
        psycopg = _psycopg()
        with self._lock:
            self._in_this_process()
            db = self._idle.pop() if self._idle else None
        try:
            if db is None:
                db = self._connect()
            yield db
        except psycopg.Error as exc:
            if db is not None:
                db.close()
            raise self._error(what, exc) from exc
        except BaseException:
            if db is not None:
                db.close()
            raise
        with self._lock:
            if self._pid == os.getpid() and len(self._idle) < _MAX_IDLE and not db.closed:
                self._idle.append(db)
                return
        db.close()

    def close(self) -> None:
        """Close this process's connections; the journal reconnects when used again.

        Claims held end with the claims session.
        """
        with self._lock:
            self._in_this_process()
            idle, self._idle = self._idle, []
            claims, self._claims = self._claims, None
        for db in idle:
            db.close()
        if claims is not None:
            claims.close()

    def _claims_session(self) -> _Claims:
        with self._lock:
            self._in_this_process()
            if self._claims is None:
                self._claims = _Claims(self._connect)
            return self._claims

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

    def _run(self, what: str, sql: str, parameters: tuple[object, ...]) -> list[tuple[Any, ...]]:
        with self._connection(what) as db:
            cursor = db.execute(sql, parameters)
            return cursor.fetchall() if cursor.description is not None else []

    def _on_claims(
        self, what: str, sql: str, parameters: tuple[object, ...]
    ) -> list[tuple[Any, ...]]:
        """Run a statement on the claims session."""
        psycopg = _psycopg()
        try:
            return self._claims_session().execute(sql, parameters)
        except psycopg.Error as exc:
            raise self._error(what, exc) from exc

    # -- the protocol ----------------------------------------------------------------

    def add(self, scope: str, tool: str, units: Units, reference: str) -> EntryId:
        """Commit a pending spend, durably, and return its entry id.

        Writing the same `(scope, tool, reference)` again makes that entry pending again,
        with the new units and a fresh history, rather than adding a second one.
        """
        rows = self._run("write", _ADD, (scope, tool, json.dumps(units), reference))
        return int(rows[0][0])

    def add_in(
        self,
        connection: psycopg.Connection[Any],
        scope: str,
        tool: str,
        units: Units,
        reference: str,
    ) -> EntryId:
        """Write a pending spend in the caller's own transaction on `connection`.

        It commits (or rolls back) with whatever else that transaction writes.
        """
        psycopg = _psycopg()
        try:
            cursor = connection.execute(_ADD, (scope, tool, json.dumps(units), reference))
            row = cursor.fetchone()
        except psycopg.Error as exc:
            raise self._error("write", exc) from exc
        assert row is not None  # RETURNING gives the row written
        return int(row[0])

    def mark_done(self, entry: EntryId, charged: int) -> None:
        """Record that the server confirmed the spend, and give back this process's claim.

        One round trip: the update, and the end of the claim if this process holds it
        (the `release` that follows then has nothing left to do).
        """
        self._settle(
            entry,
            "UPDATE amaimedia_spends SET state = 'done', charged = %s, done_at = now() "
            "WHERE id = %s",
            (charged, entry),
        )

    def mark_failed(self, entry: EntryId, error: BaseException) -> None:
        """Record a failed attempt, and give back this process's claim; it stays pending."""
        code = error.error if isinstance(error, APIError) else None
        self._settle(
            entry,
            "UPDATE amaimedia_spends SET attempts = attempts + 1, last_error = %s, "
            "error_code = %s WHERE id = %s",
            (str(error), code, entry),
        )

    def _settle(self, entry: EntryId, sql: str, parameters: tuple[object, ...]) -> None:
        psycopg = _psycopg()
        try:
            self._claims_session().settle(entry, sql, parameters)
        except psycopg.Error as exc:
            raise self._error("write", exc) from exc

    def pending(self, scope: str) -> list[JournalEntry]:
        """The pending entries of one scope, oldest first."""
        return [_entry(row) for row in self._run("read", _PENDING, (scope,))]

    def is_pending(self, entry: EntryId) -> bool:
        """Whether an entry is still pending (another worker may have settled it)."""
        rows = self._on_claims(
            "read", "SELECT state FROM amaimedia_spends WHERE id = %s", (entry,)
        )
        return bool(rows) and rows[0][0] == "pending"

    def claim(self, entry: EntryId) -> bool:
        """Take the exclusive right to send an entry; `False` if someone else holds it."""
        psycopg = _psycopg()
        try:
            return self._claims_session().acquire(entry)
        except psycopg.Error as exc:
            raise self._error("claim an entry of", exc) from exc

    def claim_pending(self, entry: EntryId) -> bool:
        """Claim an entry if it is still pending; `False` if it is taken or settled."""
        if not self.claim(entry):
            return False
        try:
            if self.is_pending(entry):
                return True
        except BaseException:
            self.release(entry)
            raise
        self.release(entry)
        return False

    def release(self, entry: EntryId) -> None:
        """Give a claim back. A claims session that was lost held nothing any more."""
        with self._lock:
            self._in_this_process()
            claims = self._claims
        if claims is not None:
            claims.release(entry)


class _Claims:
    """The claims session of one process: advisory locks, and which of them are held.

    PostgreSQL lets one session take the same advisory lock twice, so the threads of a
    process also check `held`, under a lock that serializes the session's use. When the
    session is lost (the server restarted), its locks are gone; the next use reconnects,
    and takes the claims still held by this process's threads again where it can.
    """

    def __init__(self, connect: Any) -> None:
        self._connect = connect
        self._lock = threading.Lock()
        self._held: set[EntryId] = set()
        self._db: psycopg.Connection[Any] | None = None

    def _session(self) -> psycopg.Connection[Any]:
        db = self._db
        if db is not None and not db.closed and not db.broken:
            return db
        db = self._db = cast("psycopg.Connection[Any]", self._connect())
        db.execute("SET synchronous_commit = off")
        for entry in list(self._held):
            if not _try_lock(db, entry):
                logger.warning(
                    "the claim on spend journal entry %s was lost when the database "
                    "connection ended, and another worker has taken it",
                    entry,
                )
                self._held.discard(entry)
        return db

    def execute(self, sql: str, parameters: tuple[object, ...]) -> list[tuple[Any, ...]]:
        with self._lock:
            cursor = self._session().execute(sql, parameters)
            return cursor.fetchall() if cursor.description is not None else []

    def settle(self, entry: EntryId, sql: str, parameters: tuple[object, ...]) -> None:
        """Run an update of `entry`; end its claim in the same statement if it is held."""
        with self._lock:
            db = self._session()
            if entry not in self._held:
                db.execute(sql, parameters)
                return
            self._held.discard(entry)
            db.execute(
                f"WITH settled AS ({sql} RETURNING id) SELECT pg_advisory_unlock(%s, %s)",
                (*parameters, *_lock_keys(entry)),
            )

    def acquire(self, entry: EntryId) -> bool:
        with self._lock:
            if entry in self._held or not _try_lock(self._session(), entry):
                return False
            self._held.add(entry)
            return True

    def release(self, entry: EntryId) -> None:
        psycopg = _psycopg()
        with self._lock:
            if entry not in self._held:
                return
            self._held.discard(entry)
            db = self._db
            if db is None or db.closed or db.broken:
                return  # the session ended, and its locks with it
            try:
                db.execute("SELECT pg_advisory_unlock(%s, %s)", _lock_keys(entry))
            except psycopg.Error as exc:
                # Either the session is gone (and the lock with it) or it will be closed.
                logger.debug("could not release a spend journal claim: %s", exc)
                db.close()

    def close(self) -> None:
        with self._lock:
            self._held.clear()
            if self._db is not None:
                self._db.close()
                self._db = None


def _lock_keys(entry: EntryId) -> tuple[int, int]:
    """The two 32-bit advisory lock keys of an entry, distinct for every 63-bit id."""
    low = entry & 0xFFFFFFFF
    return _NAMESPACE ^ (entry >> 32), low - (1 << 32) if low >= 1 << 31 else low


def _try_lock(db: psycopg.Connection[Any], entry: EntryId) -> bool:
    row = db.execute("SELECT pg_try_advisory_lock(%s, %s)", _lock_keys(entry)).fetchone()
    return bool(row and row[0])


def _prepare(db: psycopg.Connection[Any]) -> None:
    """Create the journal's tables unless they exist, and prune old done entries.

    Runs in one transaction under an advisory lock, so that workers opening a new journal
    at once take turns. A database whose tables exist needs no `CREATE` privilege.
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
    if version is None or row is None or not row[1]:
        for statement in _CREATE:
            db.execute(statement)
        db.execute(
            "INSERT INTO amaimedia_schema (name, version) VALUES ('spends', %s) "
            "ON CONFLICT (name) DO NOTHING",
            (SCHEMA_VERSION,),
        )
    db.execute(
        "DELETE FROM amaimedia_spends WHERE state = 'done' AND done_at < now() - %s",
        (_KEEP_DONE,),
    )


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


def _entry(row: tuple[Any, ...]) -> JournalEntry:
    entry_id, tool, units, reference, created_at, attempts, last_error, error_code = row
    assert isinstance(created_at, datetime)
    spend = PendingSpend(
        tool=str(tool),
        units=json.loads(str(units)),
        reference=str(reference),
        created_at=created_at,
        attempts=int(attempts),
        last_error=None if last_error is None else str(last_error),
        error_code=None if error_code is None else str(error_code),
    )
    return JournalEntry(id=int(entry_id), spend=spend)
