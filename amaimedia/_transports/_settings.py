"""`TransportSettings`: how the SDK's own pools connect, whatever sends the bytes.

One object per client (shared by its `with_options` copies), read once when the client is
built: the proxies (`_proxies.py`), the trusted certificates (`_tls.py`) and the pool's
size. The httpx and aiohttp transports take it alike, so that switching transports never
changes where a request goes or which certificate it trusts.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import Final

import httpx

from amaimedia._types import VerifyTypes

from ._proxies import ProxyRoutes
from ._tls import TLSSettings

__all__ = ["DEFAULT_MAX_CONNECTIONS", "DEFAULT_MAX_KEEPALIVE", "TransportSettings", "httpx_proxy"]

DEFAULT_MAX_CONNECTIONS: Final = 100  # httpx's own defaults
DEFAULT_MAX_KEEPALIVE: Final = 20
# As httpx: an idle connection is dropped after 5 s, before servers (uvicorn, nginx)
# close it on their side and a request finds it dead.
KEEPALIVE_EXPIRY: Final = 5.0


@dataclass(frozen=True)
class TransportSettings:
    """Proxies, certificates and size of one pool.

    Attributes:
        tls: The certificates the pool trusts.
        routes: Which proxy each request goes through.
        max_connections: How many connections may be open at once, per event loop.
    """

    tls: TLSSettings
    routes: ProxyRoutes
    max_connections: int = DEFAULT_MAX_CONNECTIONS

    @classmethod
    def create(
        cls,
        *,
        verify: VerifyTypes = True,
        proxy: str | httpx.URL | None = None,
        trust_env: bool = True,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
    ) -> TransportSettings:
        """Check every setting, and read the environment when `trust_env` allows.

        Raises:
            TypeError: A setting has the wrong type.
            ValueError: A setting, or a proxy or certificate variable, is unusable; the
                message names which.
        """
        if not isinstance(trust_env, bool):
            raise TypeError(f"trust_env must be a bool, got {type(trust_env).__name__}")
        if proxy is not None and not isinstance(proxy, str | httpx.URL):
            raise TypeError(f"proxy must be a URL (str or httpx.URL), got {type(proxy).__name__}")
        if isinstance(max_connections, bool) or not isinstance(max_connections, int):
            raise TypeError(
                f"max_connections must be an int, got {type(max_connections).__name__}"
            )
        if max_connections < 1:
            raise ValueError(f"max_connections must be 1 or more, got {max_connections}")
        if proxy is not None:
            routes = ProxyRoutes.explicit(proxy)
        elif trust_env:
            routes = ProxyRoutes.from_environment()
        else:
            routes = ProxyRoutes()
        return cls(TLSSettings.create(verify, trust_env=trust_env), routes, max_connections)

    def ssl_context(self) -> ssl.SSLContext:
        """The TLS context of the pool's connections (loaded on first use: blocking)."""
        return self.tls.ssl_context()

    def limits(self) -> httpx.Limits:
        """The httpx limits of a pool of this size."""
        return httpx.Limits(
            max_connections=self.max_connections,
            max_keepalive_connections=min(DEFAULT_MAX_KEEPALIVE, self.max_connections),
            keepalive_expiry=KEEPALIVE_EXPIRY,
        )

    def proxy_for(self, url: httpx.URL) -> httpx.URL | None:
        """The proxy for a request to `url`, or `None` to connect directly."""
        return self.routes.proxy_for(url)


def httpx_proxy(proxy: httpx.URL | None, ssl_context: ssl.SSLContext) -> httpx.Proxy | None:
    """The proxy of a route as httpx takes it; an `https://` one trusts the pool's CAs."""
    if proxy is None:
        return None
    # httpcore refuses a TLS context for a proxy it talks to in plain http.
    return httpx.Proxy(proxy, ssl_context=ssl_context if proxy.scheme == "https" else None)
