"""OpenTelemetry metrics: the counters agree with the offline server's ledger, the gauge
follows the spend journal, and the instruments are made once per pair of providers.

Each body runs against both clients (`harness`), on a `FakeAmaiServer` in process, with
private SDK providers read by an in-memory reader (`telemetry`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from amaimedia import InsufficientCreditsError, ServerError, SpendFailedError
from amaimedia._telemetry import recorder_for
from amaimedia.testing import FakeAmaiServer
from tests.conftest import Harness

from .otel import Telemetry, fake_client, run_block


def total(points: list[tuple[dict[str, Any], Any]]) -> Any:
    return sum(value for _, value in points)


def test_tokens_charged_sum_to_the_ledger(
    harness: Harness, fake: FakeAmaiServer, key: str, telemetry: Telemetry
) -> None:
    client = fake_client(harness, fake, key, **telemetry.providers)
    harness.run(client.spend("chat", 2, reference="job-1"))
    harness.run(client.spend("dub", 1, reference="job-2"))
    # Charged, then the answer lost: the retry with the same reference is charged once.
    fake.fail_next("spend", drop_after_commit=True)
    harness.run(client.spend("image", 1, reference="job-3"))
    run_block(harness, client.metered("sfx", 3))
    run_block(harness, client.metered("chat"), lambda meter: meter.cancel())
    with pytest.raises(ValueError, match="work"):
        run_block(harness, client.metered("chat"), lambda _: int("work"))

    points = telemetry.points("amaimedia.tokens.charged")
    by_tool: dict[str, int] = {}
    for row in fake.spends:
        by_tool[row.tool] = by_tool.get(row.tool, 0) + row.charged
    assert {attributes["amaimedia.tool"]: value for attributes, value in points} == by_tool
    assert all(set(attributes) == {"amaimedia.tool"} for attributes, _ in points)
    assert total(points) == sum(row.charged for row in fake.spends) > 0


def test_a_reference_the_app_spends_again_is_counted_again(
    harness: Harness, fake: FakeAmaiServer, key: str, telemetry: Telemetry
) -> None:
    # The server answers a replayed reference with the original charge, and nothing in
    # the answer tells a replay: the counter adds each successful answer's `charged`, as
    # documented. (A retry inside one call is one answer, counted once: see above.)
    client = fake_client(harness, fake, key, **telemetry.providers)
    first = harness.run(client.spend("chat", reference="job-1"))
    second = harness.run(client.spend("chat", reference="job-1"))

    assert total(telemetry.points("amaimedia.tokens.charged")) == first.charged + second.charged


def test_spend_failures_count_each_spend_that_failed_for_good(
    harness: Harness, fake: FakeAmaiServer, key: str, telemetry: Telemetry
) -> None:
    client = fake_client(harness, fake, key, max_retries=1, **telemetry.providers)
    fake.fail_next("spend", status=503, times=4)
    with pytest.raises(ServerError):
        harness.run(client.spend("chat", reference="job-1"))  # two attempts, one failure
    with pytest.raises(SpendFailedError):
        run_block(harness, client.metered("chat"))  # two more
    poor = fake_client(harness, fake, fake.create_key(balance=0), **telemetry.providers)
    with pytest.raises(InsufficientCreditsError):
        harness.run(poor.spend("chat", reference="job-2"))
    harness.run(client.spend("chat", reference="job-3"))  # no failure

    points = telemetry.points("amaimedia.spend.failures")
    assert sorted((attributes["error.type"], value) for attributes, value in points) == [
        ("insufficient_credits", 1),
        ("server_error", 2),
    ]


def test_the_duration_histogram_counts_each_call_by_operation_and_failure(
    harness: Harness, fake: FakeAmaiServer, key: str, telemetry: Telemetry
) -> None:
    client = fake_client(harness, fake, key, max_retries=0, **telemetry.providers)
    harness.run(client.check("chat"))
    harness.run(client.check("chat"))
    harness.run(client.spend("chat", reference="job-1"))
    fake.fail_next("spend", status=503)
    with pytest.raises(ServerError):
        harness.run(client.spend("chat", reference="job-2"))

    metric = telemetry.metrics()["amaimedia.client.operation.duration"]
    assert metric.unit == "s"
    counts = {
        tuple(sorted((point.attributes or {}).items())): getattr(point, "count", None)
        for point in metric.data.data_points
    }
    assert counts == {
        (("amaimedia.operation", "check"),): 2,
        (("amaimedia.operation", "spend"),): 1,
        (("amaimedia.operation", "spend"), ("error.type", "server_error")): 1,
    }


def test_refused_blocks_are_counted_by_tool_and_reason(
    harness: Harness, fake: FakeAmaiServer, telemetry: Telemetry
) -> None:
    client = fake_client(harness, fake, fake.create_key(balance=10), **telemetry.providers)
    run_block(harness, client.metered("chat"))  # 5 of the 10
    with pytest.raises(InsufficientCreditsError):
        run_block(harness, client.metered("image"))  # 20

    assert telemetry.points("amaimedia.metered.refused") == [
        ({"amaimedia.tool": "image", "amaimedia.refusal": "balance"}, 1)
    ]


def test_a_block_refused_by_admission_is_counted_as_reserved(
    harness: Harness, fake: FakeAmaiServer, telemetry: Telemetry
) -> None:
    # Funds for one chat block: the second is allowed by its quote, refused by the book.
    client = fake_client(harness, fake, fake.create_key(balance=5), **telemetry.providers)
    first = client.metered("chat")
    if harness.is_async:
        harness.run(first.__aenter__())
    else:
        first.__enter__()
    with pytest.raises(InsufficientCreditsError, match="blocks in flight"):
        run_block(harness, client.metered("chat"))
    if harness.is_async:
        harness.run(first.__aexit__(None, None, None))
    else:
        first.__exit__(None, None, None)

    assert telemetry.points("amaimedia.metered.refused") == [
        ({"amaimedia.tool": "chat", "amaimedia.refusal": "reserved"}, 1)
    ]
    [refused] = [
        span
        for span in telemetry.spans()
        if span.attributes and span.attributes.get("amaimedia.refusal")
    ]
    assert refused.attributes is not None
    assert refused.attributes["amaimedia.refusal"] == "reserved"


def test_the_counters_have_their_units(
    harness: Harness, fake: FakeAmaiServer, key: str, telemetry: Telemetry
) -> None:
    client = fake_client(harness, fake, key, **telemetry.providers)
    harness.run(client.spend("chat", reference="job-1"))

    assert telemetry.metrics()["amaimedia.tokens.charged"].unit == "{token}"


def test_the_journal_gauge_follows_the_pending_spends(
    harness: Harness, fake: FakeAmaiServer, key: str, telemetry: Telemetry, tmp_path: Path
) -> None:
    journal = tmp_path / "spends.sqlite3"
    client = fake_client(
        harness, fake, key, max_retries=0, spend_journal=journal, **telemetry.providers
    )
    harness.run(client.check("chat"))
    assert telemetry.points("amaimedia.journal.pending") == [
        ({"amaimedia.journal.location": str(journal)}, 0)
    ]

    fake.fail_next("spend", status=503)
    with pytest.raises(SpendFailedError):
        run_block(harness, client.metered("chat"))
    assert total(telemetry.points("amaimedia.journal.pending")) == 1

    harness.run(client.replay_pending())
    assert total(telemetry.points("amaimedia.journal.pending")) == 0
    assert len(fake.spends) == 1


def test_the_journal_gauge_counts_a_scope_once(
    harness: Harness, fake: FakeAmaiServer, key: str, telemetry: Telemetry, tmp_path: Path
) -> None:
    # A with_options copy shares its original's journal and scope.
    client = fake_client(
        harness,
        fake,
        key,
        max_retries=0,
        spend_journal=tmp_path / "spends.sqlite3",
        **telemetry.providers,
    )
    copy = client.with_options(timeout=5)
    fake.fail_next("spend", status=503)
    with pytest.raises(SpendFailedError):
        run_block(harness, copy.metered("chat"))
    harness.run(client.check("chat"))

    assert total(telemetry.points("amaimedia.journal.pending")) == 1


def test_no_journal_gauge_without_a_journal(
    harness: Harness, fake: FakeAmaiServer, key: str, telemetry: Telemetry
) -> None:
    client = fake_client(harness, fake, key, **telemetry.providers)
    harness.run(client.check("chat"))

    assert "amaimedia.journal.pending" not in telemetry.metrics()


def test_a_journal_that_cannot_be_read_is_left_out_of_the_gauge(
    harness: Harness,
    fake: FakeAmaiServer,
    key: str,
    telemetry: Telemetry,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from amaimedia._exceptions import SpendJournalError
    from amaimedia._journal import ScopedJournal

    client = fake_client(
        harness, fake, key, spend_journal=tmp_path / "spends.sqlite3", **telemetry.providers
    )
    harness.run(client.check("chat"))

    def broken(self: ScopedJournal) -> list[Any]:
        raise SpendJournalError("the disk is gone")

    monkeypatch.setattr(ScopedJournal, "pending", broken)
    # The reader gets the other instruments, and no exception.
    assert telemetry.points("amaimedia.journal.pending") == []
    assert "amaimedia.client.operation.duration" in telemetry.metrics()


def test_instruments_are_made_once_per_pair_of_providers(telemetry: Telemetry) -> None:
    first = recorder_for(telemetry.tracer_provider, telemetry.meter_provider)
    again = recorder_for(telemetry.tracer_provider, telemetry.meter_provider)
    other = Telemetry()
    try:
        elsewhere = recorder_for(other.tracer_provider, telemetry.meter_provider)
    finally:
        other.shutdown()

    assert first is not None
    assert first is again
    assert elsewhere is not first


def test_copies_and_clients_share_one_recorder(
    harness: Harness, fake: FakeAmaiServer, key: str, telemetry: Telemetry
) -> None:
    client = fake_client(harness, fake, key, **telemetry.providers)
    other = fake_client(harness, fake, key, **telemetry.providers)
    copy = client.with_options(timeout=5)

    recorders = {id(c._observer.recorder()) for c in (client, other, copy)}
    assert len(recorders) == 1
