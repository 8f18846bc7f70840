"""One client shared by many threads or tasks over a real socket, as the docs recommend.

Each spend answer pairs with the request that asked for it, through httpx's own connection
pool. The same at scale, under faults, is in `tests/soak/test_concurrency.py`.
"""

from __future__ import annotations

import asyncio
import json
from concurrent.futures import ThreadPoolExecutor

from amaimedia import AmaiClient, AsyncAmaiClient, Charge
from tests.fakes import CHARGE, KEY, LoopbackServer


def test_threads_share_one_sync_client_over_loopback(loopback: LoopbackServer) -> None:
    with AmaiClient(api_key=KEY, base_url=loopback.base_url, timeout=5) as client:

        def work(_: int) -> list[Charge]:
            return [client.spend("chat") for _ in range(10)]

        with ThreadPoolExecutor(max_workers=8) as pool:
            charges = [charge for batch in pool.map(work, range(8)) for charge in batch]

    sent = [json.loads(body)["reference"] for _, _, body in loopback.requests]
    assert len(charges) == len(loopback.requests) == 80
    assert len(set(sent)) == 80
    assert sorted(charge.reference for charge in charges) == sorted(sent)
    assert all(charge.charged == CHARGE["charged"] for charge in charges)


def test_tasks_share_one_async_client_over_loopback(loopback: LoopbackServer) -> None:
    async def main() -> list[Charge]:
        async with AsyncAmaiClient(api_key=KEY, base_url=loopback.base_url, timeout=5) as client:
            return await asyncio.gather(*(client.spend("sfx") for _ in range(50)))

    charges = asyncio.run(main())
    sent = [json.loads(body)["reference"] for _, _, body in loopback.requests]
    assert len(charges) == len(loopback.requests) == 50
    assert len(set(sent)) == 50
    assert sorted(charge.reference for charge in charges) == sorted(sent)
