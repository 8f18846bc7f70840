"""An httpx transport that sends requests with aiohttp, for asyncio code under load.

httpx's own async connection pool spends more time managing itself than sending once
dozens of requests are in flight; aiohttp's pool and its C HTTP parser do not. This
transport keeps everything above the wire on httpx (requests, responses, timeouts, the
exceptions the SDK maps to its own) and hands only the exchange itself to aiohttp.

aiohttp is imported when a transport is created, never by `import amaimedia`.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import TYPE_CHECKING, Final

import httpx

from ._bounded import DEFAULT_MAX_CONNECTIONS, ConnectionSlots

if TYPE_CHECKING:
    import aiohttp

__all__ = ["AiohttpTransport", "httpx_error"]

# As httpx: an idle connection is dropped after 5 s, before servers (uvicorn, nginx)
# close it on their side and a request finds it dead.
KEEPALIVE_EXPIRY: Final = 5.0
# Only the headers httpx built go out: none of the ones aiohttp adds by default.
_AIOHTTP_DEFAULT_HEADERS: Final = ("Accept", "Accept-Encoding", "Content-Type", "User-Agent")


class AiohttpTransport(httpx.AsyncBaseTransport):
    """An httpx transport over aiohttp: several times faster with many requests in flight.

    Needs `pip install amaimedia[aiohttp]`. The easy way in is
    `AsyncAmaiClient(transport="aiohttp")`, which builds one and closes it with the
    client. Build one yourself to give an `httpx.AsyncClient` of your own the same speed:

    ```python
    http = httpx.AsyncClient(transport=AiohttpTransport())
    ```

    It honours the `httpx.Timeout` of each request: `connect` for opening a connection,
    `read` for each wait on the answer, and `pool` for a free connection while
    `max_connections` are busy (aiohttp has no write timeout; bodies are sent whole).
    Failures are raised as the exceptions httpx's own transport raises
    (`httpx.ConnectError`, `httpx.ReadTimeout`, `httpx.RemoteProtocolError`, …), so
    retries and errors work as they do without it. Answers are read whole. Redirects are
    not followed, cookies are not kept, and no proxy is used. Certificates are checked
    against the CA bundle httpx uses (certifi).

    Args:
        max_connections: How many connections may be open at once. A request that
            finds them all busy waits for one, up to the `pool` timeout.

    Raises:
        ImportError: aiohttp is not installed.
        ValueError: `max_connections` is less than 1.
        TypeError: `max_connections` is not an int.
    """

    def __init__(self, *, max_connections: int = DEFAULT_MAX_CONNECTIONS) -> None:
        try:
            import aiohttp  # noqa: F401
        except ImportError as exc:
            raise ImportError(
                "AiohttpTransport needs aiohttp, which is not installed: "
                "pip install amaimedia[aiohttp]"
            ) from exc
        if isinstance(max_connections, bool) or not isinstance(max_connections, int):
            raise TypeError(
                f"max_connections must be an int, got {type(max_connections).__name__}"
            )
        if max_connections < 1:
            raise ValueError(f"max_connections must be 1 or more, got {max_connections}")
        self._max_connections = max_connections
        # One slot per connection in use: waiting for a slot is httpx's pool timeout.
        self._slots = ConnectionSlots(max_connections)
        self._session: aiohttp.ClientSession | None = None
        self._closed = False

    def __repr__(self) -> str:
        return f"AiohttpTransport(max_connections={self._max_connections})"

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send `request` and read its whole answer.

        Raises:
            httpx.TransportError: The exchange failed; the subclass says how, as with
                httpx's own transport.
            RuntimeError: The transport is closed.
        """
        if self._closed:
            raise RuntimeError("this AiohttpTransport is closed")
        timeout = request.extensions.get("timeout", {})
        await self._slots.acquire(request)
        try:
            return await self._exchange(request, timeout)
        finally:
            self._slots.release()

    async def aclose(self) -> None:
        """Close the aiohttp session and its connections; the transport sends no more."""
        self._closed = True
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    def _new_session(self) -> aiohttp.ClientSession:
        import aiohttp
        import certifi  # a dependency of httpx: the CA bundle httpx trusts

        connector = aiohttp.TCPConnector(
            limit=0,  # the slots limit connections; aiohttp's own limit would only queue
            keepalive_timeout=KEEPALIVE_EXPIRY,
            ssl=ssl.create_default_context(cafile=certifi.where()),
        )
        return aiohttp.ClientSession(
            connector=connector,
            auto_decompress=False,  # httpx decodes the body, as for its own transport
            cookie_jar=aiohttp.DummyCookieJar(),
            skip_auto_headers=_AIOHTTP_DEFAULT_HEADERS,
        )

    async def _exchange(
        self, request: httpx.Request, timeout: dict[str, float | None]
    ) -> httpx.Response:
        import aiohttp

        if self._session is None:
            # Made here, inside the running loop, which aiohttp binds it to.
            self._session = self._new_session()
        content = await request.aread()
        failure: httpx.TransportError | None = None
        try:
            async with self._session.request(
                request.method,
                str(request.url),
                data=content or None,
                headers=_headers(request),
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(
                    total=None, sock_connect=timeout.get("connect"), sock_read=timeout.get("read")
                ),
            ) as answer:
                body = await answer.read()
        except (asyncio.TimeoutError, aiohttp.ClientError) as exc:
            failure = httpx_error(exc, request)
        if failure is not None:
            # Raised outside the except clause, so that aiohttp's exception is not chained:
            # the locals of its frames hold the request headers, the API key among them.
            raise failure
        version = answer.version or aiohttp.HttpVersion11
        return httpx.Response(
            status_code=answer.status,
            headers=answer.raw_headers,
            stream=httpx.ByteStream(body),
            extensions={
                "http_version": f"HTTP/{version.major}.{version.minor}".encode(),
                "reason_phrase": (answer.reason or "").encode("ascii", "replace"),
            },
        )


def _headers(request: httpx.Request) -> list[tuple[str, str]]:
    # The body goes out whole, with its length, even when httpx meant to stream it.
    return [
        (name.decode("latin-1"), value.decode("latin-1"))
        for name, value in request.headers.raw
        if name.lower() != b"transfer-encoding"
    ]


def httpx_error(exc: BaseException, request: httpx.Request) -> httpx.TransportError:
    """The exception httpx's own transport raises for what aiohttp raised as `exc`."""
    import aiohttp

    message = str(exc) or type(exc).__name__
    # Timeouts first: aiohttp's timeout exceptions are connection errors as well.
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return httpx.ConnectTimeout(message, request=request)
    if isinstance(exc, asyncio.TimeoutError):
        return httpx.ReadTimeout(message, request=request)
    if isinstance(exc, aiohttp.ClientConnectorError):
        return httpx.ConnectError(message, request=request)
    if isinstance(
        exc,
        aiohttp.ServerDisconnectedError | aiohttp.ClientPayloadError | aiohttp.ClientResponseError,
    ):
        return httpx.RemoteProtocolError(message, request=request)
    if isinstance(exc, aiohttp.ClientConnectionError):
        return httpx.ReadError(message, request=request)
    if isinstance(exc, aiohttp.InvalidURL | aiohttp.NonHttpUrlClientError):
        return httpx.UnsupportedProtocol(message, request=request)
    return httpx.TransportError(message, request=request)
