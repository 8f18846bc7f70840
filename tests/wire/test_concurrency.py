"""One client shared by many threads or tasks over a real socket, as the docs recommend.

The server is a `FakeAmaiServer` on loopback. Every spend goes out with a reference of its
own and comes back with it, through httpx's own connection pool. The same at scale, under
faults, is in `tests/soak/test_concurrency.py`.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

from amaimedia import AmaiClient, AsyncAmaiClient, Charge
from tests.answers import CHARGE
from tests.conftest import Served


def test_threads_share_one_sync_client_over_loopback(loopback: Served) -> None:
    with AmaiClient(api_key=loopback.key, base_url=loopback.base_url, timeout=5) as client:

        def work(_: int) -> list[Charge]:
            return [client.spend("chat") for _ in range(10)]

        with ThreadPoolExecutor(max_workers=8) as pool:
            charges = [charge for batch in pool.map(work, range(8)) for charge in batch]

    sent = [request.body["reference"] for request in loopback.fake.requests]
    assert len(charges) == len(loopback.fake.requests) == 80
    assert len(set(sent)) == 80
    assert sorted(charge.reference for charge in charges) == sorted(sent)
    assert all(charge.charged == CHARGE["charged"] for charge in charges)  # chat: 5 tokens


def test_tasks_share_one_async_client_over_loopback(loopback: Served) -> None:
    async def main() -> list[Charge]:
        async with AsyncAmaiClient(
            api_key=loopback.key, base_url=loopback.base_url, timeout=5
        ) as client:
            return await asyncio.gather(*(client.spend("sfx") for _ in range(50)))

    charges = asyncio.run(main())
    sent = [request.body["reference"] for request in loopback.fake.requests]
    assert len(charges) == len(loopback.fake.requests) == 50
    assert len(set(sent)) == 50
    assert sorted(charge.reference for charge in charges) == sorted(sent)
