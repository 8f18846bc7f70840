"""The async client's own pool: requests wait for a connection in the SDK's slots."""

from __future__ import annotations

import asyncio
import ssl

import httpx
import pytest

from amaimedia import AsyncAmaiClient
from amaimedia._transports._bounded import BoundedHTTPTransport, ConnectionSlots
from amaimedia._transports._routing import AsyncRoutingTransport
from amaimedia._transports._settings import TransportSettings
from amaimedia.testing import FakeAmaiServer
from tests.pools import slots, transport_of

URL = "http://127.0.0.1:9/"


def bounded(max_connections: int) -> BoundedHTTPTransport:
    settings = TransportSettings.create(max_connections=max_connections)
    return BoundedHTTPTransport(settings, ssl.create_default_context())


def test_the_async_client_builds_its_pool_on_the_bounded_transport() -> None:
    fake = FakeAmaiServer()
    key = fake.create_key()

    async def main(base_url: str) -> None:
        async with AsyncAmaiClient(api_key=key, base_url=base_url) as client:
            await client.check("chat")
            assert isinstance(transport_of(client), AsyncRoutingTransport)
            assert slots(client).limit == 100

    with fake.serve() as base_url:
        asyncio.run(main(base_url))


def test_a_slot_returns_once_however_often_the_body_is_closed() -> None:
    fake = FakeAmaiServer()
    fake.create_key()

    async def main(base_url: str) -> list[int]:
        transport = bounded(max_connections=2)
        seen = []
        async with httpx.AsyncClient(transport=transport) as http:
            response = await http.post(f"{base_url}/api/v1/tools/check", content=b"{}")
            seen.append(transport._slots.in_use)  # the body is read and closed
            await response.aclose()
            seen.append(transport._slots.in_use)
            async with http.stream("POST", f"{base_url}/api/v1/tools/check") as streamed:
                seen.append(transport._slots.in_use)  # held while the body is open
                await streamed.aread()
            seen.append(transport._slots.in_use)
        return seen

    with fake.serve() as base_url:
        assert asyncio.run(main(base_url)) == [0, 0, 1, 0]


def test_a_failed_exchange_gives_its_slot_back() -> None:
    async def main() -> int:
        transport = bounded(max_connections=1)
        async with httpx.AsyncClient(transport=transport, timeout=2) as http:
            for _ in range(3):  # with the one slot lost, the second attempt would hang
                with pytest.raises(httpx.ConnectError):
                    await http.get(URL)
        return transport._slots.in_use

    assert asyncio.run(main()) == 0


def test_waiting_longer_than_the_pool_timeout_is_a_pool_timeout() -> None:
    async def main() -> str:
        slots = ConnectionSlots(1)
        request = httpx.Request("GET", URL, extensions={"timeout": {"pool": 0.05}})
        await slots.acquire(request)
        with pytest.raises(httpx.PoolTimeout) as info:
            await slots.acquire(request)
        slots.release()
        await slots.acquire(request)  # free again: taken at once
        assert slots.in_use == 1
        return str(info.value)

    assert asyncio.run(main()) == "no free connection within 0.05 s; all 1 are busy"


def test_the_body_gives_its_slot_back_only_on_its_first_close() -> None:
    from amaimedia._transports._bounded import _ReleasingStream

    released = []

    class Body(httpx.AsyncByteStream):
        async def __aiter__(self):  # type: ignore[no-untyped-def]
            yield b"{}"

    async def main() -> None:
        body = _ReleasingStream(Body(), lambda: released.append(1))
        assert [chunk async for chunk in body] == [b"{}"]
        await body.aclose()
        await body.aclose()

    asyncio.run(main())
    assert released == [1]
