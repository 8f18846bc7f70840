"""Connection slots for the async transports: requests wait for a connection here.

httpcore 1.0.9 can lose a connection of its pool for good when a request is cancelled
while it waits in the pool's queue (by a timeout, a `TaskGroup` or `wait_for`): the
connection stays "connecting" and is never used again, and once all of them are lost
every request fails with `PoolTimeout`. `BoundedHTTPTransport` keeps httpx's transport
but never lets more requests into its pool than it has connections, so no request waits
in that queue: they wait in `ConnectionSlots`, where cancelling one is harmless.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Callable

import httpx

from ._settings import TransportSettings, httpx_proxy

__all__ = ["BoundedHTTPTransport", "ConnectionSlots"]


class ConnectionSlots:
    """At most `limit` requests hold a connection at once; the others wait their turn."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.in_use = 0
        self._free = asyncio.Semaphore(limit)

    async def acquire(self, request: httpx.Request) -> None:
        """Take a slot, waiting up to the request's `pool` timeout for one to be free.

        Raises:
            httpx.PoolTimeout: No slot was free in time.
        """
        await self.take(request.extensions.get("timeout", {}).get("pool"), lambda: request)

    async def take(self, timeout: float | None, request: Callable[[], httpx.Request]) -> None:
        """Take a slot, waiting up to `timeout` seconds (`None`: for ever) for one to be free.

        Args:
            timeout: The request's `pool` timeout.
            request: Gives the request that `httpx.PoolTimeout` names, when it is raised.

        Raises:
            httpx.PoolTimeout: No slot was free in time.
        """
        if self._free.locked():
            try:
                await asyncio.wait_for(self._free.acquire(), timeout)
            except asyncio.TimeoutError:
                raise httpx.PoolTimeout(
                    f"no free connection within {timeout} s; all {self.limit} are busy",
                    request=request(),
                ) from None
        else:
            await self._free.acquire()  # a free slot: returns at once
        self.in_use += 1

    def release(self) -> None:
        """Give a slot back."""
        self.in_use -= 1
        self._free.release()


class BoundedHTTPTransport(httpx.AsyncBaseTransport):
    """httpx's async transport, with requests queued in `ConnectionSlots` instead of its pool.

    A slot is held from sending the request until the answer's body is closed, which is
    as long as the pool's connection is in use. Bound to the event loop it is first used
    on, as httpx's own is; `_routing.py` keeps one per loop and per proxy.

    Args:
        settings: The pool's size (httpx's limits: keeping every connection alive is
            slower under load).
        ssl_context: The TLS context of its connections (and of an `https://` proxy).
        proxy: The proxy every request goes through, or `None` to connect directly.
    """

    def __init__(
        self,
        settings: TransportSettings,
        ssl_context: ssl.SSLContext,
        proxy: httpx.URL | None = None,
    ) -> None:
        self._inner = httpx.AsyncHTTPTransport(
            verify=ssl_context,
            trust_env=False,
            limits=settings.limits(),
            proxy=httpx_proxy(proxy, ssl_context),
        )
        self._slots = ConnectionSlots(settings.max_connections)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send `request` once a slot is free; the slot returns when the body is closed."""
        await self._slots.acquire(request)
        try:
            response = await self._inner.handle_async_request(request)
        except BaseException:
            self._slots.release()
            raise
        assert isinstance(response.stream, httpx.AsyncByteStream)
        return httpx.Response(
            status_code=response.status_code,
            headers=response.headers,
            stream=_ReleasingStream(response.stream, self._slots.release),
            extensions=response.extensions,
        )

    async def aclose(self) -> None:
        """Close the pool and its connections."""
        await self._inner.aclose()


class _ReleasingStream(httpx.AsyncByteStream):
    """An answer's body that gives its slot back, once, when it is closed."""

    def __init__(self, stream: httpx.AsyncByteStream, release: Callable[[], None]) -> None:
        self._stream = stream
        self._release: Callable[[], None] | None = release

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._stream:
            yield chunk

    async def aclose(self) -> None:
        try:
            await self._stream.aclose()
        finally:
            release, self._release = self._release, None
            if release is not None:
                release()
