"""The opt-in spend journal, in one process: written before the spend, settled after.

Most tests run a metered block against `Ledger` (`ledger.py`), a stateful stand-in for
the API that charges each reference once, so that "charged exactly once" is counted on the
server's side and not inferred from the client's.

A test whose subject is not the backend takes `store` (`stores.py`) and runs on both: an
SQLite file and a PostgreSQL database on a real server. The journal is read back on a
connection of the test's own, as another process would see it, and "another client" opens
a backend object of its own with `store.open()`: in SQLite it shares this process's
claims, in PostgreSQL it is another session, whose claims are another worker's. What only
one backend has (a file's damage, WAL mode, sessions, the schema table, passwords) is
tested on that backend alone, at the end of the module for PostgreSQL.

The journal across processes is in `tests/wire/test_journal_processes.py`; clients racing
to open one new journal, in `test_opening.py`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import sqlite3
import sys
import threading
import traceback
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest

from amaimedia import AmaiError, Charge, SpendFailedError, SpendJournalError
from amaimedia._journal._postgres import PostgresSpendJournal
from amaimedia._journal._sqlite import SQLiteSpendJournal as SpendJournal
from tests.answers import KEY, api_router, error
from tests.conftest import Harness
from tests.journal.ledger import (
    Ledger,
    SpendReply,
    journal_client,
    leave_pending,
    pending_references,
    run_block,
)
from tests.journal.stores import KINDS, REFUSED, PostgresStore, Store, open_store

OTHER_KEY = "amai_live_other_9876543210fedcbaQRST"


@pytest.fixture(params=KINDS)
def store(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Store]:
    """The journal's storage: an SQLite file, then a PostgreSQL database."""
    with open_store(request.param, request, tmp_path, monkeypatch) as opened:
        yield opened


@pytest.fixture
def pg_store(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[PostgresStore]:
    """A PostgreSQL database alone, for what only that backend has."""
    with open_store("postgres", request, tmp_path, monkeypatch) as opened:
        assert isinstance(opened, PostgresStore)
        yield opened


# -- before the spend, and after ---------------------------------------------------------


def test_entry_is_committed_and_claimed_before_the_spend_is_sent(
    harness: Harness, store: Store
) -> None:
    ledger = Ledger()
    seen: list[tuple[list[dict[str, Any]], bool]] = []

    def observe(reference: str) -> None:
        # Another journal object on the same storage, as a second client would open it.
        other = store.open()
        seen.append((store.rows(), other.claim(store.entry_id(reference))))

    ledger.on_spend = observe
    client = journal_client(harness, ledger, store.target)

    meter = run_block(harness, client, "job-1", units=2.5)

    [(at_spend, claimable)] = seen
    assert [(r["reference"], r["tool"], r["state"]) for r in at_spend] == [
        ("job-1", "dub", "pending")
    ]
    assert at_spend[0]["units"] == 2.5
    assert at_spend[0]["charged"] is None
    assert at_spend[0]["created_at"] is not None
    assert at_spend[0]["done_at"] is None
    assert claimable is False  # the block holds the entry while its spend is in flight
    assert meter.charge is not None
    assert harness.run(client.pending_spends()) == []
    [done] = store.rows()
    assert (done["state"], done["charged"], done["attempts"]) == ("done", 5, 0)
    assert done["done_at"] is not None
    assert ledger.charged == {"job-1": 5}
    later = store.open()
    assert later.claim(done["id"])  # released once settled
    later.release(done["id"])


def test_the_journal_is_opt_in(harness: Harness) -> None:
    client = harness.client(api_router())

    assert client.spend_journal is None
    for call in (client.pending_spends, client.replay_pending):
        with pytest.raises(AmaiError, match="keeps no spend journal"):
            harness.run(call())


def test_spend_journal_property_is_the_resolved_path(
    harness: Harness, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    client = harness.client(api_router(), spend_journal="~/state/app/spends.sqlite3")

    assert client.spend_journal == str(tmp_path.resolve() / "state/app/spends.sqlite3")
    assert (tmp_path / "state/app/spends.sqlite3").is_file()
    shown = repr(SpendJournal(client.spend_journal))
    assert shown == f"SQLiteSpendJournal({client.spend_journal!r})"


# -- a spend that fails stays pending ----------------------------------------------------

FAILURES = [
    pytest.param(
        lambda: error(402, "insufficient_credits", cost_tokens=15, balance=3),
        "insufficient_credits",
        "insufficient_credits",
        id="402",
    ),
    pytest.param(lambda: error(503, "server_error"), "server_error", "503", id="503"),
    pytest.param(lambda: httpx.ConnectError("connection refused"), None, "refused", id="connect"),
]


@pytest.mark.parametrize(("reply", "code", "message"), FAILURES)
def test_a_failed_spend_stays_pending_and_replays_once(
    harness: Harness,
    store: Store,
    reply: Callable[[], SpendReply],
    code: str | None,
    message: str,
) -> None:
    ledger = Ledger()
    ledger.replies.append(reply())
    client = journal_client(harness, ledger, store.target, max_retries=0)

    with pytest.raises(SpendFailedError) as caught:
        run_block(harness, client, "job-1")

    assert caught.value.journaled is True
    assert "stays pending in the spend journal" in str(caught.value)
    assert (caught.value.tool, caught.value.units, caught.value.reference) == ("dub", 3, "job-1")
    [spend] = harness.run(client.pending_spends())
    assert (spend.tool, spend.units, spend.reference) == ("dub", 3, "job-1")
    assert spend.attempts == 1
    assert spend.error_code == code
    assert spend.last_error is not None
    assert message in spend.last_error
    assert spend.created_at.tzinfo is not None
    assert ledger.charged == {}

    charges = harness.run(client.replay_pending())

    assert [(c.reference, c.charged) for c in charges] == [("job-1", 5)]
    assert harness.run(client.pending_spends()) == []
    assert ledger.sent == ["job-1", "job-1"]
    assert ledger.charged == {"job-1": 5}
    assert harness.run(client.replay_pending()) == []  # nothing left: nothing sent
    assert ledger.sent == ["job-1", "job-1"]


def test_retries_exhausted_leave_the_entry_pending(harness: Harness, store: Store) -> None:
    ledger = Ledger()
    ledger.down = True
    client = journal_client(harness, ledger, store.target, max_retries=2)

    with pytest.raises(SpendFailedError) as caught:
        run_block(harness, client, "job-1")

    assert caught.value.journaled is True
    assert ledger.sent == ["job-1"] * 3
    [spend] = harness.run(client.pending_spends())
    assert spend.attempts == 1  # one failed block, however many requests it took
    ledger.down = False
    assert [c.reference for c in harness.run(client.replay_pending())] == ["job-1"]
    assert ledger.charged == {"job-1": 5}


def test_a_rerun_block_with_the_same_reference_makes_its_entry_pending_again(
    harness: Harness, store: Store
) -> None:
    ledger = Ledger()
    client = journal_client(harness, ledger, store.target)
    run_block(harness, client, "job-1", units=2)

    ledger.down = True
    with pytest.raises(SpendFailedError):
        run_block(harness, client, "job-1", units=4)
    ledger.down = False

    [spend] = harness.run(client.pending_spends())
    assert (spend.reference, spend.units) == ("job-1", 4)
    [row] = store.rows()
    assert (row["state"], row["units"], row["charged"], row["done_at"]) == (
        "pending",
        4,
        None,
        None,
    )
    harness.run(client.replay_pending())
    assert ledger.charged == {"job-1": 5}  # the server charged the reference once


# -- rejections a retry cannot fix -------------------------------------------------------


@pytest.mark.parametrize(("status", "code"), [(401, "auth_required"), (403, "forbidden")])
def test_a_rejected_replay_stays_with_its_error_and_the_others_go_on(
    harness: Harness,
    store: Store,
    caplog: pytest.LogCaptureFixture,
    status: int,
    code: str,
) -> None:
    ledger = Ledger()
    client = journal_client(harness, ledger, store.target, max_retries=0)
    leave_pending(harness, client, ledger, "job-1", "job-2", "job-3")
    ledger.refuse["job-2"] = (status, code)
    caplog.set_level(logging.WARNING, logger="amaimedia")
    caplog.clear()  # the warnings of the three spends left pending

    charges = harness.run(client.replay_pending())

    assert [c.reference for c in charges] == ["job-1", "job-3"]
    [stuck] = harness.run(client.pending_spends())
    assert (stuck.reference, stuck.error_code, stuck.attempts) == ("job-2", code, 2)
    assert stuck.last_error is not None
    assert str(status) in stuck.last_error
    [record] = [r for r in caplog.records if "job-2" in r.getMessage()]
    assert (record.name, record.levelno) == ("amaimedia", logging.WARNING)
    assert "stays in the journal" in record.getMessage()
    assert KEY not in caplog.text

    caplog.clear()
    assert harness.run(client.replay_pending()) == []
    [stuck] = harness.run(client.pending_spends())
    assert stuck.attempts == 3
    assert len([r for r in caplog.records if "job-2" in r.getMessage()]) == 1
    assert sorted(ledger.charged) == ["job-1", "job-3"]
    assert ledger.sent.count("job-1") == ledger.sent.count("job-3") == 2


def test_a_402_on_replay_keeps_the_entry_until_the_balance_is_topped_up(
    harness: Harness, store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    ledger = Ledger()
    client = journal_client(harness, ledger, store.target, max_retries=0)
    leave_pending(harness, client, ledger, "job-1")
    ledger.refuse["job-1"] = (402, "insufficient_credits")
    caplog.set_level(logging.WARNING, logger="amaimedia")

    assert harness.run(client.replay_pending()) == []
    [spend] = harness.run(client.pending_spends())
    assert spend.error_code == "insufficient_credits"
    assert "job-1" in caplog.text

    del ledger.refuse["job-1"]
    assert [c.reference for c in harness.run(client.replay_pending())] == ["job-1"]
    assert ledger.charged == {"job-1": 5}


# -- replay is explicit, and scoped ------------------------------------------------------


def test_opening_a_journal_never_replays_it(harness: Harness, store: Store) -> None:
    first = Ledger()
    client = journal_client(harness, first, store.target, max_retries=0)
    leave_pending(harness, client, first, "job-1", "job-2")

    later = Ledger()
    fresh = journal_client(harness, later, store.target)
    assert later.requests == []
    assert pending_references(harness, fresh) == ["job-1", "job-2"]
    assert later.requests == []  # listing sends nothing either

    charges = harness.run(fresh.replay_pending())

    assert [c.reference for c in charges] == ["job-1", "job-2"]
    assert later.sent == ["job-1", "job-2"]
    assert pending_references(harness, client) == []


@pytest.mark.parametrize(
    "other",
    [
        pytest.param({"api_key": OTHER_KEY}, id="api_key"),
        pytest.param({"base_url": "https://staging.amaimedia.test"}, id="base_url"),
    ],
)
def test_entries_belong_to_their_key_and_base_url(
    harness: Harness, store: Store, other: dict[str, str]
) -> None:
    ledger = Ledger()
    client = journal_client(harness, ledger, store.target, max_retries=0)
    leave_pending(harness, client, ledger, "job-1")

    stranger_ledger = Ledger()
    stranger = journal_client(harness, stranger_ledger, store.target, **other)

    assert harness.run(stranger.pending_spends()) == []
    assert harness.run(stranger.replay_pending()) == []
    assert stranger_ledger.requests == []
    assert pending_references(harness, client) == ["job-1"]
    assert [c.reference for c in harness.run(client.replay_pending())] == ["job-1"]


def test_the_journal_stores_no_api_key(harness: Harness, store: Store) -> None:
    ledger = Ledger()
    client = journal_client(harness, ledger, store.target, max_retries=0)
    leave_pending(harness, client, ledger, "job-1")
    run_block(harness, client, "job-2")

    contents = store.dump()
    assert b"job-1" in contents  # the entries are in what is searched
    assert b"job-2" in contents
    assert KEY.encode() not in contents
    assert KEY.removeprefix("amai_live_").encode() not in contents


# -- an SQLite file that cannot be used is an error at construction ---------------------


def damage(path: Path) -> None:
    """Zero the root page of the journal's index: a damaged, but readable, file."""
    SpendJournal(path).add("scope", "dub", 3, "job-1")
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        (page_size,) = db.execute("PRAGMA page_size").fetchone()
        (root,) = db.execute(
            "SELECT rootpage FROM sqlite_master WHERE type = 'index' AND tbl_name = 'spends'"
        ).fetchone()
    with path.open("r+b") as file:
        file.seek((root - 1) * page_size)
        file.write(bytes(page_size))


def not_ours(path: Path) -> None:
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
        db.commit()


@pytest.mark.parametrize(
    ("prepare", "message"),
    [
        pytest.param(
            lambda path: path.write_bytes(b"this is no database\n" * 64),
            "not a database",
            id="garbage",
        ),
        pytest.param(not_ours, "not a spend journal", id="another-app"),
        pytest.param(damage, "damaged", id="damaged"),
        pytest.param(lambda path: path.mkdir(), "unable to open", id="directory"),
    ],
)
def test_an_unusable_file_is_refused_at_construction(
    harness: Harness, tmp_path: Path, prepare: Callable[[Path], object], message: str
) -> None:
    path = tmp_path / "spends.sqlite3"
    prepare(path)
    api = api_router()

    with pytest.raises(SpendJournalError, match=message) as caught:
        harness.client(api, spend_journal=path)

    assert str(path.resolve()) in str(caught.value)
    assert api.calls.call_count == 0


def test_a_journal_of_another_app_is_left_untouched(harness: Harness, tmp_path: Path) -> None:
    path = tmp_path / "app.sqlite3"
    not_ours(path)
    before = path.read_bytes()

    with pytest.raises(SpendJournalError):
        harness.client(api_router(), spend_journal=path)

    assert path.read_bytes() == before


def test_a_path_under_a_regular_file_is_refused(harness: Harness, tmp_path: Path) -> None:
    (tmp_path / "state").write_text("a file, not a directory")
    path = tmp_path / "state" / "spends.sqlite3"

    with pytest.raises(SpendJournalError) as caught:
        harness.client(api_router(), spend_journal=path)

    assert str(path) in str(caught.value)


@pytest.mark.skipif(
    sys.platform == "win32" or os.geteuid() == 0,
    reason="root (and Windows) ignore the permission bits this test relies on",
)
def test_a_read_only_journal_is_refused(harness: Harness, tmp_path: Path) -> None:
    path = tmp_path / "spends.sqlite3"
    SpendJournal(path)
    path.chmod(0o444)

    with pytest.raises(SpendJournalError, match=str(path)):
        harness.client(api_router(), spend_journal=path)


@pytest.mark.parametrize("value", [123, b"spends.sqlite3", True])
def test_a_journal_that_is_not_a_path_is_a_type_error(harness: Harness, value: object) -> None:
    with pytest.raises(TypeError, match="spend_journal must be a path"):
        harness.client(api_router(), spend_journal=value)


# -- the journal failing at run time never stops a spend ---------------------------------


def broken(*args: object, **kwargs: object) -> None:
    raise SpendJournalError("cannot write the spend journal: disk I/O error")


def unwritable(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """No entry can be written: `add`, and `add_and_claim` that the blocks use, fail."""
    monkeypatch.setattr(store.backend_class, "add", broken)
    monkeypatch.setattr(store.backend_class, "add_and_claim", broken)


def test_a_journal_that_cannot_be_written_still_sends_the_spend(
    harness: Harness,
    store: Store,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ledger = Ledger()
    client = journal_client(harness, ledger, store.target, max_retries=0)
    unwritable(store, monkeypatch)
    caplog.set_level(logging.WARNING, logger="amaimedia")

    meter = run_block(harness, client, "job-1")

    assert meter.charge is not None
    assert meter.state == "charged"
    assert ledger.charged == {"job-1": 5}
    [record] = caplog.records
    assert record.levelno == logging.WARNING
    assert "job-1" in record.getMessage()
    assert "without a journal entry" in record.getMessage()
    assert store.rows() == []

    ledger.down = True
    with pytest.raises(SpendFailedError) as caught:
        run_block(harness, client, "job-2")
    assert caught.value.journaled is False
    assert "stays pending" not in str(caught.value)
    assert caught.value.reference == "job-2"


def test_a_spend_that_cannot_be_marked_done_is_still_charged(
    harness: Harness,
    store: Store,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ledger = Ledger()
    client = journal_client(harness, ledger, store.target)
    caplog.set_level(logging.WARNING, logger="amaimedia")

    with monkeypatch.context() as patched:
        patched.setattr(store.backend_class, "mark_done", broken)
        meter = run_block(harness, client, "job-1")

    assert meter.state == "charged"
    assert meter.charge is not None
    assert "job-1" in caplog.text
    assert "charged but stays pending" in caplog.text
    assert pending_references(harness, client) == ["job-1"]
    # The entry was released: a replay settles it, and the server charges nothing new.
    assert [c.reference for c in harness.run(client.replay_pending())] == ["job-1"]
    assert pending_references(harness, client) == []
    assert ledger.charged == {"job-1": 5}


def test_a_failure_that_cannot_be_recorded_leaves_the_entry_pending(
    harness: Harness,
    store: Store,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ledger = Ledger()
    ledger.down = True
    client = journal_client(harness, ledger, store.target, max_retries=0)
    caplog.set_level(logging.WARNING, logger="amaimedia")
    monkeypatch.setattr(store.backend_class, "mark_failed", broken)

    with pytest.raises(SpendFailedError) as caught:
        run_block(harness, client, "job-1")

    assert caught.value.journaled is True
    assert "could not record the failure" in caplog.text
    [spend] = harness.run(client.pending_spends())
    assert (spend.reference, spend.attempts, spend.last_error) == ("job-1", 0, None)
    ledger.down = False
    assert [c.reference for c in harness.run(client.replay_pending())] == ["job-1"]


def test_a_journal_broken_after_construction_still_lets_the_spend_through(
    harness: Harness, store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    ledger = Ledger()
    client = journal_client(harness, ledger, store.target)
    caplog.set_level(logging.WARNING, logger="amaimedia")
    store.drop_table()

    meter = run_block(harness, client, "job-1")

    assert meter.charge is not None
    assert ledger.charged == {"job-1": 5}
    [record] = caplog.records
    assert "job-1 is sent without a journal entry" in record.getMessage()
    assert "cannot write the spend journal" in record.getMessage()


@pytest.mark.parametrize("spend_fails", [False, True], ids=["charged", "spend-failed"])
def test_a_journal_broken_during_the_spend_is_logged_not_raised(
    harness: Harness, store: Store, caplog: pytest.LogCaptureFixture, spend_fails: bool
) -> None:
    ledger = Ledger()
    ledger.down = spend_fails
    ledger.on_spend = lambda reference: store.drop_table()
    client = journal_client(harness, ledger, store.target, max_retries=0)
    caplog.set_level(logging.WARNING, logger="amaimedia")

    if spend_fails:
        with pytest.raises(SpendFailedError) as caught:
            run_block(harness, client, "job-1")
        assert caught.value.journaled is True
        # The spend's own warning, then the journal's.
        spend, journal = caplog.records
        assert spend.getMessage().startswith("spend of dub x3 failed (reference=job-1)")
        assert "could not record the failure" in journal.getMessage()
    else:
        meter = run_block(harness, client, "job-1")
        assert meter.charge is not None
        [journal] = caplog.records
        assert "job-1 was charged but stays pending" in journal.getMessage()


def refused_outcome(harness: Harness, store: Store, spend_fails: bool) -> tuple[Any, Ledger]:
    """A client whose block on `job-1` has its outcome refused by the storage, logged.

    Updates are refused while the spend is in flight, after the entry was written and
    claimed, and allowed again once the block is over.
    """
    ledger = Ledger()
    ledger.down = spend_fails
    ledger.on_spend = lambda reference: store.refuse_updates()
    client = journal_client(harness, ledger, store.target, max_retries=0)

    if spend_fails:
        with pytest.raises(SpendFailedError) as caught:
            run_block(harness, client, "job-1")
        assert caught.value.journaled is True
    else:
        assert run_block(harness, client, "job-1").charge is not None
    store.allow_updates()
    ledger.down = False
    ledger.on_spend = None
    [row] = store.rows()
    assert (row["reference"], row["state"], row["attempts"]) == ("job-1", "pending", 0)
    return client, ledger


@pytest.mark.parametrize("spend_fails", [False, True], ids=["charged", "spend-failed"])
def test_an_outcome_that_cannot_be_written_still_gives_the_claim_back(
    harness: Harness, store: Store, caplog: pytest.LogCaptureFixture, spend_fails: bool
) -> None:
    caplog.set_level(logging.WARNING, logger="amaimedia")
    refused_outcome(harness, store, spend_fails)
    assert REFUSED in caplog.text  # the outcome was refused, and logged

    # Another client (in PostgreSQL another session, as another worker's) finds it free.
    ledger = Ledger()
    other = journal_client(harness, ledger, store.target)
    report = harness.run(other.replay_pending())

    assert ([c.reference for c in report], report.held) == (["job-1"], [])
    assert [row["state"] for row in store.rows()] == ["done"]


@pytest.mark.parametrize("spend_fails", [False, True], ids=["charged", "spend-failed"])
def test_an_outcome_that_cannot_be_written_leaves_the_journal_usable(
    harness: Harness, store: Store, caplog: pytest.LogCaptureFixture, spend_fails: bool
) -> None:
    caplog.set_level(logging.WARNING, logger="amaimedia")
    client, ledger = refused_outcome(harness, store, spend_fails)
    assert REFUSED in caplog.text
    caplog.clear()

    # The same client goes on: its next block is journaled and settled, its replay works.
    assert run_block(harness, client, "job-2").charge is not None
    assert [c.reference for c in harness.run(client.replay_pending())] == ["job-1"]

    assert caplog.records == []
    assert {row["reference"]: row["state"] for row in store.rows()} == {
        "job-1": "done",
        "job-2": "done",
    }
    assert ledger.charged == {"job-1": 5, "job-2": 5}


def test_a_journal_that_cannot_be_read_is_an_error(harness: Harness, store: Store) -> None:
    client = journal_client(harness, Ledger(), store.target)
    store.drop_table()

    for call in (client.pending_spends, client.replay_pending):
        with pytest.raises(SpendJournalError, match="cannot read the spend journal"):
            harness.run(call())


# -- interrupted mid-spend ---------------------------------------------------------------


def test_an_interrupt_during_the_spend_leaves_the_entry_pending_and_unclaimed(
    harness: Harness, store: Store
) -> None:
    ledger = Ledger()
    ledger.replies.append(KeyboardInterrupt())
    client = journal_client(harness, ledger, store.target)

    with pytest.raises(KeyboardInterrupt):
        run_block(harness, client, "job-1")

    [spend] = harness.run(client.pending_spends())
    assert (spend.reference, spend.attempts, spend.last_error) == ("job-1", 0, None)
    other = store.open()
    assert other.claim(store.entry_id("job-1"))
    other.release(store.entry_id("job-1"))

    assert [c.reference for c in harness.run(client.replay_pending())] == ["job-1"]
    assert ledger.sent == ["job-1", "job-1"]
    assert ledger.charged == {"job-1": 5}


def test_an_interrupt_during_a_spend_that_was_not_journaled_propagates(
    harness: Harness, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    ledger = Ledger()
    ledger.replies.append(KeyboardInterrupt())
    client = journal_client(harness, ledger, store.target)
    unwritable(store, monkeypatch)

    with pytest.raises(KeyboardInterrupt):
        run_block(harness, client, "job-1")

    assert store.rows() == []
    assert ledger.sent == ["job-1"]


def test_an_interrupt_during_a_replay_releases_the_entry(harness: Harness, store: Store) -> None:
    ledger = Ledger()
    client = journal_client(harness, ledger, store.target, max_retries=0)
    leave_pending(harness, client, ledger, "job-1", "job-2")
    ledger.replies.append(KeyboardInterrupt())

    with pytest.raises(KeyboardInterrupt):
        harness.run(client.replay_pending())

    assert pending_references(harness, client) == ["job-1", "job-2"]
    other = store.open()  # another client finds both free
    for reference in ("job-1", "job-2"):
        assert other.claim(store.entry_id(reference))
        other.release(store.entry_id(reference))
    assert [c.reference for c in harness.run(client.replay_pending())] == ["job-1", "job-2"]


def test_a_block_that_fails_or_is_cancelled_writes_nothing(harness: Harness, store: Store) -> None:
    ledger = Ledger()
    client = journal_client(harness, ledger, store.target)

    if harness.is_async:

        async def blocks() -> None:
            with pytest.raises(ValueError, match="work failed"):
                async with client.metered("dub", 3, reference="job-1"):
                    raise ValueError("work failed")
            async with client.metered("dub", 3, reference="job-2") as meter:
                meter.cancel()

        harness.run(blocks())
    else:
        with pytest.raises(ValueError, match="work failed"), client.metered("dub", 3):
            raise ValueError("work failed")
        with client.metered("dub", 3, reference="job-2") as meter:
            meter.cancel()

    assert store.rows() == []
    assert ledger.sent == []


# -- the storage -------------------------------------------------------------------------


def test_the_journal_is_in_wal_mode(harness: Harness, tmp_path: Path) -> None:
    path = tmp_path / "spends.sqlite3"
    harness.client(api_router(), spend_journal=path)

    with contextlib.closing(sqlite3.connect(path)) as db:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert db.execute("PRAGMA user_version").fetchone() == (2,)


def test_done_entries_are_pruned_after_seven_days_when_a_journal_opens(store: Store) -> None:
    store.open()
    now = datetime.now(timezone.utc)
    old, recent = (now - timedelta(days=8)).isoformat(), (now - timedelta(days=6)).isoformat()
    for reference, created, state, done in [
        ("old-done", old, "done", old),
        ("recent-done", recent, "done", recent),
        ("old-pending", old, "pending", None),
    ]:
        store.execute(
            f"INSERT INTO {store.table} (scope, tool, units, reference, created_at, state, "
            "done_at) VALUES ('s', 'dub', '3', ?, ?, ?, ?)",
            reference,
            created,
            state,
            done,
        )
    assert len(store.rows()) == 3

    journal = store.open()

    assert [row["reference"] for row in store.rows()] == ["recent-done", "old-pending"]
    [kept] = journal.pending("s")
    assert (kept.spend.reference, kept.spend.created_at) == (
        "old-pending",
        now - timedelta(days=8),
    )


# -- claims ------------------------------------------------------------------------------


def test_journal_objects_on_one_file_share_their_claims(tmp_path: Path) -> None:
    path = tmp_path / "spends.sqlite3"
    first, second = SpendJournal(path), SpendJournal(tmp_path / "." / "spends.sqlite3")

    assert first.claim(7)
    assert not second.claim(7)
    assert not first.claim(7)
    assert second.claim(8)  # another entry is free
    first.release(7)
    assert second.claim(7)
    second.release(7)
    second.release(8)
    second.release(8)  # releasing what is not held does nothing
    assert first.claim(8)
    first.release(8)


def test_claim_pending_refuses_settled_and_unknown_entries(store: Store) -> None:
    journal = store.open()
    entry = journal.add("scope", "dub", 3, "job-1")

    assert journal.claim_pending(entry)
    assert not journal.claim_pending(entry)
    journal.mark_done(entry, 5)
    journal.release(entry)
    assert not journal.claim_pending(entry)
    assert not journal.claim_pending(entry + 100)
    assert journal.claim(entry)  # the refusals released what they took
    journal.release(entry)
    other = store.open()
    assert other.claim(entry)  # and nothing is left held for another client either
    assert not other.claim_pending(entry + 100)
    other.release(entry)
    assert journal.pending("scope") == []


def test_a_block_whose_entry_is_being_replayed_elsewhere_still_spends(
    harness: Harness, store: Store
) -> None:
    ledger = Ledger()
    client = journal_client(harness, ledger, store.target, max_retries=0)
    leave_pending(harness, client, ledger, "job-1")
    replayer = store.open()
    assert replayer.claim(store.entry_id("job-1"))

    meter = run_block(harness, client, "job-1")

    # The block sent its spend anyway; settling the entry is left to whoever holds it.
    assert meter.charge is not None
    assert ledger.charged == {"job-1": 5}
    assert pending_references(harness, client) == ["job-1"]
    report = harness.run(client.replay_pending())
    assert ([c.reference for c in report], [s.reference for s in report.held]) == ([], ["job-1"])
    replayer.release(store.entry_id("job-1"))
    assert [c.reference for c in harness.run(client.replay_pending())] == ["job-1"]
    assert ledger.charged == {"job-1": 5}


def test_concurrent_replays_send_each_entry_once(harness: Harness, store: Store) -> None:
    ledger = Ledger()
    references = [f"job-{n}" for n in range(8)]
    first = journal_client(harness, ledger, store.target, max_retries=0)
    leave_pending(harness, first, ledger, *references)
    second = journal_client(harness, ledger, store.target)
    ledger.sent.clear()
    ledger.delay = 0.01

    if harness.is_async:

        async def both() -> list[list[Charge]]:
            return list(await asyncio.gather(first.replay_pending(), second.replay_pending()))

        results = harness.run(both())
    else:
        start = threading.Barrier(2)
        results = [[], []]

        def replay(index: int, client: Any) -> None:
            start.wait()
            results[index] = client.replay_pending()

        threads = [
            threading.Thread(target=replay, args=pair) for pair in enumerate((first, second))
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    charged = [c.reference for result in results for c in result]
    assert sorted(charged) == references
    assert sorted(ledger.sent) == references  # each sent exactly once
    assert pending_references(harness, first) == []
    assert {row["state"] for row in store.rows()} == {"done"}


# -- edge cases found in review ----------------------------------------------------------


def test_a_trailing_slash_on_the_base_url_is_the_same_api(harness: Harness, store: Store) -> None:
    ledger = Ledger()
    client = journal_client(harness, ledger, store.target, max_retries=0)
    leave_pending(harness, client, ledger, "job-1")

    slashed = journal_client(harness, ledger, store.target, base_url="https://api.amaimedia.com/")

    assert pending_references(harness, slashed) == ["job-1"]


def test_a_failed_read_while_claiming_releases_the_claim(harness: Harness, store: Store) -> None:
    ledger = Ledger()
    client = journal_client(harness, ledger, store.target, max_retries=0)
    leave_pending(harness, client, ledger, "job-1")

    with (
        store.failing_state_check("database is locked"),
        pytest.raises(SpendJournalError, match="database is locked"),
    ):
        harness.run(client.replay_pending())

    other = store.open()
    assert other.claim(store.entry_id("job-1"))  # nobody holds it any more
    other.release(store.entry_id("job-1"))
    assert ledger.sent == ["job-1"]  # the entry whose check failed was not sent
    assert [c.reference for c in harness.run(client.replay_pending())] == ["job-1"]


def test_an_entry_held_elsewhere_is_still_reported_as_journaled(
    harness: Harness, store: Store
) -> None:
    ledger = Ledger()
    client = journal_client(harness, ledger, store.target, max_retries=0)
    leave_pending(harness, client, ledger, "job-1")
    replayer = store.open()
    assert replayer.claim(store.entry_id("job-1"))

    ledger.down = True
    with pytest.raises(SpendFailedError) as caught:
        run_block(harness, client, "job-1")

    assert caught.value.journaled is True
    assert "stays pending in the spend journal" in str(caught.value)
    [row] = store.rows()
    assert (row["reference"], row["state"]) == ("job-1", "pending")
    replayer.release(store.entry_id("job-1"))


def test_a_reused_reference_starts_a_fresh_history(harness: Harness, store: Store) -> None:
    ledger = Ledger()
    client = journal_client(harness, ledger, store.target, max_retries=0)
    leave_pending(harness, client, ledger, "job-1")
    harness.run(client.replay_pending())
    assert store.rows()[0]["state"] == "done"

    ledger.refuse["job-1"] = (403, "forbidden")
    with pytest.raises(SpendFailedError):
        run_block(harness, client, "job-1")

    [spend] = harness.run(client.pending_spends())
    assert (spend.attempts, spend.error_code) == (1, "forbidden")
    [row] = store.rows()
    assert (row["state"], row["charged"], row["done_at"]) == ("pending", None, None)


def test_a_journal_that_refuses_wal_mode_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_connect = sqlite3.connect

    class NoWal:
        """A connection whose file system cannot do WAL, as on some network shares."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            self._db = real_connect(*args, **kwargs)

        def execute(self, sql: str, *args: Any) -> Any:
            if sql == "PRAGMA journal_mode=WAL":
                return self._db.execute("PRAGMA journal_mode")
            return self._db.execute(sql, *args)

        def close(self) -> None:
            self._db.close()

    monkeypatch.setattr(sqlite3, "connect", NoWal)
    with pytest.raises(SpendJournalError, match="cannot be put in WAL mode"):
        SpendJournal(tmp_path / "spends.sqlite3")


# -- PostgreSQL alone: sessions, the schema table, roles and passwords -------------------


def with_login(url: str, user: str, password: str) -> str:
    """`url` with another user and password."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=f"{user}:{password}@{parts.hostname}:{parts.port}"))


def advisory_locks(store: PostgresStore) -> int:
    """How many advisory locks the sessions on the store's database hold."""
    [(count,)] = store.fetch(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted "
        "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
    )
    return int(count)


def test_postgres_spend_journal_property_is_the_url_without_its_password(
    harness: Harness, pg_store: PostgresStore
) -> None:
    parts = urlsplit(pg_store.url)
    assert parts.password

    client = harness.client(api_router(), spend_journal=pg_store.target)

    where = f"{parts.hostname}:{parts.port}{parts.path}"
    assert client.spend_journal == f"postgresql://{parts.username}@{where}"
    [journal] = pg_store.opened
    assert repr(journal) == f"PostgresSpendJournal({client.spend_journal!r})"
    assert parts.password not in repr(journal)


def test_postgres_journal_objects_in_one_process_claim_independently(
    pg_store: PostgresStore,
) -> None:
    first, second = pg_store.open(), pg_store.open()

    assert first.claim(7)
    assert not second.claim(7)  # another session, as another worker's
    assert not first.claim(7)  # nor twice by the one that holds it
    assert second.claim(8)
    assert not first.claim(8)
    assert advisory_locks(pg_store) == 2
    first.release(7)
    assert second.claim(7)
    second.release(7)
    second.release(8)
    second.release(8)  # releasing what is not held does nothing
    assert advisory_locks(pg_store) == 0
    assert first.claim(8)
    assert not second.claim(8)
    first.close()  # its session ends, and its claims with it, as when a worker dies
    assert second.claim(8)
    second.release(8)
    assert first.claim(8)  # a closed journal connects again when used
    first.release(8)
    assert advisory_locks(pg_store) == 0


def test_postgres_tables_already_made_are_reused(pg_store: PostgresStore) -> None:
    journal = pg_store.open()
    entry = journal.add("scope", "dub", 3, "job-1")
    journal.close()

    again = pg_store.open()

    assert [(e.id, e.spend.reference) for e in again.pending("scope")] == [(entry, "job-1")]
    assert pg_store.fetch("SELECT name, version FROM amaimedia_schema") == [("spends", 2)]
    tables = pg_store.fetch(
        "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename"
    )
    assert tables == [("amaimedia_schema",), ("amaimedia_spends",)]
    assert again.add("scope", "dub", 3, "job-2") > entry


def test_postgres_tables_of_another_app_are_left_untouched(pg_store: PostgresStore) -> None:
    pg_store.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
    pg_store.execute("INSERT INTO users VALUES (1, 'ada')")

    pg_store.open().add("scope", "dub", 3, "job-1")

    assert pg_store.fetch("SELECT id, name FROM users") == [(1, "ada")]
    assert [row["reference"] for row in pg_store.rows()] == ["job-1"]


def test_postgres_tables_already_made_need_no_create_privilege(
    harness: Harness, pg_store: PostgresStore
) -> None:
    pg_store.open()  # the tables, made by a role that may create them
    role, password = f"amai_worker_{secrets.token_hex(4)}", secrets.token_hex(12)
    database = urlsplit(pg_store.url).path.lstrip("/")
    pg_store.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{password}'")
    try:
        pg_store.execute(f"GRANT CONNECT ON DATABASE {database} TO {role}")
        pg_store.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
        pg_store.execute(f"GRANT USAGE ON SCHEMA public TO {role}")
        pg_store.execute(
            f"GRANT SELECT, INSERT, UPDATE, DELETE ON amaimedia_spends, amaimedia_schema TO {role}"
        )
        pg_store.execute(f"GRANT USAGE ON SEQUENCE amaimedia_spends_id_seq TO {role}")
        worker = with_login(pg_store.url, role, password)
        ledger = Ledger()
        client = journal_client(harness, ledger, worker, max_retries=0)
        leave_pending(harness, client, ledger, "job-1")

        assert [c.reference for c in harness.run(client.replay_pending())] == ["job-1"]
        assert [row["state"] for row in pg_store.rows()] == ["done"]

        # Without the tables, the role cannot make them: refused when the client is built.
        pg_store.close()
        pg_store.execute("DROP TABLE amaimedia_spends, amaimedia_schema")
        with pytest.raises(SpendJournalError, match="permission denied") as caught:
            journal_client(harness, ledger, worker)
        assert password not in str(caught.value)
    finally:
        pg_store.close()
        pg_store.execute(f"DROP OWNED BY {role}")
        pg_store.execute(f"DROP ROLE {role}")


def test_postgres_a_journal_of_a_newer_layout_is_refused(
    harness: Harness, pg_store: PostgresStore
) -> None:
    journal = pg_store.open()
    journal.add("scope", "dub", 3, "job-1")
    journal.add("scope", "dub", 3, "job-2")
    # An entry done long ago, which a journal that went on opening would prune.
    pg_store.execute(
        "UPDATE amaimedia_spends SET state = 'done', done_at = now() - interval '30 days' "
        "WHERE reference = 'job-2'"
    )
    pg_store.execute("UPDATE amaimedia_schema SET version = 3 WHERE name = 'spends'")
    before = pg_store.rows()
    api = api_router()

    with pytest.raises(SpendJournalError, match="layout version 3") as caught:
        harness.client(api, spend_journal=pg_store.target)

    assert "newer amaimedia" in str(caught.value)
    assert api.calls.call_count == 0
    assert pg_store.rows() == before
    assert pg_store.fetch("SELECT name, version FROM amaimedia_schema") == [("spends", 3)]


def test_postgres_a_wrong_password_is_refused_without_showing_it(
    harness: Harness, pg_store: PostgresStore
) -> None:
    parts = urlsplit(pg_store.url)
    assert parts.username is not None
    assert parts.password is not None
    wrong = f"wrong-{secrets.token_hex(8)}"
    api = api_router()

    with pytest.raises(SpendJournalError, match="password authentication failed") as caught:
        harness.client(api, spend_journal=with_login(pg_store.url, parts.username, wrong))

    error = caught.value
    assert f"postgresql://{parts.username}@{parts.hostname}:{parts.port}" in str(error)
    shown = [
        str(error),
        repr(error),
        "".join(traceback.format_exception(error)),
        str(error.__cause__),
        repr(error.__cause__),
    ]
    for text in shown:
        assert wrong not in text
        assert parts.password not in text
    assert api.calls.call_count == 0
    with pytest.raises(SpendJournalError) as direct:
        PostgresSpendJournal(with_login(pg_store.url, parts.username, wrong))
    assert wrong not in f"{direct.value} {direct.value!r}"
