"""A rotated key's pending entries: adopted when asked for, never automatically.

Entries are scoped to the key that wrote them, so after a rotation the new key's client
sees none of the old key's: `pending_spends()` is empty while they are still pending.
`replay_pending(previous_keys=[old])` adopts those whose code checks out under the old key
(each is moved to the new key's scope, sealed anew) and sends them with the new key, once.
The old keys are checked like any key, and never logged, stored, sent or kept in a frame.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from amaimedia import ReplayReport, SpendFailedError
from tests.answers import KEY
from tests.conftest import Harness
from tests.journal.ledger import Ledger, journal_client, leave_pending, pending_references
from tests.journal.sealing import keys, scope_of
from tests.journal.stores import KINDS, Store, open_store
from tests.journal.test_postgres import sdk_frames_holding

OLD_KEY = "amai_live_rotated_0123456789abcdefOLDK"


@pytest.fixture(params=KINDS)
def store(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Store]:
    with open_store(request.param, request, tmp_path, monkeypatch) as opened:
        yield opened


def replay(harness: Harness, client: Any, **options: Any) -> ReplayReport:
    report: ReplayReport = harness.run(client.replay_pending(**options))
    return report


def bearer(ledger: Ledger, after: int) -> list[str]:
    """The key each spend request of the ledger was sent with, after the first `after`."""
    return [
        request.headers["authorization"].removeprefix("Bearer ")
        for request in ledger.requests[after:]
        if request.url.path.endswith("/spend")
    ]


def test_after_a_rotation_the_old_keys_entries_are_adopted_only_when_asked(
    harness: Harness, store: Store
) -> None:
    ledger = Ledger()
    old = journal_client(harness, ledger, store.target, max_retries=0, api_key=OLD_KEY)
    leave_pending(harness, old, ledger, "job-1", "job-2")
    new = journal_client(harness, ledger, store.target, max_retries=0)
    before = len(ledger.requests)

    # The issue: after the rotation, pending_spends() is empty while rows are pending.
    assert pending_references(harness, new) == []
    assert list(replay(harness, new)) == []
    assert bearer(ledger, before) == []

    report = replay(harness, new, previous_keys=[OLD_KEY])

    assert [c.reference for c in report] == ["job-1", "job-2"]
    assert bearer(ledger, before) == [KEY, KEY]  # sent with the new key, never the old one
    assert ledger.charged == {"job-1": 5, "job-2": 5}
    new_scope = scope_of(store.target, KEY)
    assert {(r["reference"], r["scope"], r["state"]) for r in store.rows()} == {
        ("job-1", new_scope, "done"),
        ("job-2", new_scope, "done"),
    }
    assert pending_references(harness, old) == []
    assert list(replay(harness, new, previous_keys=[OLD_KEY])) == []  # once only


def test_an_adopted_entry_that_fails_is_the_new_keys_pending_entry(
    harness: Harness, store: Store
) -> None:
    ledger = Ledger()
    old = journal_client(harness, ledger, store.target, max_retries=0, api_key=OLD_KEY)
    leave_pending(harness, old, ledger, "job-1")
    new = journal_client(harness, ledger, store.target, max_retries=0)
    ledger.down = True

    report = replay(harness, new, previous_keys=[OLD_KEY])

    assert [s.reference for s in report.failed] == ["job-1"]
    [spend] = harness.run(new.pending_spends())  # adopted: the new key's own now
    assert (spend.reference, spend.attempts) == ("job-1", 2)
    assert harness.run(old.pending_spends()) == []
    ledger.down = False
    assert [c.reference for c in replay(harness, new)] == ["job-1"]  # no previous_keys needed


def test_a_previous_keys_entry_changed_without_it_is_refused_not_adopted(
    harness: Harness, store: Store
) -> None:
    ledger = Ledger()
    old = journal_client(harness, ledger, store.target, max_retries=0, api_key=OLD_KEY)
    leave_pending(harness, old, ledger, "job-1", "job-2")
    store.execute(f"UPDATE {store.table} SET units = '240' WHERE reference = 'job-1'")
    new = journal_client(harness, ledger, store.target, max_retries=0)
    ledger.sent.clear()

    report = replay(harness, new, previous_keys=[OLD_KEY])

    assert [c.reference for c in report] == ["job-2"]
    assert ledger.sent == ["job-2"]
    [refused] = report.refused
    assert (refused.reference, refused.kind, refused.units) == ("job-1", "tampered", "240")
    old_scope = scope_of(store.target, OLD_KEY)
    assert {r["reference"]: r["scope"] for r in store.rows()}["job-1"] == old_scope


def test_an_old_entry_the_new_key_has_as_well_is_left_as_it_was(
    harness: Harness, store: Store
) -> None:
    ledger = Ledger()
    old = journal_client(harness, ledger, store.target, max_retries=0, api_key=OLD_KEY)
    leave_pending(harness, old, ledger, "job-1")
    new = journal_client(harness, ledger, store.target, max_retries=0)
    leave_pending(harness, new, ledger, "job-1")  # the same job, under the new key too
    ledger.sent.clear()

    report = replay(harness, new, previous_keys=[OLD_KEY])

    assert [c.reference for c in report] == ["job-1"]  # the new key's own entry
    assert ledger.sent == ["job-1"]
    [refused] = report.refused
    assert (refused.reference, refused.kind) == ("job-1", "duplicate")
    old_scope = scope_of(store.target, OLD_KEY)
    states = sorted((r["scope"] == old_scope, r["state"]) for r in store.rows())
    assert states == [(False, "done"), (True, "pending")]
    # Given back: another replay, or another worker, can take it.
    assert len(replay(harness, new, previous_keys=[OLD_KEY]).refused) == 1


def test_the_current_key_and_repeats_among_previous_keys_adopt_nothing(
    harness: Harness, store: Store
) -> None:
    ledger = Ledger()
    client = journal_client(harness, ledger, store.target, max_retries=0)
    leave_pending(harness, client, ledger, "job-1")

    report = replay(harness, client, previous_keys=[KEY, OLD_KEY, OLD_KEY])

    assert [c.reference for c in report] == ["job-1"]
    assert report.refused == []


@pytest.mark.parametrize(
    ("previous", "error", "message"),
    [
        (OLD_KEY, TypeError, r"wrap a single key in a list: previous_keys=\[old_key\]"),
        (b"amai_live_bytes", TypeError, "wrap a single key in a list"),
        (42, TypeError, "previous_keys must be a list of API keys, got int"),
        ([OLD_KEY, 42], TypeError, r"previous_keys\[1\] must be a str, got int"),
        ([OLD_KEY + " x"], ValueError, r"previous_keys\[0\] contains whitespace"),
        ([""], ValueError, r"previous_keys\[0\] is empty"),
    ],
)
def test_previous_keys_are_checked_before_the_journal_is_read(
    harness: Harness, store: Store, previous: Any, error: type[Exception], message: str
) -> None:
    ledger = Ledger()
    client = journal_client(harness, ledger, store.target, max_retries=0)
    leave_pending(harness, client, ledger, "job-1")
    ledger.sent.clear()

    with pytest.raises(error, match=message) as caught:
        harness.run(client.replay_pending(previous_keys=previous))

    assert ledger.sent == []
    assert "rotated_0123456789" not in str(caught.value)
    # The SDK's frames (the test's own hold the key by design) keep none of it.
    assert sdk_frames_holding(caught.value, "rotated_0123456789") == []


def test_previous_keys_never_show_in_the_logs_or_the_journal(
    harness: Harness, store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="amaimedia")
    ledger = Ledger()
    old = journal_client(harness, ledger, store.target, max_retries=0, api_key=OLD_KEY)
    leave_pending(harness, old, ledger, "job-1")
    store.execute(f"UPDATE {store.table} SET units = '9' WHERE reference = 'job-1'")
    leave_pending(harness, old, ledger, "job-2")
    caplog.clear()
    new = journal_client(harness, ledger, store.target, max_retries=0)
    ledger.down = True

    report = replay(harness, new, previous_keys=[OLD_KEY])

    assert report.refused  # something was logged of both
    assert report.failed
    assert caplog.records
    secret = OLD_KEY.removeprefix("amai_live_")
    assert secret not in caplog.text
    assert secret.encode() not in store.dump()
    assert "rotated" not in repr(new)
    # Nor are keys derived from it left in the client for the next replay.
    assert keys(OLD_KEY).scope("x") not in repr(vars(type(new)))


def test_a_block_cancelled_meanwhile_does_not_stop_adoption(
    harness: Harness, store: Store
) -> None:
    """A replay with previous keys beside an old key's worker that is still running."""
    ledger = Ledger()
    old = journal_client(harness, ledger, store.target, max_retries=0, api_key=OLD_KEY)
    leave_pending(harness, old, ledger, "job-1")
    holder = store.open()
    assert holder.claim(store.entry_id("job-1"))  # the old worker is sending it right now
    new = journal_client(harness, ledger, store.target, max_retries=0)

    report = replay(harness, new, previous_keys=[OLD_KEY])

    assert [s.reference for s in report.held] == ["job-1"]
    assert scope_of(store.target, OLD_KEY) in {r["scope"] for r in store.rows()}
    holder.release(store.entry_id("job-1"))
    assert [c.reference for c in replay(harness, new, previous_keys=[OLD_KEY])] == ["job-1"]


def test_an_interrupt_while_sending_an_adopted_entry_leaves_it_adopted_and_pending(
    harness: Harness, store: Store
) -> None:
    ledger = Ledger()
    old = journal_client(harness, ledger, store.target, max_retries=0, api_key=OLD_KEY)
    leave_pending(harness, old, ledger, "job-1")
    new = journal_client(harness, ledger, store.target, max_retries=0)
    ledger.replies.append(KeyboardInterrupt())

    with pytest.raises(KeyboardInterrupt):
        replay(harness, new, previous_keys=[OLD_KEY])

    assert pending_references(harness, new) == ["job-1"]
    assert [c.reference for c in replay(harness, new)] == ["job-1"]
    assert ledger.charged == {"job-1": 5}


def test_failed_spends_of_the_old_key_were_journaled(harness: Harness, store: Store) -> None:
    """The old key's blocks as the issue leaves them: failed, journaled, pending."""
    ledger = Ledger()
    ledger.down = True
    old = journal_client(harness, ledger, store.target, max_retries=0, api_key=OLD_KEY)
    with pytest.raises(SpendFailedError) as caught:
        harness.run(_block(harness, old))
    assert caught.value.journaled is True


async def _async_block(client: Any) -> None:
    async with client.metered("dub", 3, reference="job-1"):
        pass


def _block(harness: Harness, client: Any) -> Any:
    if harness.is_async:
        return _async_block(client)
    with client.metered("dub", 3, reference="job-1"):
        pass
    return None
