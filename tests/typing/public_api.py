"""Type-checked, never run: the public API reads as users will write it.

`scripts/check` runs `mypy --strict` on this file, so a change that breaks users' type
checking (a lost return type, an Any leaking out) fails CI like a failing test.
"""

from __future__ import annotations

import ssl
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
from typing_extensions import assert_type

import amaimedia
from amaimedia import (
    NOT_GIVEN,
    AiohttpTransport,
    AmaiClient,
    AmaiError,
    APIConnectionError,
    AsyncAmaiClient,
    Charge,
    InsufficientCreditsError,
    Meter,
    NotGiven,
    PendingSpend,
    PostgresSpendJournal,
    Quote,
    RateLimitError,
    RawResponse,
    RefusedSpend,
    ReplayReport,
    SpendFailedError,
    SpendJournal,
    ToolName,
)


def deployment_usage() -> None:
    context = ssl.create_default_context(cafile="corporate-ca.pem")
    client = AmaiClient(
        api_key="amai_live_x",
        verify=context,
        proxy="http://proxy.internal:3128",
        trust_env=False,
        total_timeout=20.0,
    )
    assert_type(client.total_timeout, float | None)
    assert_type(client.with_options(total_timeout=None), AmaiClient)
    aclient = AsyncAmaiClient(api_key="amai_live_x", verify="corporate-ca.pem", total_timeout=5)
    assert_type(aclient.with_options(total_timeout=2.5), AsyncAmaiClient)
    assert_type(AiohttpTransport(verify=False, proxy=None, trust_env=True), AiohttpTransport)
    try:
        client.check("chat")
    except APIConnectionError as exc:
        assert_type(exc.retryable, bool)


def sync_usage() -> None:
    with AmaiClient(api_key="amai_live_x", timeout=httpx.Timeout(5.0)) as client:
        assert_type(client, AmaiClient)
        assert_type(client.check("chat"), Quote)
        assert_type(client.check("a-tool-the-sdk-does-not-know", 2.5), Quote)
        charge = client.spend("dub", units=3, reference="job-42")
        assert_type(charge, Charge)
        assert_type(charge.reference, str)
        assert_type(charge.charged, int)
        assert_type(client.with_options(timeout=None, max_retries=0), AmaiClient)
        assert_type(client.base_url, httpx.URL)
        try:
            client.spend("dub")
        except InsufficientCreditsError as exc:
            assert_type(exc.cost_tokens, int | None)
            assert_type(exc.balance, int | None)
        except RateLimitError as exc:
            assert_type(exc.retry_after, float | None)
        except AmaiError as exc:
            assert_type(exc.message, str)


def answer_metadata_usage(client: AmaiClient) -> None:
    assert_type(client.check("chat").request_id, str | None)
    assert_type(client.spend("chat", reference="job-1").request_id, str | None)
    raw = client.with_raw_response.check("chat")
    assert_type(raw, RawResponse[Quote])
    assert_type(raw.parse(), Quote)
    assert_type(raw.headers, httpx.Headers)
    assert_type(raw.status_code, int)
    assert_type(raw.request_id, str | None)
    assert_type(raw.http_response, httpx.Response)
    spent = client.with_raw_response.spend("dub", 3, reference="job-42")
    assert_type(spent, RawResponse[Charge])
    assert_type(spent.parse().reference, str)
    client.with_raw_response.spend("dub", 3, "job-42")  # type: ignore[call-arg]


async def async_answer_metadata_usage(aclient: AsyncAmaiClient) -> None:
    raw = await aclient.with_raw_response.check("chat", 2.5)
    assert_type(raw, RawResponse[Quote])
    assert_type(raw.parse(), Quote)
    assert_type(await aclient.with_raw_response.spend("chat"), RawResponse[Charge])


def metered_usage(client: AmaiClient) -> None:
    try:
        with client.metered("dub", units=3, reference="job-1") as meter:
            assert_type(meter, Meter)
            assert_type(meter.quote, Quote)
            assert_type(meter.reference, str)
            meter.units = 2.5
        assert_type(meter.charge, Charge | None)
    except SpendFailedError as exc:
        assert_type(exc.reference, str)
        assert_type(exc.units, int | float)

    def reference(job_id: int, prompt: str) -> str:
        return f"job-{job_id}"

    @client.metered("chat", reference=reference)
    def answer(job_id: int, prompt: str) -> str:
        return prompt

    assert_type(answer(1, "hi"), str)
    assert_type(client.pending_spends(), list[PendingSpend])
    report = client.replay_pending(max_age=timedelta(days=2), older_than=30)
    assert_type(report, ReplayReport)
    charges: list[Charge] = report  # still the list of charges it was in 0.1
    assert_type(charges[0].charged, int)
    assert_type(report.stale, list[PendingSpend])
    assert_type(report.left_pending, int)
    # After a key rotation: the old key's entries, adopted explicitly.
    rotated = client.replay_pending(previous_keys=["amai_live_old"], adopt_unauthenticated=False)
    assert_type(rotated.refused, list[RefusedSpend])
    for refused in rotated.refused:
        assert_type(refused.reason, str)
        if refused.kind == "tampered":
            assert_type(refused.units, str)


async def async_metered_usage(aclient: AsyncAmaiClient) -> None:
    async with aclient.metered("voice_clone", units=12) as meter:
        assert_type(meter, Meter)

    @aclient.metered("chat")
    async def answer(prompt: str) -> str:
        return prompt

    assert_type(await answer("hi"), str)
    assert_type(await aclient.pending_spends(), list[PendingSpend])
    assert_type(await aclient.replay_pending(max_age=None), ReplayReport)
    assert_type(await aclient.replay_pending(previous_keys=("amai_live_old",)), ReplayReport)


async def async_usage() -> None:
    async with AsyncAmaiClient() as aclient:
        assert_type(aclient, AsyncAmaiClient)
        assert_type(await aclient.check("chat"), Quote)
        assert_type(await aclient.spend("chat"), Charge)
        assert_type(aclient.with_options(max_retry_after=10), AsyncAmaiClient)


async def aiohttp_usage() -> None:
    async with AsyncAmaiClient(transport="aiohttp") as aclient:
        assert_type(await aclient.check("chat"), Quote)
    AsyncAmaiClient(transport="uvloop")  # type: ignore[arg-type]
    AmaiClient(transport="aiohttp")  # type: ignore[call-arg]
    transport = AiohttpTransport(max_connections=10)
    async with httpx.AsyncClient(transport=transport) as http:
        assert_type(AsyncAmaiClient(http_client=http), AsyncAmaiClient)


def names() -> None:
    tool: ToolName = "voice_clone"
    assert_type(NOT_GIVEN, NotGiven)
    assert_type(amaimedia.__version__, str)
    del tool


def testing_kit_usage() -> None:
    from amaimedia.testing import FakeAmaiServer, RecordedRequest, SpendRecord

    fake = FakeAmaiServer(prices={"chat": 7})
    key = fake.create_key(balance=100)
    assert_type(key, str)
    assert_type(fake.client(key, max_retries=0), AmaiClient)
    assert_type(fake.async_client(key), AsyncAmaiClient)
    assert_type(fake.balance(key), int)
    assert_type(fake.spends, list[SpendRecord])
    assert_type(fake.requests, list[RecordedRequest])
    fake.fail_next("spend", status=429, retry_after=1)
    fake.fail_next("check", status=302, headers={"location": "https://elsewhere.example/"})
    for request in fake.requests:
        assert_type(request.headers, tuple[tuple[str, str], ...])
        assert_type(request.content, bytes)
    with fake.serve() as base_url:
        assert_type(base_url, str)


def journal_usage(connection: psycopg.Connection[Any]) -> None:
    shared = PostgresSpendJournal("postgresql://app@db.internal/app", max_connections=2)
    assert_type(shared, PostgresSpendJournal)
    journal: SpendJournal = shared  # the backend is a SpendJournal
    with AmaiClient(api_key="amai_live_x", spend_journal=journal) as client:
        assert_type(client.spend_journal, str | None)
        with connection.transaction():
            assert_type(client.add_pending_spend(connection, "dub", 3, reference="j-1"), str)
    AmaiClient(api_key="amai_live_x", spend_journal="postgresql://app@db.internal/app")
    AmaiClient(api_key="amai_live_x", spend_journal=Path("spends.sqlite3"))


async def async_outbox_usage(
    aclient: AsyncAmaiClient, connection: psycopg.AsyncConnection[Any]
) -> None:
    async with connection.transaction():
        assert_type(await aclient.add_pending_spend(connection, "chat"), str)
