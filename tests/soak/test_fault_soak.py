"""Fault soak: over a thousand metered blocks against `FakeAmaiServer` on real sockets.

A seeded schedule injects every fault the API or its edge can produce (429 with and
without Retry-After, 5xx with JSON and with HTML, connections cut before processing and
after the spend committed, answers slower than the client's timeout, garbage bodies, a
402 between quote and spend), while some blocks raise on purpose, cancel themselves, or
have their task cancelled. Sync blocks run in a thread pool, async blocks as many tasks,
over httpx's own transport and over aiohttp's.

Afterwards the ledger holds exactly the blocks that completed plus the SpendFailedErrors
that were replayed, each once; every failure was a typed AmaiError; each block that saw
exactly its planned faults ended as the documented retry rules say; and no piece of any
key appears in the logs, the exceptions, their tracebacks or the journal.

The seed is printed; set AMAI_FAULT_SEED to replay another schedule.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest

import amaimedia._retry
from amaimedia import AiohttpTransport, AmaiClient, AsyncAmaiClient
from amaimedia.testing import FakeAmaiServer

from .reliability.faults import (
    MAX_RETRIES,
    MAX_RETRY_AFTER,
    SEED,
    TIMEOUT,
    BlockPlan,
    make_plans,
)
from .reliability.secrets import SecretScanner, exception_texts, record_texts
from .reliability.soak import (
    START_BALANCE,
    AsyncRecordingTransport,
    Lane,
    Recorder,
    RecordingTransport,
    Tally,
    check_lanes,
    run_async_lane,
    run_sync_lane,
)

pytestmark = pytest.mark.slow

SYNC_LANES, SYNC_BLOCKS = 16, 40  # 640 blocks on 16 threads
ASYNC_LANES, ASYNC_BLOCKS = 20, 20  # 400 blocks, each its own task, per transport
JOURNALED_EVERY = 4  # one lane in four keeps a spend journal (one file for them all)


@pytest.fixture(autouse=True)
def fast_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """Milliseconds between retries instead of seconds; the rules stay the same."""
    monkeypatch.setattr(amaimedia._retry, "INITIAL_RETRY_DELAY", 0.001)
    monkeypatch.setattr(amaimedia._retry, "MAX_RETRY_DELAY", 0.004)


@pytest.fixture
def debug_logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    for name in ("amaimedia", "httpx", "httpcore", "aiohttp"):
        caplog.set_level(logging.DEBUG, logger=name)
    return caplog


@pytest.fixture
def servers() -> Iterator[ExitStack]:
    with ExitStack() as stack:
        yield stack


def open_lanes(servers: ExitStack, mode: str, count: int) -> list[Lane]:
    lanes = []
    for n in range(count):
        fake = FakeAmaiServer()
        key = fake.create_key(balance=START_BALANCE)
        base_url = servers.enter_context(fake.serve())
        journaled = n % JOURNALED_EVERY == JOURNALED_EVERY - 1
        lanes.append(Lane(f"{mode}-{n}", fake, base_url, key, journaled))
    return lanes


def plan_lanes(lanes: list[Lane], blocks: int, *, is_async: bool) -> dict[str, list[BlockPlan]]:
    rng = random.Random(f"{SEED}-{'async' if is_async else 'sync'}")
    tools = sorted(FakeAmaiServer.DEFAULT_PRICES)
    return {
        lane.name: make_plans(rng, blocks, lane.name, tools=tools, is_async=is_async)
        for lane in lanes
    }


def lane_client(lane: Lane, journal: Path, http: httpx.Client) -> AmaiClient:
    return AmaiClient(
        api_key=lane.key,
        base_url=lane.base_url,
        timeout=TIMEOUT,
        max_retries=MAX_RETRIES,
        max_retry_after=MAX_RETRY_AFTER,
        http_client=http,
        spend_journal=journal if lane.journaled else None,
    )


def async_lane_client(lane: Lane, journal: Path, http: httpx.AsyncClient) -> AsyncAmaiClient:
    return AsyncAmaiClient(
        api_key=lane.key,
        base_url=lane.base_url,
        timeout=TIMEOUT,
        max_retries=MAX_RETRIES,
        max_retry_after=MAX_RETRY_AFTER,
        http_client=http,
        spend_journal=journal if lane.journaled else None,
    )


def report(
    title: str, tally: Tally, problems: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with capsys.disabled():
        print(f"\n{tally.summary(f'{title} (AMAI_FAULT_SEED={SEED})')}")
    shown = "\n".join(problems[:25])
    assert not problems, f"{len(problems)} problems, the first ones:\n{shown}"


def assert_no_secret_anywhere(lanes: list[Lane], records: list[logging.LogRecord]) -> None:
    """The planted-secret check over everything the soak produced, the locals of the
    frames in the tracebacks included."""
    scanner = SecretScanner(lane.key for lane in lanes)
    assert not scanner.leaks("no key here"), "the scanner must not flag innocent text"
    assert scanner.leaks(f"Bearer {lanes[0].key}"), "the scanner must flag a key in use"
    assert any(r.name.startswith("httpx") for r in records), "httpx's logs too"
    assert any("Retrying" in r.getMessage() for r in records), "and the SDK's retry lines"
    leaks = scanner.leaking(record_texts(records))
    with_locals: set[type[BaseException]] = set()
    for lane in lanes:
        for result in lane.results:
            if result.error is None:
                continue
            # Frame locals are costly to render: once per error class is enough to catch
            # a key held in a local anywhere on the path.
            first = type(result.error) not in with_locals
            with_locals.add(type(result.error))
            leaks += scanner.leaking(exception_texts(result.error, with_locals=first))
        for spend in lane.pending:
            leaks += scanner.leaking(
                [("PendingSpend", repr(spend)), ("last_error", str(spend.last_error))]
            )
    assert leaks == [], f"a piece of an API key leaks in: {sorted(set(leaks))[:20]}"


def test_sync_blocks_in_a_thread_pool_are_charged_exactly_once(
    tmp_path: Path,
    servers: ExitStack,
    debug_logs: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    lanes = open_lanes(servers, "sync", SYNC_LANES)
    plans = plan_lanes(lanes, SYNC_BLOCKS, is_async=False)
    recorder = Recorder()
    journal = tmp_path / "spends.sqlite3"

    with httpx.Client(transport=RecordingTransport(recorder)) as http:
        # Built here, one after another: clients that open one fresh journal at the same
        # moment can fail (see test_clients_opening_a_fresh_journal_at_once_both_succeed).
        clients = {lane.name: lane_client(lane, journal, http) for lane in lanes}

        def run(lane: Lane) -> None:
            with clients[lane.name] as client:
                run_sync_lane(lane, client, plans[lane.name], recorder)

        with ThreadPoolExecutor(max_workers=len(lanes)) as pool:
            list(pool.map(run, lanes))

    tally, problems = check_lanes(lanes)
    report(f"fault soak, sync, {SYNC_LANES} threads", tally, problems, capsys)
    assert tally.blocks == SYNC_LANES * SYNC_BLOCKS
    assert_no_secret_anywhere(lanes, debug_logs.records)


@pytest.mark.parametrize("transport", ["httpx", "aiohttp"])
def test_async_blocks_as_many_tasks_are_charged_exactly_once(
    transport: str,
    tmp_path: Path,
    servers: ExitStack,
    debug_logs: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    if transport == "aiohttp":
        pytest.importorskip("aiohttp")
    lanes = open_lanes(servers, "async", ASYNC_LANES)
    plans = plan_lanes(lanes, ASYNC_BLOCKS, is_async=True)
    recorder = Recorder()
    journal = tmp_path / "spends.sqlite3"

    async def main() -> None:
        inner = AiohttpTransport() if transport == "aiohttp" else None
        recording = AsyncRecordingTransport(recorder, inner)
        async with httpx.AsyncClient(transport=recording) as http:

            async def run(lane: Lane) -> None:
                async with async_lane_client(lane, journal, http) as client:
                    await run_async_lane(lane, client, plans[lane.name], recorder)

            await asyncio.gather(*(run(lane) for lane in lanes))

    asyncio.run(main())

    tally, problems = check_lanes(lanes)
    title = f"fault soak, async over {transport}, {ASYNC_LANES * ASYNC_BLOCKS} tasks"
    report(title, tally, problems, capsys)
    assert tally.blocks == ASYNC_LANES * ASYNC_BLOCKS
    assert_no_secret_anywhere(lanes, debug_logs.records)
