"""How bytes move: the transports behind the clients' own connection pools.

- `_settings.py`: `TransportSettings`, what every pool shares: proxies (`_proxies.py`),
  trusted certificates (`_tls.py`) and size;
- `_routing.py`: the httpx transports of the sync and async pools, one per proxy route;
  the async one per event loop (`_loops.py`) with requests queued in the SDK
  (`_bounded.py`);
- `_aiohttp.py`: an httpx transport over aiohttp (`transport="aiohttp"`, extra `aiohttp`);
- `_direct.py`: the SDK's own requests sent straight on that transport, past httpx's
  client layer, by the async client's own pool;
- `_fork.py`: what a forked child does with the pools it inherited.

This module builds them for the clients. aiohttp is imported only by the clients that ask
for it, and only on their first request.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal, TypeAlias

import httpx

from amaimedia._config import TransportOptions

from ._routing import AsyncRoutingTransport, RoutingTransport, check_socks
from ._settings import TransportSettings

if TYPE_CHECKING:
    from ._direct import DirectPath

__all__ = [
    "AsyncTransportName",
    "direct_path",
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


def new_transport(options: TransportOptions) -> httpx.BaseTransport:
    """The transport of a sync client's own pool.

    Raises:
        ValueError: An option, or a proxy or certificate variable, is unusable.
        TypeError: An option has the wrong type.
    """
    return RoutingTransport(_httpx_settings(options))


def new_async_transport(
    options: TransportOptions,
    name: AsyncTransportName = "httpx",
) -> httpx.AsyncBaseTransport:
    """The transport of an async client's own pool: httpx's, or aiohttp's.

    Raises:
        ValueError: An option, or a proxy or certificate variable, is unusable.
        TypeError: An option has the wrong type.
    """
    if name == "httpx":
        return AsyncRoutingTransport(_httpx_settings(options))
    from ._aiohttp import AiohttpTransport

    return AiohttpTransport(
        verify=options.verify, proxy=options.proxy, trust_env=options.trust_env
    )


def _httpx_settings(options: TransportOptions) -> TransportSettings:
    settings = TransportSettings.create(
        verify=options.verify, proxy=options.proxy, trust_env=options.trust_env
    )
    check_socks(settings)
    return settings


def direct_path(transport: httpx.AsyncBaseTransport) -> DirectPath | None:
    """How an async client's own pool sends past httpx's client layer: on aiohttp only."""
    from ._aiohttp import AiohttpTransport

    if not isinstance(transport, AiohttpTransport):
        return None
    from ._direct import DirectPath

    return DirectPath(transport)
