"""How bytes move: the transports behind the clients' own connection pools.

- `_settings.py`: `TransportSettings`, what every pool shares: proxies (`_proxies.py`),
  trusted certificates (`_tls.py`) and size;
- `_routing.py`: the httpx transports of the sync and async pools, one per proxy route;
  the async one per event loop (`_loops.py`) with requests queued in the SDK
  (`_bounded.py`);
- `_aiohttp.py`: an httpx transport over aiohttp (`transport="aiohttp"`, extra `aiohttp`);
- `_fork.py`: what a forked child does with the pools it inherited.

This module builds them for the clients. aiohttp is imported only by the clients that ask
for it, and only on their first request.
"""

from __future__ import annotations

from typing import Literal, TypeAlias

import httpx

from ._routing import AsyncRoutingTransport, RoutingTransport
from ._tls import VerifyTypes

__all__ = [
    "AsyncTransportName",
    "VerifyTypes",
    "new_async_transport",
    "new_transport",
    "resolve_async_transport",
]

AsyncTransportName: TypeAlias = Literal["httpx", "aiohttp"]
"""How an `AsyncAmaiClient`'s own pool sends requests: httpx's transport, or aiohttp's."""


def resolve_async_transport(transport: object, http_client: object) -> AsyncTransportName:
    """`"httpx"` or `"aiohttp"`; the latter only for a client that builds its own pool."""
    if not isinstance(transport, str):
        raise TypeError(f"transport must be 'httpx' or 'aiohttp', got {type(transport).__name__}")
    if transport == "httpx":
        return "httpx"
    if transport != "aiohttp":
        raise ValueError(f"transport must be 'httpx' or 'aiohttp', got {transport!r}")
    if http_client is not None:
        raise ValueError(
            "transport='aiohttp' is for the client's own connection pool; to use aiohttp "
            "with your own http_client, build it as "
            "httpx.AsyncClient(transport=amaimedia.AiohttpTransport())"
        )
    return "aiohttp"


def new_transport(
    *, verify: VerifyTypes, proxy: str | httpx.URL | None, trust_env: bool
) -> httpx.BaseTransport:
    """The transport of a sync client's own pool."""
    return RoutingTransport(verify=verify, proxy=proxy, trust_env=trust_env)


def new_async_transport(
    *,
    name: AsyncTransportName,
    verify: VerifyTypes,
    proxy: str | httpx.URL | None,
    trust_env: bool,
) -> httpx.AsyncBaseTransport:
    """The transport of an async client's own pool: httpx's, or aiohttp's."""
    if name == "httpx":
        return AsyncRoutingTransport(verify=verify, proxy=proxy, trust_env=trust_env)
    from ._aiohttp import AiohttpTransport

    return AiohttpTransport(verify=verify, proxy=proxy, trust_env=trust_env)
