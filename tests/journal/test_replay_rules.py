"""What a replay sends, skips and reports (`ReplayRules`, `ReplayReport`), and claims that
an async caller cancelled mid-way gives back.

The age rules run in both clients; the CLI's tests drive them through the sync one, these
through both. The cancellations are the async client's alone: it takes a claim in a worker
thread, and a task cancelled while the thread runs must not strand what the thread took.
"""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from amaimedia import ReplayReport, SpendFailedError
from amaimedia._journal._protocol import EntryId, PendingSpend
from amaimedia._journal._replay import ReplayRules
from amaimedia._journal._sqlite import SQLiteSpendJournal
from amaimedia._types import Units
from amaimedia.testing import FakeAmaiServer
from tests.conftest import Harness

DEADLINE = 30.0


def spend(age: timedelta, now: datetime) -> PendingSpend:
    return PendingSpend("chat", 1, "job-1", now - age, 0, None, None)


# -- the rules ---------------------------------------------------------------------------


def test_each_entry_goes_where_its_age_says() -> None:
    now = datetime(2026, 12, 2, tzinfo=timezone.utc)
    rules = ReplayRules(max_age=timedelta(days=7), older_than=60)
    report = ReplayReport()

    sent = [
        rules.sort(spend(age, now), report, now)
        for age in (timedelta(seconds=10), timedelta(hours=1), timedelta(days=8))
    ]

    assert sent == [False, True, False]
    assert [s.created_at for s in report.young] == [now - timedelta(seconds=10)]
    assert [s.created_at for s in report.stale] == [now - timedelta(days=8)]
    assert report.left_pending == 2


def test_without_a_max_age_nothing_is_stale() -> None:
    now = datetime(2026, 12, 2, tzinfo=timezone.utc)
    report = ReplayReport()
    assert ReplayRules(max_age=None).sort(spend(timedelta(days=3650), now), report, now)
    assert report.stale == []


@pytest.mark.parametrize(
    ("arguments", "error", "message"),
    [
        ({"max_age": -1}, ValueError, "max_age must be a number of seconds from 0"),
        ({"max_age": float("inf")}, ValueError, "max_age must be a number of seconds from 0"),
        ({"older_than": float("nan")}, ValueError, "older_than must be a number"),
        ({"older_than": timedelta(days=-1)}, ValueError, "older_than must be a number"),
        ({"max_age": 1e300}, ValueError, "max_age must be a number of seconds from 0"),
        ({"max_age": "7d"}, TypeError, "max_age must be a number of seconds or a timedelta"),
        ({"older_than": True}, TypeError, "older_than must be a number of seconds"),
        ({"max_age": 10, "older_than": 60}, ValueError, r"older_than \(0:01:00\) exceeds"),
    ],
)
def test_impossible_ages_are_refused(arguments: dict[str, Any], error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        ReplayRules(**arguments)


def test_the_report_is_the_list_of_charges_with_the_rest_beside_it() -> None:
    report = ReplayReport()
    assert report == []
    assert report.charged == []
    assert repr(report) == (
        "ReplayReport(charged=0, failed=0, stale=0, held=0, young=0, refused=0)"
    )


def test_both_clients_leave_young_and_stale_entries_alone(
    harness: Harness, tmp_path: Path
) -> None:
    fake = FakeAmaiServer()
    key = fake.create_key()
    make = fake.async_client if harness.is_async else fake.client
    client = make(key, spend_journal=tmp_path / "spends.sqlite3", max_retries=0)
    fake.fail_next("spend", status=503)
    with pytest.raises(SpendFailedError):
        run_block(harness, client)

    young = harness.run(client.replay_pending(older_than=3600))
    stale = harness.run(client.replay_pending(max_age=0))

    assert [(s.reference, len(young)) for s in young.young] == [("job-1", 0)]
    assert [(s.reference, len(stale)) for s in stale.stale] == [("job-1", 0)]
    assert fake.spends == []
    charged = harness.run(client.replay_pending())
    assert [c.reference for c in charged] == ["job-1"]


def run_block(harness: Harness, client: Any) -> None:
    if harness.is_async:

        async def block() -> None:
            async with client.metered("chat", reference="job-1"):
                pass

        harness.run(block())
        return
    with client.metered("chat", reference="job-1"):
        pass


# -- claims given back to a cancelled caller ---------------------------------------------


class SlowJournal(SQLiteSpendJournal):
    """An SQLite journal whose claims take a while: long enough to cancel the caller."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.claiming = threading.Event()

    def add_and_claim(
        self, scope: str, tool: str, units: Units, reference: str, **row: Any
    ) -> tuple[EntryId, bool]:
        self.claiming.set()
        time.sleep(0.3)
        return super().add_and_claim(scope, tool, units, reference, **row)

    def claim_pending(self, entry: EntryId) -> bool:
        self.claiming.set()
        time.sleep(0.3)
        return super().claim_pending(entry)


def wait_for_claim(journal: SQLiteSpendJournal, entry: EntryId) -> None:
    """Poll until `entry` can be claimed again: the cancelled caller's claim was given back."""
    started = time.monotonic()
    while not journal.claim(entry):
        assert time.monotonic() - started < DEADLINE, "the cancelled claim was never given back"
        time.sleep(0.02)
    journal.release(entry)


async def cancel_when_claiming(journal: SlowJournal, work: Any) -> None:
    task = asyncio.ensure_future(work)
    while not journal.claiming.is_set():
        await asyncio.sleep(0.005)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def test_a_block_cancelled_while_its_entry_is_claimed_gives_the_claim_back(
    tmp_path: Path,
) -> None:
    fake = FakeAmaiServer()
    key = fake.create_key()
    journal = SlowJournal(tmp_path / "spends.sqlite3")

    async def block() -> None:
        client = fake.async_client(key, spend_journal=journal)
        async with client.metered("chat", reference="job-1"):
            pass

    asyncio.run(cancel_when_claiming(journal, block()))

    [scope] = scopes(journal)
    [entry] = journal.pending(scope)
    wait_for_claim(journal, entry.id)
    assert fake.spends == []  # cancelled before the spend was sent: pending, for a replay


def test_a_replay_cancelled_while_claiming_gives_the_claim_back(tmp_path: Path) -> None:
    fake = FakeAmaiServer()
    key = fake.create_key()
    journal = SlowJournal(tmp_path / "spends.sqlite3")
    client = fake.client(key, spend_journal=journal, max_retries=0)
    fake.fail_next("spend", status=503)
    with pytest.raises(SpendFailedError), client.metered("chat", reference="job-1"):
        pass
    journal.claiming.clear()

    async def replay() -> None:
        await fake.async_client(key, spend_journal=journal).replay_pending()

    asyncio.run(cancel_when_claiming(journal, replay()))

    [scope] = scopes(journal)
    [entry] = journal.pending(scope)
    wait_for_claim(journal, entry.id)
    assert fake.spends == []


def scopes(journal: SQLiteSpendJournal) -> list[str]:
    """The scopes of the journal's entries: the test never derives one from the key."""
    return sorted(
        {str(row[0]) for row in journal._execute("read", ("SELECT scope FROM spends", ()))}
    )
