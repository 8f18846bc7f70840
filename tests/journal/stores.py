"""Where the journal tests keep a journal: an SQLite file, or a PostgreSQL database.

A `Store` is one journal's storage as a test sees it: what to pass as `spend_journal`, a
way to open it again (as a second client or process would), and its rows, read on a
connection of the test's own (`sqlite3`, or `psycopg`) as another process would see them.
The two stores answer alike: rows are dicts with `units` decoded from JSON and the
timestamps as aware datetimes, so that one test body checks both backends.

Tests that tamper with the storage (age an entry, drop the table, refuse updates) do it
through the store, in SQL with `?` placeholders and the table named by `store.table`.

psycopg is imported when a PostgreSQL store is used, not with this module, so that the
SQLite tests run where psycopg is not installed.
"""

from __future__ import annotations

import abc
import contextlib
import json
import sqlite3
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from amaimedia._journal._postgres import PostgresSpendJournal
from amaimedia._journal._protocol import SpendJournal
from amaimedia._journal._sqlite import SQLiteSpendJournal
from tests.journal.ledger import rows

if TYPE_CHECKING:
    import psycopg

KINDS = ["sqlite", "postgres"]

# The message a refused update fails with, in both backends.
REFUSED = "the test refuses updates"


class Store(abc.ABC):
    """One journal's storage, and how a test reads and tampers with it.

    Attributes:
        kind: `"sqlite"` or `"postgres"`.
        target: What a client takes as `spend_journal`: a path, or a URL.
        table: The table of spends.
        backend_class: The backend's class, for tests that patch one of its methods.
    """

    kind: str
    target: Path | str
    table: str
    backend_class: type[SQLiteSpendJournal] | type[PostgresSpendJournal]

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.target}>"

    @abc.abstractmethod
    def open(self) -> SpendJournal:
        """A new backend object on the same storage, as a second client would open it."""

    @abc.abstractmethod
    def fetch(self, sql: str, *parameters: object) -> list[tuple[Any, ...]]:
        """Run one statement (`?` placeholders) on a connection of our own; its rows."""

    @abc.abstractmethod
    def dump(self) -> bytes:
        """Everything the storage holds, as bytes: to search for what must not be there."""

    @abc.abstractmethod
    def refuse_updates(self) -> None:
        """Make every update of an entry fail (with `REFUSED`) until `allow_updates()`."""

    @abc.abstractmethod
    def allow_updates(self) -> None:
        """Undo `refuse_updates()`."""

    @abc.abstractmethod
    def failing_state_check(self, message: str) -> contextlib.AbstractContextManager[None]:
        """While in effect, the next read of an entry's state fails in the driver."""

    @abc.abstractmethod
    def _raw_rows(self) -> list[dict[str, Any]]:
        """The table's rows as the driver returns them, by id."""

    def rows(self) -> list[dict[str, Any]]:
        """The journal's rows, by id: units decoded, timestamps as aware datetimes."""
        return [_normalised(row) for row in self._raw_rows()]

    def entry_id(self, reference: str) -> int:
        """The id of the one entry with this reference."""
        (row,) = [row for row in self.rows() if row["reference"] == reference]
        return int(row["id"])

    def execute(self, sql: str, *parameters: object) -> None:
        """Run one statement (`?` placeholders), committed, on a connection of our own."""
        self.fetch(sql, *parameters)

    def drop_table(self) -> None:
        """Break the journal under a client's feet: every use of it fails from now on."""
        self.execute(f"DROP TABLE {self.table}")

    @abc.abstractmethod
    def close(self) -> None:
        """Let go of what the store opened; it can still be used after."""


class SQLiteStore(Store):
    """A journal file in a test's temporary directory, alone in its own directory."""

    kind = "sqlite"
    table = "spends"
    backend_class = SQLiteSpendJournal

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.path = directory / "spends.sqlite3"
        self.target = self.path

    def open(self) -> SQLiteSpendJournal:
        return SQLiteSpendJournal(self.path)

    def fetch(self, sql: str, *parameters: object) -> list[tuple[Any, ...]]:
        with contextlib.closing(sqlite3.connect(self.path)) as db, db:
            return db.execute(sql, parameters).fetchall()

    def _raw_rows(self) -> list[dict[str, Any]]:
        return rows(self.path)

    def dump(self) -> bytes:
        # The file, its write-ahead log and the claims file: whatever the journal wrote.
        return b"".join(p.read_bytes() for p in sorted(self.directory.iterdir()) if p.is_file())

    def refuse_updates(self) -> None:
        self.execute(
            f"CREATE TRIGGER refuse_updates BEFORE UPDATE ON {self.table} "
            f"BEGIN SELECT RAISE(ABORT, '{REFUSED}'); END"
        )

    def allow_updates(self) -> None:
        self.execute("DROP TRIGGER refuse_updates")

    @contextlib.contextmanager
    def failing_state_check(self, message: str) -> Iterator[None]:
        # A replay reads the file once to list the entries, then once to check each.
        real_connect = SQLiteSpendJournal._connect
        calls = {"n": 0}

        def fail_the_second(journal: SQLiteSpendJournal) -> Any:
            calls["n"] += 1
            if calls["n"] == 2:
                raise sqlite3.OperationalError(message)
            return real_connect(journal)

        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(SQLiteSpendJournal, "_connect", fail_the_second)
            yield
        assert calls["n"] >= 2, "the state of an entry was never read"

    def close(self) -> None:
        # Nothing of the store's own: the journals' connections go with the journals.
        return


class PostgresStore(Store):
    """A database of a test's own on the session's server (`tests/postgres.py`).

    Every `PostgresSpendJournal` opened while the store is in use, by the test or by its
    clients, is recorded and closed by `close()`: no connection outlives the test.
    """

    kind = "postgres"
    table = "amaimedia_spends"
    backend_class = PostgresSpendJournal

    def __init__(self, url: str, monkeypatch: pytest.MonkeyPatch) -> None:
        self.url = url
        self.target = url
        self.opened: list[PostgresSpendJournal] = []
        real_init = PostgresSpendJournal.__init__
        opened = self.opened

        def recorded(journal: PostgresSpendJournal, conninfo: str, **options: Any) -> None:
            real_init(journal, conninfo, **options)
            opened.append(journal)

        monkeypatch.setattr(PostgresSpendJournal, "__init__", recorded)

    def open(self) -> PostgresSpendJournal:
        return PostgresSpendJournal(self.url)

    @contextlib.contextmanager
    def _connection(self) -> Iterator[psycopg.Connection[Any]]:
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as db:
            yield db

    def fetch(self, sql: str, *parameters: object) -> list[tuple[Any, ...]]:
        with self._connection() as db:
            cursor = db.execute(sql.replace("?", "%s"), parameters)
            return cursor.fetchall() if cursor.description is not None else []

    def _raw_rows(self) -> list[dict[str, Any]]:
        from psycopg.rows import dict_row

        with self._connection() as db, db.cursor(row_factory=dict_row) as cursor:
            return list(cursor.execute(f"SELECT * FROM {self.table} ORDER BY id"))

    def dump(self) -> bytes:
        from psycopg import sql

        tables = self.fetch(
            "SELECT table_schema, table_name FROM information_schema.tables "
            "WHERE table_schema NOT IN ('pg_catalog', 'information_schema') ORDER BY 1, 2"
        )
        assert tables, "the database holds no table"
        lines: list[str] = []
        with self._connection() as db:
            for schema, name in tables:
                query = sql.SQL("SELECT row_to_json(t)::text FROM {} t").format(
                    sql.Identifier(schema, name)
                )
                lines.extend(f"{name}: {row}" for (row,) in db.execute(query))
        return "\n".join(lines).encode()

    def refuse_updates(self) -> None:
        self.execute(
            "CREATE FUNCTION refuse_updates() RETURNS trigger LANGUAGE plpgsql AS "
            f"$$ BEGIN RAISE EXCEPTION '{REFUSED}'; END $$"
        )
        self.execute(
            f"CREATE TRIGGER refuse_updates BEFORE UPDATE ON {self.table} "
            "FOR EACH ROW EXECUTE FUNCTION refuse_updates()"
        )

    def allow_updates(self) -> None:
        self.execute(f"DROP TRIGGER refuse_updates ON {self.table}")
        self.execute("DROP FUNCTION refuse_updates()")

    @contextlib.contextmanager
    def failing_state_check(self, message: str) -> Iterator[None]:
        # An entry's state is read right after it is claimed, on the claim's connection.
        import psycopg

        real_execute = psycopg.Connection.execute
        calls = {"n": 0}

        def fail_the_state_read(db: Any, query: Any, *args: Any, **kwargs: Any) -> Any:
            if isinstance(query, str) and query.startswith("SELECT state") and not calls["n"]:
                calls["n"] += 1
                raise psycopg.OperationalError(message)
            return real_execute(db, query, *args, **kwargs)

        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(psycopg.Connection, "execute", fail_the_state_read)
            yield
        assert calls["n"] == 1, "the state of an entry was never read"

    def close(self) -> None:
        for journal in self.opened:
            journal.close()


@contextlib.contextmanager
def open_store(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Store]:
    """The store of `kind`; a PostgreSQL one asks for a fresh database (`postgres_url`)."""
    store: Store
    if kind == "sqlite":
        store = SQLiteStore(tmp_path / "journal")
    elif kind == "postgres":
        store = PostgresStore(request.getfixturevalue("postgres_url"), monkeypatch)
    else:
        raise ValueError(f"no store of kind {kind!r}")
    try:
        yield store
    finally:
        store.close()


def _normalised(row: dict[str, Any]) -> dict[str, Any]:
    decoded = dict(row)
    decoded["units"] = json.loads(row["units"])
    for name in ("created_at", "done_at"):
        decoded[name] = _timestamp(row[name])
    return decoded


def _timestamp(value: object) -> datetime | None:
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    assert moment is None or isinstance(moment, datetime), f"not a timestamp: {value!r}"
    assert moment is None or moment.tzinfo is not None, f"a naive timestamp: {value!r}"
    return moment
