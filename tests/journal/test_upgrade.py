"""A journal written by amaimedia 0.1 (layout 1): upgraded in place, nothing lost.

Layout 1 rows carry no authentication code, and their scope is the unsalted
`sha256(base_url + key)[:32]`. Opening such a journal upgrades it to layout 2 (a code
column, the journal's salt) in one transaction, and logs how many pending entries it
holds. Those entries are kept as they are, with their old scope: nothing can tell whether
someone changed them, so they are reported as refused (`legacy`) and never sent, until a
client adopts them explicitly with `replay_pending(adopt_unauthenticated=True)`, which
moves them to its scope, seals them and sends them, once.

The layout 1 tables are made here with 0.1's own statements.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import secrets
import sqlite3
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from amaimedia import ReplayReport, SpendJournalError
from amaimedia._journal._sqlite import SQLiteSpendJournal
from tests.answers import KEY, api_router
from tests.conftest import Harness
from tests.journal.ledger import Ledger, journal_client, pending_references
from tests.journal.sealing import salt_of, scope_of
from tests.journal.stores import KINDS, PostgresStore, Store, open_store
from tests.journal.test_journal import with_login

OTHER_KEY = "amai_live_other_9876543210fedcbaQRST"
BASE_URL = "https://api.amaimedia.com"

# amaimedia 0.1's layout, as it created it.
SQLITE_1 = """
CREATE TABLE IF NOT EXISTS spends (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    scope TEXT NOT NULL,
    tool TEXT NOT NULL,
    units TEXT NOT NULL,
    reference TEXT NOT NULL,
    created_at TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    error_code TEXT,
    state TEXT NOT NULL DEFAULT 'pending',
    charged INTEGER,
    done_at TEXT,
    UNIQUE (scope, tool, reference)
)
"""
POSTGRES_1 = (
    "CREATE TABLE amaimedia_schema (name TEXT PRIMARY KEY, version INTEGER NOT NULL)",
    """
    CREATE TABLE amaimedia_spends (
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
    "CREATE INDEX amaimedia_spends_pending ON amaimedia_spends (scope, id) "
    "WHERE state = 'pending'",
    "INSERT INTO amaimedia_schema (name, version) VALUES ('spends', 1)",
)


def legacy_scope(key: str) -> str:
    return hashlib.sha256(f"{BASE_URL}\n{key}".encode()).hexdigest()[:32]


@pytest.fixture(params=KINDS)
def store(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Store]:
    with open_store(request.param, request, tmp_path, monkeypatch) as opened:
        yield opened


def make_layout_1(store: Store, rows: list[tuple[str, str, str, str, str]]) -> None:
    """A layout 1 journal holding `rows`: (key, tool, units, reference, state)."""
    if store.kind == "sqlite":
        with contextlib.closing(sqlite3.connect(store.target)) as db, db:
            db.execute(SQLITE_1)
            db.execute("PRAGMA user_version = 1")
    else:
        for statement in POSTGRES_1:
            store.execute(statement)
    now = datetime.now(timezone.utc) - timedelta(hours=1)
    for key, tool, units, reference, state in rows:
        created: object = now.isoformat() if store.kind == "sqlite" else now
        store.execute(
            f"INSERT INTO {store.table} (scope, tool, units, reference, created_at, state) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            legacy_scope(key),
            tool,
            units,
            reference,
            created,
            state,
        )


def replay(harness: Harness, client: Any, **options: Any) -> ReplayReport:
    report: ReplayReport = harness.run(client.replay_pending(**options))
    return report


def version(store: Store) -> int:
    if store.kind == "sqlite":
        [(found,)] = store.fetch("PRAGMA user_version")
    else:
        [(found,)] = store.fetch("SELECT version FROM amaimedia_schema WHERE name = 'spends'")
    return int(found)


def test_a_layout_1_journal_is_upgraded_and_loses_no_pending_entry(
    harness: Harness, store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    make_layout_1(
        store,
        [
            (KEY, "chat", "1", "job-1", "pending"),
            (KEY, "dub", "3", "job-2", "pending"),
            (KEY, "dub", "3", "job-0", "done"),
            (OTHER_KEY, "chat", "2", "theirs", "pending"),
        ],
    )
    before = {r["reference"]: (r["scope"], r["units"]) for r in store.rows()}
    caplog.set_level(logging.INFO, logger="amaimedia")
    ledger = Ledger()

    client = journal_client(harness, ledger, store.target, max_retries=0)

    assert version(store) == 2
    assert len(salt_of(store.target)) == 32
    [upgraded] = [r for r in caplog.records if "upgraded the spend journal" in r.getMessage()]
    assert upgraded.levelno == logging.WARNING
    assert "3 pending entries written by amaimedia 0.1" in upgraded.getMessage()
    rows = {r["reference"]: r for r in store.rows()}
    assert {reference: (r["scope"], r["units"]) for reference, r in rows.items()} == before
    assert all(r["mac"] is None for r in rows.values())

    # Kept, reported, never sent until adopted.
    assert pending_references(harness, client) == []
    report = replay(harness, client)
    assert list(report) == []
    assert ledger.sent == []
    assert [(r.reference, r.kind) for r in report.refused] == [
        ("job-1", "legacy"),
        ("job-2", "legacy"),
    ]
    assert "adopt_unauthenticated=True" in report.refused[0].reason

    adopted = replay(harness, client, adopt_unauthenticated=True)

    assert [c.reference for c in adopted] == ["job-1", "job-2"]
    assert ledger.sent == ["job-1", "job-2"]
    scope = scope_of(store.target, KEY)
    after = {r["reference"]: (r["scope"], r["state"]) for r in store.rows()}
    assert after["job-1"] == after["job-2"] == (scope, "done")
    assert after["theirs"] == (legacy_scope(OTHER_KEY), "pending")  # another key's: untouched
    assert list(replay(harness, client, adopt_unauthenticated=True)) == []


def test_a_layout_1_row_that_is_no_spend_is_recorded_as_failed_and_the_rest_go_on(
    harness: Harness, store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    make_layout_1(
        store,
        [
            (KEY, "chat", "1e999", "infinite", "pending"),
            (KEY, "", "1", "no-tool", "pending"),
            (KEY, "chat", "2", "job-1", "pending"),
        ],
    )
    ledger = Ledger()
    client = journal_client(harness, ledger, store.target, max_retries=0)
    caplog.set_level(logging.WARNING, logger="amaimedia")

    report = replay(harness, client, adopt_unauthenticated=True)

    # Before: the '1e999' row raised ValueError out of the replay, and nothing was sent.
    assert [c.reference for c in report] == ["job-1"]
    assert ledger.sent == ["job-1"]
    assert sorted(s.reference for s in report.failed) == ["infinite", "no-tool"]
    left = {s.reference: s for s in harness.run(client.pending_spends())}
    assert "finite" in (left["infinite"].last_error or "")
    assert left["infinite"].attempts == 1
    assert "infinite" in caplog.text


def test_workers_upgrading_one_journal_at_once_upgrade_it_once(store: Store) -> None:
    make_layout_1(store, [(KEY, "chat", "1", "job-1", "pending")])
    start = threading.Barrier(6)
    salts: list[str] = []
    errors: list[BaseException] = []

    def open_one() -> None:
        start.wait()
        try:
            salts.append(store.open().salt)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=open_one) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    assert errors == []
    assert len(salts) == 6
    assert set(salts) == {salt_of(store.target)}
    assert version(store) == 2


def test_an_sqlite_journal_of_a_newer_layout_is_refused(harness: Harness, tmp_path: Path) -> None:
    path = tmp_path / "spends.sqlite3"
    SQLiteSpendJournal(path)
    with contextlib.closing(sqlite3.connect(path)) as db, db:
        db.execute("PRAGMA user_version = 3")
    api = api_router()

    with pytest.raises(SpendJournalError, match="layout version 3, written by a newer amaimedia"):
        harness.client(api, spend_journal=path)

    assert api.calls.call_count == 0


def test_a_postgres_layout_1_journal_is_upgraded_only_by_a_role_that_owns_it(
    harness: Harness,
    request: pytest.FixtureRequest,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with open_store("postgres", request, tmp_path, monkeypatch) as pg_store:
        assert isinstance(pg_store, PostgresStore)
        make_layout_1(pg_store, [(KEY, "chat", "1", "job-1", "pending")])
        role, password = f"amai_worker_{secrets.token_hex(4)}", secrets.token_hex(12)
        database = urlsplit(pg_store.url).path.lstrip("/")
        pg_store.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{password}'")
        try:
            pg_store.execute(f"GRANT CONNECT ON DATABASE {database} TO {role}")
            pg_store.execute(
                f"GRANT SELECT, INSERT, UPDATE, DELETE ON amaimedia_spends, amaimedia_schema "
                f"TO {role}"
            )
            worker = with_login(pg_store.url, role, password)

            with pytest.raises(
                SpendJournalError, match="by a role that owns its tables"
            ) as caught:
                journal_client(harness, Ledger(), worker)

            assert password not in str(caught.value)
            assert version(pg_store) == 1  # nothing half done
            pg_store.open()  # the owner upgrades it
            assert version(pg_store) == 2
            ledger = Ledger()
            client = journal_client(harness, ledger, worker, max_retries=0)
            report = replay(harness, client, adopt_unauthenticated=True)
            assert [c.reference for c in report] == ["job-1"]
        finally:
            pg_store.close()
            pg_store.execute(f"DROP OWNED BY {role}")
            pg_store.execute(f"DROP ROLE {role}")
