"""The SDK's own pools from the inside: per event loop, per process, per proxy route.

A fork is pretended here by moving the fork generation on, as `os.register_at_fork` does
in a real child (`tests/wire/test_fork.py` forks for real); a loop that ends without
`shutdown_asyncgens()` is closed by hand.
"""

from __future__ import annotations

import asyncio
import gc
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from amaimedia import AiohttpTransport, AmaiClient, AsyncAmaiClient
from amaimedia._transports import _fork, _routing
from amaimedia.testing import FakeAmaiServer
from tests.pools import connections, transport_of


@pytest.fixture
def served() -> Iterator[tuple[str, str]]:
    fake = FakeAmaiServer()
    key = fake.create_key()
    with fake.serve() as base_url:
        yield key, base_url


# What the pretended children abandoned: kept for the life of the process, as a real
# child keeps it (collected, an aiohttp session would warn that nobody closed it).
ABANDONED: list[list[object]] = []


def pretend_a_fork(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """What a child sees: a new generation; returns the list of what it abandoned."""
    abandoned: list[object] = []
    ABANDONED.append(abandoned)
    monkeypatch.setattr(_fork, "_generation", _fork.generation() + 1)
    monkeypatch.setattr(_fork, "_inherited", abandoned)
    return abandoned


def test_a_child_leaves_the_sync_pool_it_inherited_untouched(
    served: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    key, base_url = served
    client = AmaiClient(key, base_url=base_url)
    client.check("chat")
    (inherited,) = connections(client)
    routes = transport_of(client)._routes

    abandoned = pretend_a_fork(monkeypatch)
    client.check("chat")

    assert abandoned == [routes]  # kept, never closed: the parent's socket
    assert not inherited.is_closed()
    (own,) = connections(client)
    assert own is not inherited
    client.close()
    assert not inherited.is_closed()
    close_as_the_parent(routes)


def close_as_the_parent(routes: dict[object, Any]) -> None:
    """This process is the parent really: what the "child" left, the parent closes."""
    for route in routes.values():
        route.close()


def test_closing_in_a_child_leaves_the_inherited_pool_alone(
    served: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    key, base_url = served
    client = AmaiClient(key, base_url=base_url)
    client.check("chat")
    (inherited,) = connections(client)
    abandoned = pretend_a_fork(monkeypatch)
    client.close()
    assert len(abandoned) == 1
    assert not inherited.is_closed()
    (routes,) = abandoned
    close_as_the_parent(routes)  # type: ignore[arg-type]
    assert inherited.is_closed()


@pytest.mark.parametrize("transport", ["httpx", "aiohttp"])
def test_a_child_leaves_the_async_pools_it_inherited_untouched(
    served: tuple[str, str], monkeypatch: pytest.MonkeyPatch, transport: Any
) -> None:
    key, base_url = served
    client = AsyncAmaiClient(key, base_url=base_url, transport=transport)
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(client.check("chat"))
        abandoned = pretend_a_fork(monkeypatch)
        # Going on with the same loop: the child's state is new, the parent's kept.
        assert loop.run_until_complete(client.check("chat", units=2)).cost_tokens == 10
        assert len(abandoned) == 1
        loop.run_until_complete(client.aclose())
        # This process is the parent really: what the "child" left, the parent closes.
        (inherited,) = abandoned
        for _, watcher in inherited.values():  # type: ignore[attr-defined]
            loop.run_until_complete(watcher.aclose())
    finally:
        loop.close()


def test_closing_an_async_client_in_a_child_abandons_what_it_inherited(
    served: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    key, base_url = served
    client = AsyncAmaiClient(key, base_url=base_url)

    async def main() -> list[object]:
        await client.check("chat")
        abandoned = pretend_a_fork(monkeypatch)
        await client.aclose()
        return abandoned

    loop = asyncio.new_event_loop()
    try:
        abandoned = loop.run_until_complete(main())
        assert len(abandoned) == 1
        (inherited,) = abandoned
        for _, watcher in inherited.values():  # type: ignore[attr-defined]
            loop.run_until_complete(watcher.aclose())
    finally:
        loop.close()


# A loop closed without shutdown_asyncgens() leaves its connection to the garbage collector,
# which warns about it, as asyncio does for any transport of a closed loop.
@pytest.mark.filterwarnings("ignore::ResourceWarning")
def test_the_state_of_a_loop_closed_by_hand_is_dropped(served: tuple[str, str]) -> None:
    key, base_url = served
    client = AsyncAmaiClient(key, base_url=base_url)
    first = asyncio.new_event_loop()
    first.run_until_complete(client.check("chat"))
    first.close()

    async def again() -> tuple[int, bool]:
        quote = await client.check("chat")
        return quote.cost_tokens, first in transport_of(client)._loops._states

    assert asyncio.run(again()) == (5, False)
    asyncio.run(client.aclose())
    gc.collect()  # here, where the warning is ignored


def test_closing_reaches_a_loop_running_in_another_thread(served: tuple[str, str]) -> None:
    key, base_url = served
    client = AsyncAmaiClient(key, base_url=base_url)
    ready, stop = threading.Event(), threading.Event()
    other = asyncio.new_event_loop()

    def serve_other_loop() -> None:
        other.run_until_complete(client.check("chat"))
        ready.set()
        other.run_until_complete(asyncio.to_thread(stop.wait, 10))

    thread = threading.Thread(target=serve_other_loop)
    thread.start()
    ready.wait(10)
    loops = transport_of(client)._loops
    (routes, _) = loops._states[other]
    (pool,) = [route._inner._pool for route in routes.values()]
    assert len(pool.connections) == 1

    async def close_here() -> None:
        await client.check("chat")
        await client.aclose()

    asyncio.run(close_here())
    stop.set()
    thread.join(10)
    assert loops._states == {}
    assert pool.connections == []  # closed on its own loop, by the thread running it
    other.run_until_complete(other.shutdown_asyncgens())
    other.close()


def test_a_socks_proxy_without_httpx_socks_support_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_routing.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ValueError, match=r"pip install 'httpx\[socks\]'"):
        AmaiClient("amai_live_" + "k" * 32, proxy="socks5://127.0.0.1:1080")


def test_aiohttp_refuses_a_socks_proxy() -> None:
    with pytest.raises(ValueError, match="AiohttpTransport speaks HTTP proxies only"):
        AiohttpTransport(proxy="socks5://127.0.0.1:1080")


def test_a_module_httpx_may_no_longer_have_is_skipped(
    served: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    key, base_url = served
    wanted = _routing._ASYNC_MODULES | {"amaimedia_no_such_module"}
    monkeypatch.setattr(_routing, "_ASYNC_MODULES", wanted)

    async def main() -> int:
        async with AsyncAmaiClient(key, base_url=base_url) as client:
            return (await client.check("chat")).cost_tokens

    assert asyncio.run(main()) == 5
    assert "amaimedia_no_such_module" not in sys.modules


@pytest.mark.filterwarnings("ignore::ResourceWarning")  # the ended loop's socket, collected
def test_closing_forgets_the_state_of_a_loop_that_ended_by_hand(served: tuple[str, str]) -> None:
    key, base_url = served
    client = AsyncAmaiClient(key, base_url=base_url)
    ended = asyncio.new_event_loop()
    ended.run_until_complete(client.check("chat"))
    ended.close()
    asyncio.run(client.aclose())  # nothing to close it on: forgotten
    assert transport_of(client)._loops._states == {}
    gc.collect()


def test_a_route_made_by_another_thread_meanwhile_is_used(served: tuple[str, str]) -> None:
    key, base_url = served
    client = AmaiClient(key, base_url=base_url)
    routing = transport_of(client)
    found: list[object] = []

    def look_up() -> None:
        found.append(routing._transport_for(None))  # the direct route

    with routing._lock:  # as another thread making the route would hold it
        waiting = threading.Thread(target=look_up)
        waiting.start()
        waiting.join(0.2)
        assert waiting.is_alive()  # past the lock-free look-up, waiting for the lock
        made = routing._routes[None] = object()
    waiting.join(10)
    assert found == [made]
