"""A look inside the SDK's own pools, for the tests that count connections and slots.

The pools are private: what a test reads here is named once, so a change of their
structure changes this file and no test.
"""

from __future__ import annotations

import asyncio
from typing import Any

from amaimedia import AiohttpTransport, AmaiClient, AsyncAmaiClient
from amaimedia._transports._bounded import ConnectionSlots
from amaimedia._transports._routing import AsyncRoutingTransport, RoutingTransport


def transport_of(client: AmaiClient | AsyncAmaiClient) -> Any:
    """The transport of the client's own httpx client."""
    return client._http._transport


def _loop_states(transport: Any) -> list[Any]:
    """The per-loop states of an async transport: the running loop's, else every one."""
    states = transport._loops._states if isinstance(transport, AsyncRoutingTransport) else None
    if states is None:
        states = transport._sessions._states
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return [state for state, _ in states.values()]
    return [states[loop][0]] if loop in states else []


def httpcore_pools(client: AmaiClient | AsyncAmaiClient) -> list[Any]:
    """The httpcore connection pools of the client's own pool, one per proxy route."""
    transport = transport_of(client)
    if isinstance(transport, RoutingTransport):
        return [route._pool for route in transport._routes.values()]
    assert isinstance(transport, AsyncRoutingTransport)
    return [
        bounded._inner._pool for routes in _loop_states(transport) for bounded in routes.values()
    ]


def connections(client: AmaiClient | AsyncAmaiClient) -> list[Any]:
    """Every connection the client's own pool holds."""
    return [connection for pool in httpcore_pools(client) for connection in pool.connections]


def slots(target: AsyncAmaiClient | AiohttpTransport) -> ConnectionSlots:
    """The running loop's connection slots (of the direct route, for the httpx pool)."""
    transport = target if isinstance(target, AiohttpTransport) else transport_of(target)
    (state,) = _loop_states(transport)
    if isinstance(transport, AiohttpTransport):
        return state.slots
    slots: ConnectionSlots = state[None]._slots
    return slots


def aiohttp_sessions(transport: AiohttpTransport) -> list[Any]:
    """The aiohttp sessions the transport holds (one per event loop in use)."""
    return [state.session for state in _loop_states(transport)]
