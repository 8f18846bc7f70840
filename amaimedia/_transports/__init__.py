"""How bytes move: the transports behind the clients' own connection pools.

- `_bounded.py`: httpx's async transport with requests queued in the SDK, not in httpcore's
  pool (the default for `AsyncAmaiClient`).
- `_aiohttp.py`: an httpx transport over aiohttp (`transport="aiohttp"`, extra `aiohttp`).

This module holds the choice between them. aiohttp is imported only by the clients that
ask for it.
"""

from __future__ import annotations

from typing import Literal, TypeAlias

import httpx

from ._bounded import BoundedHTTPTransport

__all__ = ["AsyncTransportName", "new_async_transport", "resolve_async_transport"]

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


def new_async_transport(transport: AsyncTransportName) -> httpx.AsyncBaseTransport:
    """The transport for an async client's own pool."""
    if transport == "httpx":
        # httpx's own, with requests queued outside its pool: see _bounded.py.
        return BoundedHTTPTransport()
    from ._aiohttp import AiohttpTransport

    return AiohttpTransport()
