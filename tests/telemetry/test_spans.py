"""OpenTelemetry spans: names, kinds, parentage, attributes and status, on both clients.

Each body runs against the sync and the async client (`harness`), on an offline
`FakeAmaiServer` in process, with private SDK providers (`telemetry`) passed to the client.
Waits between retries are recorded by the harness, not slept.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from typing import Any

import httpx
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind, StatusCode

from amaimedia import APIConnectionError, InsufficientCreditsError, ServerError, SpendFailedError
from amaimedia.testing import FakeAmaiServer
from tests.answers import QUOTE
from tests.conftest import Harness

from .otel import Telemetry, fake_client, run_block

SERVER = {"server.address": "fake.amaimedia.invalid", "server.port": 443}


class WorkFailed(Exception):
    pass


def parent_of(span: ReadableSpan) -> int | None:
    return None if span.parent is None else span.parent.span_id


def span_id(span: ReadableSpan) -> int:
    assert span.context is not None
    return int(span.context.span_id)


def test_a_check_is_one_client_span(
    harness: Harness, fake: FakeAmaiServer, key: str, telemetry: Telemetry
) -> None:
    client = fake_client(harness, fake, key, **telemetry.providers)

    harness.run(client.check("dub", 2))

    [span] = telemetry.spans()
    assert span.name == "amaimedia.check"
    assert span.kind is SpanKind.CLIENT
    assert span.parent is None
    assert dict(span.attributes or {}) == {
        "amaimedia.tool": "dub",
        "amaimedia.units": 2,
        "amaimedia.cost_tokens": 80,
        **SERVER,
    }
    assert span.status.status_code is StatusCode.UNSET
    assert span.instrumentation_scope is not None
    assert span.instrumentation_scope.name == "amaimedia"
    from amaimedia._version import __version__

    assert span.instrumentation_scope.version == __version__


def test_a_retried_spend_is_one_span_with_its_resend_count(
    harness: Harness, fake: FakeAmaiServer, key: str, telemetry: Telemetry
) -> None:
    fake.fail_next("spend", status=429, retry_after=1)
    client = fake_client(harness, fake, key, **telemetry.providers)

    harness.run(client.spend("chat", 3, reference="job-1"))

    assert harness.sleeps == [1]
    [span] = telemetry.spans()
    assert (span.name, span.kind) == ("amaimedia.spend", SpanKind.CLIENT)
    assert dict(span.attributes or {}) == {
        "amaimedia.tool": "chat",
        "amaimedia.units": 3,
        "amaimedia.reference": "job-1",
        "amaimedia.charged": 15,
        "http.request.resend_count": 1,
        **SERVER,
    }
    assert span.status.status_code is StatusCode.UNSET


def test_a_spend_sent_once_has_no_resend_count(
    harness: Harness, fake: FakeAmaiServer, key: str, telemetry: Telemetry
) -> None:
    client = fake_client(harness, fake, key, **telemetry.providers)

    harness.run(client.spend("chat", reference="job-1"))

    assert "http.request.resend_count" not in (telemetry.span("amaimedia.spend").attributes or {})


def test_a_spend_that_failed_for_good_is_an_error_span(
    harness: Harness, fake: FakeAmaiServer, key: str, telemetry: Telemetry
) -> None:
    fake.fail_next("spend", status=503, times=3)
    client = fake_client(harness, fake, key, max_retries=2, **telemetry.providers)

    with pytest.raises(ServerError):
        harness.run(client.spend("chat", reference="job-1"))

    [span] = telemetry.spans()
    assert span.name == "amaimedia.spend"
    assert span.status.status_code is StatusCode.ERROR
    attributes = dict(span.attributes or {})
    assert attributes["error.type"] == "server_error"  # the API's stable error string
    assert attributes["http.request.resend_count"] == 2
    assert "amaimedia.charged" not in attributes


def test_a_failure_without_an_error_string_is_named_by_its_class(
    harness: Harness, fake: FakeAmaiServer, key: str, telemetry: Telemetry
) -> None:
    fake.fail_next("check", drop=True)
    client = fake_client(harness, fake, key, max_retries=0, **telemetry.providers)

    with pytest.raises(APIConnectionError) as raised:
        harness.run(client.check("chat"))

    span = telemetry.span("amaimedia.check")
    assert span.status.status_code is StatusCode.ERROR
    assert (span.attributes or {})["error.type"] == type(raised.value).__name__


def test_a_metered_block_is_the_parent_of_its_check_and_spend(
    harness: Harness, fake: FakeAmaiServer, key: str, telemetry: Telemetry
) -> None:
    client = fake_client(harness, fake, key, **telemetry.providers)

    meter = run_block(harness, client.metered("chat", 2))

    block = telemetry.span("amaimedia.metered")
    check, spend = telemetry.span("amaimedia.check"), telemetry.span("amaimedia.spend")
    assert block.kind is SpanKind.INTERNAL
    assert block.parent is None
    assert parent_of(check) == parent_of(spend) == span_id(block)
    assert dict(block.attributes or {}) == {
        "amaimedia.tool": "chat",
        "amaimedia.units": 2,
        "amaimedia.reference": meter.reference,
        "amaimedia.outcome": "charged",
        "amaimedia.cost_tokens": 10,
        "amaimedia.charged": 10,
    }
    assert (spend.attributes or {})["amaimedia.reference"] == meter.reference
    assert block.status.status_code is StatusCode.UNSET


def test_the_block_span_is_current_while_the_work_runs(
    harness: Harness, fake: FakeAmaiServer, key: str, telemetry: Telemetry
) -> None:
    client = fake_client(harness, fake, key, **telemetry.providers)
    tracer = telemetry.tracer_provider.get_tracer("the-app")

    def work(_: Any) -> None:
        with tracer.start_as_current_span("work"):
            pass

    run_block(harness, client.metered("chat"), work)

    assert parent_of(telemetry.span("work")) == span_id(telemetry.span("amaimedia.metered"))
    # And no longer once the block is over.
    assert trace.get_current_span() is trace.INVALID_SPAN


def test_a_block_whose_work_raised_has_no_spend_span(
    harness: Harness, fake: FakeAmaiServer, key: str, telemetry: Telemetry
) -> None:
    client = fake_client(harness, fake, key, **telemetry.providers)

    def work(_: Any) -> None:
        raise WorkFailed("the caller's own data")

    with pytest.raises(WorkFailed):
        run_block(harness, client.metered("chat"), work)

    assert sorted(span.name for span in telemetry.spans()) == [
        "amaimedia.check",
        "amaimedia.metered",
    ]
    block = telemetry.span("amaimedia.metered")
    assert block.status.status_code is StatusCode.ERROR
    # The work's exception may hold anything: only its class is told.
    assert block.status.description is None
    attributes = dict(block.attributes or {})
    assert attributes["error.type"] == "WorkFailed"
    assert attributes["amaimedia.outcome"] == "failed"
    assert fake.spends == []


def test_a_cancelled_block_has_no_spend_span_and_no_error(
    harness: Harness, fake: FakeAmaiServer, key: str, telemetry: Telemetry
) -> None:
    client = fake_client(harness, fake, key, **telemetry.providers)

    run_block(harness, client.metered("chat"), lambda meter: meter.cancel())

    assert sorted(span.name for span in telemetry.spans()) == [
        "amaimedia.check",
        "amaimedia.metered",
    ]
    block = telemetry.span("amaimedia.metered")
    assert block.status.status_code is StatusCode.UNSET
    assert (block.attributes or {})["amaimedia.outcome"] == "cancelled"
    assert "error.type" not in (block.attributes or {})


def test_a_block_refused_on_entry_ends_in_error(
    harness: Harness, fake: FakeAmaiServer, telemetry: Telemetry
) -> None:
    poor = fake.create_key(balance=1)
    client = fake_client(harness, fake, poor, **telemetry.providers)

    with pytest.raises(InsufficientCreditsError):
        run_block(harness, client.metered("image"))

    block, check = telemetry.span("amaimedia.metered"), telemetry.span("amaimedia.check")
    assert parent_of(check) == span_id(block)
    assert check.status.status_code is StatusCode.UNSET  # the check itself answered
    assert block.status.status_code is StatusCode.ERROR
    attributes = dict(block.attributes or {})
    assert attributes["error.type"] == "insufficient_credits"
    assert attributes["amaimedia.outcome"] == "refused"
    assert attributes["amaimedia.refusal"] == "balance"
    assert trace.get_current_span() is trace.INVALID_SPAN


def test_a_block_whose_spend_failed_ends_in_error_under_its_spend(
    harness: Harness, fake: FakeAmaiServer, key: str, telemetry: Telemetry
) -> None:
    fake.fail_next("spend", status=503, times=2)
    client = fake_client(harness, fake, key, max_retries=1, **telemetry.providers)

    with pytest.raises(SpendFailedError):
        run_block(harness, client.metered("chat"))

    block, spend = telemetry.span("amaimedia.metered"), telemetry.span("amaimedia.spend")
    assert parent_of(spend) == span_id(block)
    assert spend.status.status_code is StatusCode.ERROR
    assert (spend.attributes or {})["error.type"] == "server_error"
    assert block.status.status_code is StatusCode.ERROR
    attributes = dict(block.attributes or {})
    assert attributes["error.type"] == "SpendFailedError"
    assert attributes["amaimedia.outcome"] == "spend_failed"


def test_a_check_that_failed_at_entry_ends_the_block_in_error(
    harness: Harness, fake: FakeAmaiServer, telemetry: Telemetry
) -> None:
    fake.revoke(revoked := fake.create_key())
    client = fake_client(harness, fake, revoked, **telemetry.providers)

    with pytest.raises(Exception, match="auth"):
        run_block(harness, client.metered("chat"))

    block = telemetry.span("amaimedia.metered")
    assert block.status.status_code is StatusCode.ERROR
    assert (block.attributes or {})["error.type"] == "auth_required"
    assert "amaimedia.outcome" not in (block.attributes or {})


def test_the_call_span_is_current_while_its_request_is_sent(
    harness: Harness, key: str, telemetry: Telemetry
) -> None:
    # What an instrumented httpx would parent its own span to.
    seen: list[trace.Span] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(trace.get_current_span())
        return httpx.Response(200, json=QUOTE)

    http = harness.http_client(transport=httpx.MockTransport(handler))
    client = harness.client(http_client=http, api_key=key, **telemetry.providers)

    harness.run(client.check("chat"))

    [current] = seen
    assert current.get_span_context().span_id == span_id(telemetry.span("amaimedia.check"))
    assert trace.get_current_span() is trace.INVALID_SPAN


def test_calls_nest_under_the_callers_span(
    harness: Harness, fake: FakeAmaiServer, key: str, telemetry: Telemetry
) -> None:
    client = fake_client(harness, fake, key, **telemetry.providers)
    tracer = telemetry.tracer_provider.get_tracer("the-app")

    with tracer.start_as_current_span("request"):
        harness.run(client.spend("chat", reference="job-1"))

    assert parent_of(telemetry.span("amaimedia.spend")) == span_id(telemetry.span("request"))


def test_a_block_left_in_another_context_ends_quietly(
    fake: FakeAmaiServer, key: str, telemetry: Telemetry, caplog: pytest.LogCaptureFixture
) -> None:
    # Entered in one task and left in another (an exit stack handed over, a fixture's
    # setup and teardown): the span ends, and nothing is logged of the context.
    from amaimedia import AsyncAmaiClient

    async def main() -> None:
        http = httpx.AsyncClient(transport=fake.async_transport())
        async with AsyncAmaiClient(api_key=key, http_client=http, **telemetry.providers) as c:
            block = c.metered("chat")
            await asyncio.create_task(block.__aenter__())
            await asyncio.create_task(block.__aexit__(None, None, None))
        await http.aclose()

    with caplog.at_level(logging.DEBUG):
        contextvars.copy_context().run(asyncio.run, main())

    assert telemetry.span("amaimedia.metered").status.status_code is StatusCode.UNSET
    assert [r for r in caplog.records if r.name.startswith("opentelemetry")] == []
    assert len(fake.spends) == 1
