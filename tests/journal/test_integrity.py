"""Rows nobody without the key can change, scopes that fingerprint nothing, bad rows that
stop nothing (issue 15, "The journal: integrity and confidentiality").

Every test here tampers with the journal the way someone who can write it but does not
hold the key would: in SQL, on a connection of the test's own, on both backends. A row
changed so is refused: never sent, reported in `ReplayReport.refused`, logged as a
WARNING, noted on the row. The figures of the issue (a pending `chat x1` rewritten to
`dub x240` charged 9,600 tokens) are checked against the offline fake, which prices tools
as the API does.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from amaimedia import RefusedSpend, ReplayReport, SpendFailedError
from amaimedia.testing import FakeAmaiServer
from tests.answers import KEY
from tests.conftest import Harness
from tests.journal.ledger import Ledger, journal_client, leave_pending, pending_references
from tests.journal.sealing import _fetch, age_entry, scope_of, seal
from tests.journal.stores import KINDS, Store, open_store
from tests.postgres import PostgresServer, drop_database, fresh_database

OTHER_KEY = "amai_live_other_9876543210fedcbaQRST"
BASE_URL = "https://api.amaimedia.com"


@pytest.fixture(params=KINDS)
def store(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Store]:
    """The journal's storage: an SQLite file, then a PostgreSQL database."""
    with open_store(request.param, request, tmp_path, monkeypatch) as opened:
        yield opened


def replay(harness: Harness, client: Any, **options: Any) -> ReplayReport:
    report: ReplayReport = harness.run(client.replay_pending(**options))
    return report


def row(store: Store, reference: str) -> dict[str, Any]:
    """What a test reads of one row, without decoding its units (which may not decode)."""
    [(state, last_error, mac)] = store.fetch(
        f"SELECT state, last_error, mac FROM {store.table} WHERE reference = ?", reference
    )
    return {"state": state, "last_error": last_error, "mac": mac}


def decoded_row(store: Store, reference: str) -> dict[str, Any]:
    [found] = [r for r in store.rows() if r["reference"] == reference]
    return found


def refusals(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if "is refused" in r.getMessage()]


# -- the tamper test of the issue: chat x1 rewritten to dub x240 -------------------------


def test_a_pending_row_rewritten_by_someone_without_the_key_is_never_sent(
    harness: Harness, store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    fake = FakeAmaiServer()
    key = fake.create_key(balance=20_000)
    make = fake.async_client if harness.is_async else fake.client
    worker = make(key, spend_journal=store.target, max_retries=0)
    fake.fail_next("spend", status=503)
    with pytest.raises(SpendFailedError):
        harness.run(_block(harness, worker, "chat", 1, "job-1"))
    # Whoever can write the journal, without the key: chat x1 becomes dub x240.
    store.execute(
        f"UPDATE {store.table} SET tool = 'dub', units = '240' WHERE reference = 'job-1'"
    )
    caplog.set_level(logging.WARNING, logger="amaimedia")

    report = replay(harness, make(key, spend_journal=store.target))

    # Before the rows were authenticated: 9,600 tokens (dub x240 at 40 a minute).
    assert list(report) == []
    assert fake.spends == []
    assert fake.balance(key) == 20_000
    [refused] = report.refused
    assert (refused.tool, refused.units, refused.reference) == ("dub", "240", "job-1")
    assert refused.kind == "tampered"
    assert "changed by someone without the API key" in refused.reason
    assert report.left_pending == 1
    [record] = refusals(caplog)
    assert record.levelno == logging.WARNING
    assert "'job-1'" in record.getMessage()
    assert row(store, "job-1")["last_error"].startswith("refused: its authentication code")
    assert row(store, "job-1")["state"] == "pending"  # kept, for whoever looks into it
    assert harness.run(worker.pending_spends()) == []  # not listed as a spend of this key


async def _aiter_block(client: Any, tool: str, units: float, reference: str) -> None:
    async with client.metered(tool, units, reference=reference):
        pass


def _block(harness: Harness, client: Any, tool: str, units: float, reference: str) -> Any:
    if harness.is_async:
        return _aiter_block(client, tool, units, reference)
    with client.metered(tool, units, reference=reference):
        pass
    return None


@pytest.mark.parametrize(
    "change",
    [
        pytest.param("units = '240'", id="units"),
        pytest.param("tool = 'chat'", id="tool"),
        pytest.param("reference = 'job-9'", id="reference"),
        pytest.param("created_at = ?", id="created_at"),
        pytest.param("mac = NULL", id="code-removed"),
        pytest.param("mac = ?", id="code-forged"),
    ],
)
def test_any_change_to_what_a_row_sends_is_refused(
    harness: Harness, store: Store, change: str
) -> None:
    ledger = Ledger()
    client = journal_client(harness, ledger, store.target, max_retries=0)
    leave_pending(harness, client, ledger, "job-1", "job-2")
    values: tuple[object, ...] = ()
    if change == "created_at = ?":
        # A stale entry made to look young would be sent after the server forgot it.
        moment = datetime.now(timezone.utc) + timedelta(seconds=1)
        values = (moment.isoformat() if store.kind == "sqlite" else moment,)
    elif change == "mac = ?":
        values = ("0" * 64,)
    store.execute(f"UPDATE {store.table} SET {change} WHERE reference = 'job-1'", *values)
    ledger.sent.clear()

    report = replay(harness, client)

    assert [c.reference for c in report] == ["job-2"]
    assert ledger.sent == ["job-2"]  # the changed row was never sent
    [refused] = report.refused
    expected = "unauthenticated" if change == "mac = NULL" else "tampered"
    assert refused.kind == expected
    assert pending_references(harness, client) == []


def test_rows_swapped_between_two_entries_are_both_refused(harness: Harness, store: Store) -> None:
    ledger = Ledger()
    client = journal_client(harness, ledger, store.target, max_retries=0)
    leave_pending(harness, client, ledger, "job-1")
    ledger.down = True
    with pytest.raises(SpendFailedError):
        harness.run(_block(harness, client, "dub", 240, "job-2"))
    ledger.down = False
    # Each row's code copied onto the other: the codes are genuine, the rows are not.
    [(first,)] = store.fetch(f"SELECT mac FROM {store.table} WHERE reference = 'job-1'")
    [(second,)] = store.fetch(f"SELECT mac FROM {store.table} WHERE reference = 'job-2'")
    store.execute(f"UPDATE {store.table} SET mac = ? WHERE reference = 'job-1'", second)
    store.execute(f"UPDATE {store.table} SET mac = ? WHERE reference = 'job-2'", first)
    ledger.sent.clear()

    report = replay(harness, client)

    assert list(report) == []
    assert ledger.sent == []
    assert sorted(r.reference for r in report.refused) == ["job-1", "job-2"]


def test_a_row_moved_into_another_keys_scope_is_refused(harness: Harness, store: Store) -> None:
    ledger = Ledger()
    victim = journal_client(harness, ledger, store.target, max_retries=0)
    other = journal_client(harness, ledger, store.target, max_retries=0, api_key=OTHER_KEY)
    leave_pending(harness, other, ledger, "theirs")
    harness.run(victim.pending_spends())  # the victim's scope exists from its first use
    victim_scope = scope_of(store.target, KEY)
    # Someone moves the other account's sealed row into the victim's scope.
    store.execute(f"UPDATE {store.table} SET scope = ? WHERE reference = 'theirs'", victim_scope)
    ledger.sent.clear()

    report = replay(harness, victim)

    assert ledger.sent == []
    [refused] = report.refused
    assert (refused.reference, refused.kind) == ("theirs", "tampered")


# -- a row already charged, flipped back to pending --------------------------------------


def test_a_done_row_flipped_back_to_pending_is_never_sent_again(
    harness: Harness, store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    ledger = Ledger()
    client = journal_client(harness, ledger, store.target)
    harness.run(_block(harness, client, "dub", 3, "job-1"))
    assert row(store, "job-1")["state"] == "done"
    store.execute(
        f"UPDATE {store.table} SET state = 'pending', done_at = NULL, charged = NULL "
        "WHERE reference = 'job-1'"
    )
    caplog.set_level(logging.WARNING, logger="amaimedia")

    report = replay(harness, client)

    assert list(report) == []
    assert ledger.sent == ["job-1"]  # the block's own spend, and no other
    [refused] = report.refused
    assert (refused.reference, refused.kind) == ("job-1", "tampered")
    assert "flipped back to pending" in refused.reason
    assert refusals(caplog)


def test_a_done_row_put_back_exactly_as_it_was_is_sent_once_more_and_charged_once(
    harness: Harness, store: Store
) -> None:
    """The limit of a code in the row itself (docs: "What the code does not cover").

    Someone who saved a pending row can put it back after it was charged; nothing in the
    row can tell. The replay sends the same tool, units and reference again, which the
    server answers without charging twice, and the age rule still applies to it.
    """
    ledger = Ledger()
    client = journal_client(harness, ledger, store.target, max_retries=0)
    leave_pending(harness, client, ledger, "job-1")
    saved = decoded_row(store, "job-1")
    assert [c.reference for c in replay(harness, client)] == ["job-1"]
    store.execute(
        f"UPDATE {store.table} SET state = 'pending', done_at = NULL, charged = NULL, mac = ? "
        "WHERE reference = 'job-1'",
        saved["mac"],
    )

    report = replay(harness, client)

    assert [c.reference for c in report] == ["job-1"]
    assert ledger.charged == {"job-1": 5}  # charged once, by reference


def test_every_row_carries_a_code_and_no_key(harness: Harness, store: Store) -> None:
    ledger = Ledger()
    client = journal_client(harness, ledger, store.target, max_retries=0)
    leave_pending(harness, client, ledger, "job-1")
    harness.run(_block(harness, client, "dub", 3, "job-2"))

    pending, done = decoded_row(store, "job-1"), decoded_row(store, "job-2")

    assert len(pending["mac"]) == len(done["mac"]) == 64
    assert int(pending["mac"], 16) >= 0
    scope = scope_of(store.target, KEY)
    assert pending["mac"] == seal(
        scope, KEY, "dub", 3, "job-1", pending["created_at"], base_url=BASE_URL
    )
    assert done["mac"] != seal(scope, KEY, "dub", 3, "job-2", done["created_at"])  # "done"
    contents = store.dump()
    assert KEY.encode() not in contents
    assert KEY.removeprefix("amai_live_").encode() not in contents


def test_an_entry_aged_with_the_key_is_still_trusted(harness: Harness, store: Store) -> None:
    """How the suite ages an entry: with the key, as the SDK would have written it."""
    ledger = Ledger()
    client = journal_client(harness, ledger, store.target, max_retries=0)
    leave_pending(harness, client, ledger, "job-1")
    age_entry(store.target, KEY, "job-1", datetime.now(timezone.utc) - timedelta(days=8))

    report = replay(harness, client)

    assert [s.reference for s in report.stale] == ["job-1"]
    assert report.refused == []


# -- the scope ---------------------------------------------------------------------------


@contextlib.contextmanager
def another_journal(
    store: Store, request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[Path | str]:
    """A second journal of the store's kind: another file, or another database."""
    if store.kind == "sqlite":
        yield tmp_path / "second" / "spends.sqlite3"
        return
    server: PostgresServer = request.getfixturevalue("postgres_server")
    url = fresh_database(server)
    try:
        yield url
    finally:
        drop_database(server, url)


def test_one_key_has_a_different_scope_in_every_journal(
    harness: Harness, request: pytest.FixtureRequest, tmp_path: Path, store: Store
) -> None:
    ledger = Ledger()
    with another_journal(store, request, tmp_path) as second:
        clients = [
            journal_client(harness, ledger, t, max_retries=0) for t in (store.target, second)
        ]
        for client in clients:
            leave_pending(harness, client, ledger, "job-1")
        [(first_scope,)] = store.fetch(f"SELECT scope FROM {store.table}")
        [(second_scope,)] = _fetch(second, f"SELECT scope FROM {store.table}", None)

    # Layout 1 stored this, the same in every journal on every machine: a fingerprint.
    unsalted = hashlib.sha256(f"{BASE_URL}\n{KEY}".encode()).hexdigest()[:32]
    assert first_scope != second_scope
    assert unsalted not in (first_scope, second_scope)
    assert len(first_scope) == len(second_scope) == 32


# -- one bad row stops nothing -----------------------------------------------------------

NESTED = "[" * 100_000 + "]" * 100_000


def insert_beside(store: Store, reference: str, units: str, created_at: object) -> None:
    """A row in `job-0`'s scope, written by hand: no code, or one that cannot match."""
    store.execute(
        f"INSERT INTO {store.table} (scope, tool, units, reference, created_at, mac) "
        f"SELECT scope, 'chat', ?, ?, {'?' if store.kind == 'sqlite' else '?::timestamptz'}, "
        f"mac FROM {store.table} WHERE reference = 'job-0'",
        units,
        reference,
        created_at,
    )


def test_malformed_rows_are_refused_and_the_replay_goes_on(
    harness: Harness, store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    ledger = Ledger()
    client = journal_client(harness, ledger, store.target, max_retries=0)
    leave_pending(harness, client, ledger, "job-0", "job-1")
    now = datetime.now(timezone.utc).isoformat()
    bad_time = "not a time" if store.kind == "sqlite" else "infinity"
    insert_beside(store, "infinite-units", "1e999", now)
    insert_beside(store, "nested-units", NESTED, now)
    insert_beside(store, "text-units", '"lots"', now)
    insert_beside(store, "bad-time", "1", bad_time)
    caplog.set_level(logging.WARNING, logger="amaimedia")

    # Listing them raised before (RecursionError, ValueError): now it lists what checks out.
    assert pending_references(harness, client) == ["job-0", "job-1"]
    ledger.sent.clear()
    report = replay(harness, client)

    assert [c.reference for c in report] == ["job-0", "job-1"]
    assert ledger.sent == ["job-0", "job-1"]
    kinds = {r.reference: r.kind for r in report.refused}
    assert kinds == {
        "infinite-units": "tampered",  # a copied code that covers other units
        "nested-units": "unreadable",
        "text-units": "unreadable",
        "bad-time": "unreadable",
    }
    nested = next(r for r in report.refused if r.reference == "nested-units")
    assert "nested deeper than 200 levels" in nested.reason
    assert nested.created_at is not None
    assert next(r for r in report.refused if r.reference == "bad-time").created_at is None
    logged = " ".join(r.getMessage() for r in refusals(caplog))
    for reference in kinds:
        assert reference in logged
    assert len(logged) < 20_000  # the nested row is cut short in the log, not dumped
    for reference in kinds:
        assert row(store, reference)["last_error"].startswith("refused: ")
    assert report.left_pending == 4


def test_a_refused_row_is_warned_about_once_per_process(
    harness: Harness, store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    ledger = Ledger()
    client = journal_client(harness, ledger, store.target, max_retries=0)
    leave_pending(harness, client, ledger, "job-0")
    store.execute(f"UPDATE {store.table} SET units = '99' WHERE reference = 'job-0'")
    caplog.set_level(logging.WARNING, logger="amaimedia")

    harness.run(client.pending_spends())
    first = replay(harness, client)
    second = replay(harness, client)

    assert len(first.refused) == len(second.refused) == 1  # reported every time
    assert len(refusals(caplog)) == 1  # logged once


def test_a_refused_spend_shows_in_notebooks() -> None:
    refused = RefusedSpend("dub", "240", "job-1", None, "tampered", "changed")
    assert "<table" in refused._repr_html_()
    assert "tampered" in refused._repr_html_()
