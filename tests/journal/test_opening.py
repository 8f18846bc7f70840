"""Clients opening one fresh spend journal at the same moment, in one process.

Workers that start together on a new journal path race through its creation. Two ways
another opener can interleave are replayed here deterministically, by wrapping the SQLite
connections the journal opens: between two of this client's statements, another client
opens the whole journal; or, when this client runs a statement outside a transaction,
another client is inside its own creating transaction for a moment. Then the race itself
is run for real, by eight threads at once. The shared-client runs of
`tests/soak/test_concurrency.py` found these races.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from amaimedia import AmaiClient, SpendJournalError
from tests.answers import KEY


class _Connection:
    """One of the journal's SQLite connections, with `interfere(sql)` run before each of
    its statements that runs outside a transaction."""

    def __init__(self, db: sqlite3.Connection, interfere: Callable[[str], None]) -> None:
        self._db = db
        self._interfere = interfere

    def execute(self, sql: str, *parameters: Any) -> Any:
        if not self._db.in_transaction:
            self._interfere(sql)
        return self._db.execute(sql, *parameters)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._db, name)


def wrap_journal_connections(
    monkeypatch: pytest.MonkeyPatch, interfere: Callable[[str], None]
) -> Callable[..., sqlite3.Connection]:
    """Route `sqlite3.connect` through `_Connection`; the real `connect`, for the others."""
    real_connect = sqlite3.connect

    def connect(*args: Any, **kwargs: Any) -> Any:
        return _Connection(real_connect(*args, **kwargs), interfere)

    monkeypatch.setattr(sqlite3, "connect", connect)
    return real_connect


@pytest.mark.parametrize("before", [0, 1, 2, 3], ids=lambda n: f"before-statement-{n}")
def test_another_client_creating_the_journal_between_two_statements(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, before: int
) -> None:
    """Another client opens (and so creates) the journal just before this client's
    statement number `before` outside a transaction. The SDK used to read the schema
    version and the table list as two such statements, and took a schema made between
    them for "an SQLite database, but not a spend journal"."""
    journal = tmp_path / "spends.sqlite3"
    statements = 0
    others: list[AmaiClient] = []

    def another_client_opens(sql: str) -> None:
        nonlocal statements
        statements += 1
        if statements == before + 1:
            others.append(AmaiClient(api_key=KEY, spend_journal=journal))

    wrap_journal_connections(monkeypatch, another_client_opens)
    with AmaiClient(api_key=KEY, spend_journal=journal) as client:
        assert client.pending_spends() == []
    [other] = others
    with other:
        assert other.pending_spends() == []


def test_another_client_inside_its_creating_transaction_meanwhile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Just as this client switches the new journal to WAL mode, another client is inside
    its own creating transaction (it holds the write lock) for 0.2 s. The switch does not
    wait on SQLite's busy timeout: it failed at once with "database is locked", 1 in 100
    rounds of 8 threads opening a new journal together. Opening a journal now retries it."""
    journal = tmp_path / "spends.sqlite3"
    holders: list[threading.Timer] = []
    real_connect = wrap_journal_connections(monkeypatch, lambda sql: hold_write_lock(sql))

    def hold_write_lock(sql: str) -> None:
        if "journal_mode" not in sql or holders:
            return
        other = real_connect(journal, isolation_level=None, check_same_thread=False)
        other.execute("BEGIN IMMEDIATE")

        def end_transaction() -> None:
            other.rollback()
            other.close()

        release = threading.Timer(0.2, end_transaction)
        release.start()
        holders.append(release)

    try:
        with AmaiClient(api_key=KEY, spend_journal=journal) as client:
            assert client.pending_spends() == []
    finally:
        for holder in holders:
            holder.join()
    assert len(holders) == 1
    with contextlib.closing(sqlite3.connect(journal)) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


@pytest.mark.slow
def test_eight_threads_opening_new_journals_together(tmp_path: Path) -> None:
    """The race the two tests above replay, run for real: every opening succeeds."""
    rounds, threads = 25, 8
    failures: list[BaseException] = []
    for round_ in range(rounds):
        journal = tmp_path / f"round-{round_}.sqlite3"
        start = threading.Barrier(threads)

        def open_journal(journal: Path = journal, start: threading.Barrier = start) -> None:
            start.wait()
            try:
                AmaiClient(api_key=KEY, spend_journal=journal).close()
            except BaseException as exc:  # every failure is collected
                failures.append(exc)

        workers = [threading.Thread(target=open_journal) for _ in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
    assert failures == []


def test_a_journal_that_cannot_switch_to_wal_is_refused_at_construction(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only "database is locked" is waited out, and only for the busy timeout; any other
    failure of the switch, or a lock held longer, is a SpendJournalError at once."""
    journal = tmp_path / "spends.sqlite3"
    monkeypatch.setattr("amaimedia._journal._sqlite._BUSY_TIMEOUT_MS", 100)
    holders: list[sqlite3.Connection] = []

    def fail(sql: str) -> None:
        if "journal_mode" not in sql:
            return
        if journal.name.startswith("io"):
            raise sqlite3.OperationalError("disk I/O error")
        if not holders:  # a lock held past the busy timeout
            holders.append(real_connect(journal, isolation_level=None))
            holders[0].execute("BEGIN IMMEDIATE")

    real_connect = wrap_journal_connections(monkeypatch, fail)
    messages = []
    for name in ("io.sqlite3", "locked.sqlite3"):
        journal = tmp_path / name
        with pytest.raises(SpendJournalError) as info:
            AmaiClient(api_key=KEY, spend_journal=journal)
        messages.append(str(info.value))
    holders[0].rollback()
    holders[0].close()
    assert "disk I/O error" in messages[0]
    assert "database is locked" in messages[1]
