"""One client shared by many threads or tasks, at scale, while the server misbehaves.

One `FakeAmaiServer` on loopback, one client, faults queued by every block for whoever
comes next: 16 threads on one `AmaiClient` with a spend journal, 500 tasks on one
`AsyncAmaiClient` (over httpx's transport, and over aiohttp's). Exactly-once must hold
whatever the interleaving; afterwards no connection is left checked out of the client's
own pool, and the pool is empty once the client is closed. Then the async pool at its
limit: a request cancelled while it waits behind 100 busy connections, and a burst of 500
checks with a short timeout, both leave the client working.

Elsewhere: the same clients used hard by a script that then exits,
`tests/wire/test_interpreter_exit.py`; the races these runs found between clients opening
one new spend journal, replayed deterministically, `tests/journal/test_opening.py`.
"""

from __future__ import annotations

import asyncio
import random
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal

import httpx
import pytest

import amaimedia._retry
from amaimedia import (
    AiohttpTransport,
    AmaiClient,
    APITimeoutError,
    AsyncAmaiClient,
    Quote,
)
from amaimedia._transports._routing import AsyncRoutingTransport
from amaimedia.testing import FakeAmaiServer
from tests.pools import aiohttp_sessions, connections, slots, transport_of

from .reliability.faults import (
    MAX_RETRIES,
    MAX_RETRY_AFTER,
    SEED,
    TIMEOUT,
    BlockPlan,
    make_plans,
)
from .reliability.soak import START_BALANCE, Lane, arun_block, check_lanes, run_block

pytestmark = pytest.mark.slow

THREADS, BLOCKS_PER_THREAD = 16, 20
TASKS = 500
POOL_SIZE = 100  # httpx's default max_connections, which the SDK's own client keeps


@pytest.fixture(autouse=True)
def fast_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(amaimedia._retry, "INITIAL_RETRY_DELAY", 0.001)
    monkeypatch.setattr(amaimedia._retry, "MAX_RETRY_DELAY", 0.004)


def shared_faults(fake: FakeAmaiServer, plan: BlockPlan) -> None:
    """Queue a block's faults on the shared server: any request may take them."""
    for endpoint, faults in (("check", plan.check), ("spend", plan.spend)):
        for fault in faults:
            fake.fail_next(endpoint, **fault.options)


def assert_nothing_checked_out(client: AmaiClient | AsyncAmaiClient) -> None:
    """Every connection left in the pool is idle: none was leaked by a cut or a timeout."""
    transport = transport_of(client)
    if isinstance(transport, AiohttpTransport | AsyncRoutingTransport):
        # One slot per connection in use: all of them free again.
        assert slots(client).in_use == 0
    if isinstance(transport, AiohttpTransport):
        return
    held = connections(client)
    assert held, "the pool was used"
    busy = [repr(c) for c in held if not c.is_idle()]
    assert busy == [], f"connections still checked out: {busy}"


def assert_pool_closed(client: AmaiClient | AsyncAmaiClient) -> None:
    assert client.is_closed
    transport = transport_of(client)
    if isinstance(transport, AiohttpTransport):
        assert aiohttp_sessions(transport) == []
    else:
        assert connections(client) == []


def summary(title: str, lane: Lane, capsys: pytest.CaptureFixture[str]) -> None:
    tally, problems = check_lanes([lane], planned=False)
    requests = lane.fake.requests
    faulted = sum(1 for r in requests if r.status is None or r.status != 200)
    with capsys.disabled():
        print(
            f"\n{title} (AMAI_FAULT_SEED={SEED}): {tally.blocks} blocks "
            f"{dict(sorted(tally.outcomes.items()))}; {len(requests)} requests reached the "
            f"server, {faulted} of them answered with an error status or cut; "
            f"ledger {tally.charges} charges, {tally.replays} replays"
        )
    shown = "\n".join(problems[:25])
    assert not problems, f"{len(problems)} problems, the first ones:\n{shown}"


def test_one_sync_client_shared_by_16_threads(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fake = FakeAmaiServer()
    key = fake.create_key(balance=START_BALANCE)
    rng = random.Random(f"{SEED}-threads")
    with fake.serve() as base_url:
        lane = Lane("threads", fake, base_url, key, journaled=True)
        plans = make_plans(
            rng, THREADS * BLOCKS_PER_THREAD, "threads", tools=["chat", "dub"], is_async=False
        )
        client = AmaiClient(
            api_key=key,
            base_url=base_url,
            timeout=TIMEOUT,
            max_retries=MAX_RETRIES,
            max_retry_after=MAX_RETRY_AFTER,
            spend_journal=tmp_path / "spends.sqlite3",
        )
        with client:

            def work(batch: list[BlockPlan]) -> None:
                for plan in batch:
                    shared_faults(fake, plan)
                    lane.results.append(run_block(client, plan))

            batches = [plans[n::THREADS] for n in range(THREADS)]
            with ThreadPoolExecutor(max_workers=THREADS) as pool:
                list(pool.map(work, batches))

            fake.reset_faults()
            lane.ledger_before_replay = fake.spends
            lane.pending = client.pending_spends()
            lane.replayed = client.replay_pending()
            lane.pending_after = client.pending_spends()
            # A call after the burst proves the pool still serves, and leaves it in use.
            client.with_options(timeout=30).check("chat")
            assert_nothing_checked_out(client)
        assert_pool_closed(client)

    summary(f"{THREADS} threads, one AmaiClient", lane, capsys)


@pytest.mark.parametrize("transport", ["httpx", "aiohttp"])
def test_one_async_client_shared_by_500_tasks(
    transport: Literal["httpx", "aiohttp"], capsys: pytest.CaptureFixture[str]
) -> None:
    if transport == "aiohttp":
        pytest.importorskip("aiohttp")
    fake = FakeAmaiServer()
    key = fake.create_key(balance=START_BALANCE)
    rng = random.Random(f"{SEED}-tasks")
    plans = make_plans(rng, TASKS, "tasks", tools=["music", "sfx"], is_async=True)
    with fake.serve() as base_url:
        lane = Lane("tasks", fake, base_url, key, journaled=False)

        async def main() -> None:
            client = AsyncAmaiClient(
                api_key=key,
                base_url=base_url,
                # Answers slower than TIMEOUT fail as planned; waiting for one of the
                # pool's connections is not limited, so that the blocks queued behind
                # the first 100 get their turn instead of timing out at the check.
                timeout=httpx.Timeout(TIMEOUT, pool=None),
                max_retries=MAX_RETRIES,
                max_retry_after=MAX_RETRY_AFTER,
                transport=transport,
            )
            # All 500 blocks at once, on either transport: five times the pool's size.
            async with client:

                async def one(plan: BlockPlan) -> None:
                    shared_faults(fake, plan)
                    lane.results.append(await arun_block(client, plan))

                await asyncio.gather(*(one(plan) for plan in plans))
                fake.reset_faults()
                lane.ledger_before_replay = fake.spends
                lane.replayed = [
                    await client.spend(e.tool, e.units, reference=e.reference)
                    for e in lane.spend_failures()
                ]
                # A call after the burst proves the pool still serves, and leaves it in
                # use: a loaded machine may have seen every earlier connection time out.
                await client.with_options(timeout=30).check("chat")
                assert_nothing_checked_out(client)
            assert_pool_closed(client)

        asyncio.run(main())

    summary(f"{TASKS} tasks, one AsyncAmaiClient over {transport}", lane, capsys)


def test_a_request_cancelled_while_queued_leaks_no_connection() -> None:
    """httpcore 1.0.9 (encode/httpcore#1093): a request cancelled while it waits in the
    pool's queue, just as a connection is assigned to it, leaves that connection
    CONNECTING for good; once all 100 are lost, every request fails with PoolTimeout. The
    SDK's async pool lets no more requests into httpcore than it has connections: the
    others wait in the SDK's own slots, where cancelling one is harmless. Replayed here:
    every connection busy, one more request queued, then all of them cancelled together."""
    fake = FakeAmaiServer()
    key = fake.create_key()
    # Every connection of the pool busy: the answers are held until the server stops.
    fake.fail_next("check", delay=30, times=POOL_SIZE)

    async def main(base_url: str) -> tuple[list[str], int, Quote]:
        async with AsyncAmaiClient(api_key=key, base_url=base_url, max_retries=0) as client:
            queued: asyncio.Future[Any] | None = None

            async def hold(n: int) -> None:
                try:
                    await client.check("chat")
                finally:
                    # One caller gives up on both of its requests at once, as a TaskGroup
                    # or a timeout around them does.
                    if n == 0 and queued is not None:
                        queued.cancel()

            holders = [asyncio.ensure_future(hold(n)) for n in range(POOL_SIZE)]
            while len(fake.requests) < POOL_SIZE:
                await asyncio.sleep(0.01)
            queued = asyncio.ensure_future(client.check("chat"))
            await asyncio.sleep(0.05)
            assert not queued.done()
            assert slots(client).in_use == POOL_SIZE
            for holder in holders:  # the first one's slot goes to the queued request
                holder.cancel()
            await asyncio.gather(*holders, queued, return_exceptions=True)
            left = [connection.info() for connection in connections(client)]
            return left, slots(client).in_use, await client.check("chat")

    with fake.serve() as base_url:
        left, in_use, quote = asyncio.run(main(base_url))

    assert "CONNECTING" not in " ".join(left)
    assert in_use == 0
    assert quote.allowed


def test_a_burst_past_the_pool_with_a_short_timeout_leaves_the_client_working() -> None:
    """500 checks at once with a 0.3 s timeout on httpx's pool: each one answers or times
    out, and the client works afterwards, with no connection lost. (On httpcore's own
    queue, this burst lost every connection of the pool, stuck "connecting", and left the
    client failing every call.) How many answer in time depends on the machine's load:
    on a loaded one, none may, and the burst is still what loses connections there."""
    fake = FakeAmaiServer()
    key = fake.create_key()

    async def main(base_url: str) -> tuple[list[object], list[str], Quote, int]:
        async with AsyncAmaiClient(
            api_key=key, base_url=base_url, timeout=0.3, max_retries=0
        ) as client:
            outcomes = await asyncio.gather(
                *(client.check("chat") for _ in range(TASKS)), return_exceptions=True
            )
            left = [connection.info() for connection in connections(client)]
            after = await client.check("chat")
            return outcomes, left, after, slots(client).in_use

    with fake.serve() as base_url:
        outcomes, left, after, in_use = asyncio.run(main(base_url))

    unexpected = [o for o in outcomes if not isinstance(o, Quote | APITimeoutError)]
    assert unexpected == []
    assert any(isinstance(o, APITimeoutError) for o in outcomes)  # the burst did time out
    assert "CONNECTING" not in " ".join(left)
    assert after.allowed
    assert in_use == 0
