"""The transports of the SDK's own httpx pools: one per proxy route, per process and loop.

`RoutingTransport` (sync) and `AsyncRoutingTransport` send each request through httpx's
own transport for its route (direct, or through the proxy `TransportSettings` names for
its URL), made on first use:

- in a forked child, fresh ones: what the parent opened is never touched (`_fork.py`);
- for the async one, one set per running event loop, closed when the loop ends
  (`_loops.py`), each with its requests queued in the SDK (`_bounded.py`).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import importlib.util
import sys
from typing import Final

import httpx

from amaimedia._tracebacks import forget_frames_holding

from ._bounded import BoundedHTTPTransport
from ._fork import ForkSafeLock, abandon, generation
from ._loops import PerLoop
from ._proxies import proxy_credentials
from ._settings import TransportSettings, httpx_proxy

__all__ = ["AsyncRoutingTransport", "RoutingTransport", "check_socks"]

# What httpx's async transport imports when it first connects: httpcore and its HTTP/1.1
# parser, and anyio with its asyncio backend.
_ASYNC_MODULES: Final = frozenset({"httpcore", "h11", "anyio", "anyio._backends._asyncio"})

# Keyed by the proxy's URL (None: direct), whose repr hides its credentials.
_Routes = dict[httpx.URL | None, httpx.BaseTransport]
_AsyncRoutes = dict[httpx.URL | None, BoundedHTTPTransport]


def check_socks(settings: TransportSettings) -> None:
    """Refuse, when the client is built, a SOCKS proxy that httpx cannot use here.

    Raises:
        ValueError: A SOCKS proxy is configured, and httpx's SOCKS support is missing.
    """
    schemes = {rule.proxy.scheme for rule in settings.routes.rules if rule.proxy is not None}
    if schemes & {"socks5", "socks5h"} and importlib.util.find_spec("socksio") is None:
        raise ValueError(
            "a SOCKS proxy is configured, which needs httpx's SOCKS support: "
            "pip install 'httpx[socks]'"
        )


def _import_async_modules() -> None:
    for name in sorted(_ASYNC_MODULES):
        with contextlib.suppress(ImportError):  # a later httpcore or anyio may move them
            importlib.import_module(name)


def _forget_credentials(exc: httpx.TransportError, proxy: httpx.URL | None) -> None:
    # httpcore holds the Proxy-Authorization header in the locals of the frames that open
    # a tunnel; a tunnel the proxy refused would show it in the failure's traceback.
    forget_frames_holding(exc, proxy_credentials(proxy), "the proxy's credentials")


class RoutingTransport(httpx.BaseTransport):
    """The sync pool's transport: httpx's own, per route, fresh in a forked child.

    Args:
        settings: The pool's proxies, certificates and size.
    """

    def __init__(self, settings: TransportSettings) -> None:
        self._settings = settings
        self._lock = ForkSafeLock()
        self._generation = generation()
        self._routes: _Routes = {}

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        """Send `request` through the transport of its route."""
        proxy = self._settings.proxy_for(request.url)
        try:
            return self._transport_for(proxy).handle_request(request)
        except httpx.TransportError as exc:
            _forget_credentials(exc, proxy)
            raise

    def _transport_for(self, proxy: httpx.URL | None) -> httpx.BaseTransport:
        if self._generation == generation():
            found = self._routes.get(proxy)
            if found is not None:
                return found
        with self._lock:
            if self._generation != generation():
                abandon(self._routes)
                self._routes, self._generation = {}, generation()
            found = self._routes.get(proxy)
            if found is None:
                context = self._settings.ssl_context()
                found = self._routes[proxy] = httpx.HTTPTransport(
                    verify=context,
                    trust_env=False,
                    limits=self._settings.limits(),
                    proxy=httpx_proxy(proxy, context),
                )
            return found

    def close(self) -> None:
        """Close the connections this process opened."""
        with self._lock:
            routes, self._routes = self._routes, {}
            if self._generation != generation():
                abandon(routes)
                return
        for transport in routes.values():
            transport.close()


class AsyncRoutingTransport(httpx.AsyncBaseTransport):
    """The async pool's transport: httpx's own, bounded, per route and per event loop.

    Args:
        settings: The pool's proxies, certificates and size.
    """

    def __init__(self, settings: TransportSettings) -> None:
        self._settings = settings
        self._loops: PerLoop[_AsyncRoutes] = PerLoop(self._prepare, dict, _close_routes)

    async def _prepare(self) -> None:
        # Loading certificates, and importing what httpx's async transport loads on its
        # first request, take tens of milliseconds each: not on the event loop.
        if not self._settings.tls.loaded:
            await asyncio.to_thread(self._settings.ssl_context)
        if not _ASYNC_MODULES.issubset(sys.modules):
            await asyncio.to_thread(_import_async_modules)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send `request` through this loop's transport of its route."""
        routes = await self._loops.get()
        proxy = self._settings.proxy_for(request.url)
        transport = routes.get(proxy)
        if transport is None:
            context = self._settings.ssl_context()  # loaded by _prepare
            transport = routes[proxy] = BoundedHTTPTransport(self._settings, context, proxy)
        try:
            return await transport.handle_async_request(request)
        except httpx.TransportError as exc:
            _forget_credentials(exc, proxy)
            raise

    async def aclose(self) -> None:
        """Close this loop's connections; those of loops that ended are forgotten."""
        await self._loops.aclose()


async def _close_routes(routes: _AsyncRoutes) -> None:
    for transport in list(routes.values()):
        await transport.aclose()
