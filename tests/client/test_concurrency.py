"""One client shared by many threads or tasks, in process, as the docs recommend.

Over a real socket: `tests/wire/test_concurrency.py`; at scale, under faults:
`tests/soak/test_concurrency.py`.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import respx

import amaimedia._client
from amaimedia import AmaiClient, AsyncAmaiClient, Charge, Quote
from tests.answers import CHARGE, KEY, QUOTE, api_router, bodies, error, queue


def echoing(api: respx.Router) -> httpx.MockTransport:
    """`api`'s transport, with each spend answer echoing the reference it answers.

    `Charge` keeps unknown fields, so `charge.model_extra["echo"]` tells which request a
    result came from: a result paired with another thread's reference would show. (The
    router's handler answers a sync and an async httpx client alike.)
    """

    def echo(request: httpx.Request) -> httpx.Response:
        reference = json.loads(request.content)["reference"]
        return httpx.Response(200, json={**CHARGE, "echo": reference})

    api["spend"].mock(side_effect=echo)
    return httpx.MockTransport(api.handler)


def assert_paired(charges: list[Charge], api: respx.Router, count: int) -> None:
    sent = [body["reference"] for body in bodies(api["spend"].calls)]
    assert api.calls.call_count == count
    assert len(set(sent)) == count
    assert all(charge.model_extra == {"echo": charge.reference} for charge in charges)
    assert sorted(charge.reference for charge in charges) == sorted(sent)


def test_threads_share_one_sync_client() -> None:
    api = api_router()
    threads: set[int] = set()

    http = httpx.Client(transport=echoing(api))
    with http, AmaiClient(api_key=KEY, http_client=http) as client:

        def work(_: int) -> list[Charge]:
            threads.add(threading.get_ident())
            return [client.spend("dub", units=2) for _ in range(25)]

        with ThreadPoolExecutor(max_workers=16) as pool:
            charges = [charge for batch in pool.map(work, range(16)) for charge in batch]

    assert len(charges) == 400
    assert len(threads) > 1
    assert_paired(charges, api, 400)


def test_tasks_share_one_async_client() -> None:
    api = api_router()

    async def main() -> list[Charge]:
        http = httpx.AsyncClient(transport=echoing(api))
        async with http, AsyncAmaiClient(api_key=KEY, http_client=http) as client:
            return await asyncio.gather(*(client.spend("music") for _ in range(200)))

    charges = asyncio.run(main())
    assert len(charges) == 200
    assert_paired(charges, api, 200)


def test_sync_client_inside_a_running_event_loop() -> None:
    """As in a Jupyter cell: a loop runs in this thread, and the sync client must not care."""
    api = api_router()
    # A retried answer too, so that the sync client's wait runs inside the loop as well.
    queue(api["check"], error(429, "rate_limited", headers={"retry-after-ms": "1"}))

    async def cell() -> Quote:
        asyncio.get_running_loop()  # raises if no loop runs: the test would prove nothing
        http = httpx.Client(transport=echoing(api))
        with http, AmaiClient(api_key=KEY, http_client=http) as client:
            return client.check("chat")

    assert asyncio.run(cell()) == Quote(**QUOTE)
    assert api.calls.call_count == 2


def test_sync_client_does_not_use_asyncio() -> None:
    assert "asyncio" not in inspect.getsource(amaimedia._client)
    assert AmaiClient._sleep.__module__ == "time"
