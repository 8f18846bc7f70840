"""An httpx transport that sends requests with aiohttp, for asyncio code under load.

httpx's own async connection pool spends more time managing itself than sending once
dozens of requests are in flight; aiohttp's pool and its C HTTP parser do not. This
transport keeps everything above the wire on httpx (requests, responses, timeouts, the
exceptions the SDK maps to its own) and hands only the exchange itself to aiohttp.

Proxies and certificates follow the same `TransportSettings` as the SDK's httpx pools.
aiohttp sessions belong to an event loop and a process: the transport keeps one per
running loop (`_loops.py`), fresh in a forked child. aiohttp itself is imported the first
time a request needs it, in a worker thread, never by `import amaimedia`.
"""

from __future__ import annotations

import asyncio
import copy
import importlib
import importlib.util
import sys
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

import httpx

from amaimedia._types import VerifyTypes

from ._bounded import ConnectionSlots
from ._loops import PerLoop
from ._proxies import proxy_credentials
from ._settings import DEFAULT_MAX_CONNECTIONS, KEEPALIVE_EXPIRY, TransportSettings

if TYPE_CHECKING:
    import aiohttp
    import yarl

__all__ = ["AiohttpTransport", "AnswerBody", "Route", "httpx_error"]

# Only the headers httpx built go out: none of the ones aiohttp adds by default.
_AIOHTTP_DEFAULT_HEADERS: Final = ("Accept", "Accept-Encoding", "Content-Type", "User-Agent")


@dataclass
class _Session:
    """One event loop's aiohttp session, and the slots of its connections."""

    session: aiohttp.ClientSession
    slots: ConnectionSlots


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
    retries and errors work as they do without it. Answers are streamed, as httpx's own
    transport streams them: the body is read as httpx (or the SDK, which stops at 1 MiB)
    reads it, and a connection stays taken until the body is closed. Redirects are not
    followed and cookies are not kept.

    Proxies and certificates are those of the SDK's own httpx pools: `HTTPS_PROXY`,
    `ALL_PROXY` and `NO_PROXY`, and `SSL_CERT_FILE` / `SSL_CERT_DIR` (else certifi's
    bundle), unless `trust_env=False`; or `proxy=` and `verify=` as given. It works from
    any event loop, one after another or at once in several threads, and in a forked
    child, where it opens fresh connections.

    Args:
        max_connections: How many connections may be open at once, per event loop. A
            request that finds them all busy waits for one, up to the `pool` timeout.
        verify: `True` to check certificates (against `SSL_CERT_FILE`/`SSL_CERT_DIR`
            with `trust_env`, else certifi's bundle), a CA file or directory, an
            `ssl.SSLContext`, or `False` to check nothing (logged as a warning).
        proxy: A proxy URL for every `https://` request, instead of the environment's.
        trust_env: Whether the proxy and certificate variables count.

    Raises:
        ImportError: aiohttp is not installed.
        ValueError: A setting, or a proxy or certificate variable, is unusable (a
            SOCKS proxy among them: aiohttp speaks only HTTP proxies).
        TypeError: A setting has the wrong type.
    """

    def __init__(
        self,
        *,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        verify: VerifyTypes = True,
        proxy: str | httpx.URL | None = None,
        trust_env: bool = True,
    ) -> None:
        # Found, not imported: importing aiohttp takes a tenth of a second, which must not
        # be spent on a running event loop.
        if importlib.util.find_spec("aiohttp") is None:
            raise ImportError(
                "AiohttpTransport needs aiohttp, which is not installed: "
                "pip install amaimedia[aiohttp]"
            )
        self._settings = TransportSettings.create(
            verify=verify, proxy=proxy, trust_env=trust_env, max_connections=max_connections
        )
        for rule in self._settings.routes.rules:
            if rule.proxy is not None and rule.proxy.scheme not in ("http", "https"):
                raise ValueError(
                    f"AiohttpTransport speaks HTTP proxies only, not {rule.proxy.scheme}://; "
                    "use transport='httpx' for a SOCKS proxy"
                )
        self._sessions: PerLoop[_Session] = PerLoop(self._prepare, self._new_session, _close)
        self._closed = False
        # Most requests share one timeout: made once (see _client_timeout()).
        self._last_timeout: tuple[float | None, float | None, aiohttp.ClientTimeout] | None = None

    def __repr__(self) -> str:
        return f"AiohttpTransport(max_connections={self._settings.max_connections})"

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send `request`; the answer's body streams from the connection as it is read.

        Raises:
            httpx.TransportError: The exchange failed; the subclass says how, as with
                httpx's own transport.
            RuntimeError: The transport is closed.
        """
        content = await request.aread()
        body = await self.open(
            request.method,
            self.route(request.url),
            content,
            _headers(request),
            request.extensions.get("timeout", {}),
            lambda: request,
        )
        return body.response()

    def route(self, url: httpx.URL) -> Route:
        """Where requests to `url` go: the URL as aiohttp takes it, and the proxy.

        The SDK's own requests keep the route of each of their URLs (see `_direct.py`);
        the settings never change, so neither does the route.
        """
        import yarl

        proxy = self._settings.proxy_for(url)
        return Route(yarl.URL(str(url)), proxy)

    async def open(
        self,
        method: str,
        route: Route,
        content: bytes,
        headers: Sequence[tuple[str, str]],
        timeout: Mapping[str, float | None],
        request: Callable[[], httpx.Request],
    ) -> AnswerBody:
        """Send a request and wait for its answer's headers; the body is left to read.

        A connection's slot is taken first (waiting up to the `pool` timeout) and held
        until the body is closed. `request` gives the `httpx.Request` that the failures
        name (`httpx.ConnectError(request=...)`): built only when one is raised.

        Raises:
            httpx.TransportError: The exchange failed, as with `handle_async_request()`.
            RuntimeError: The transport is closed.
        """
        if self._closed:
            raise RuntimeError("this AiohttpTransport is closed")
        state = await self._sessions.get()
        await state.slots.take(timeout.get("pool"), request)
        try:
            answer = await self._send(
                state.session, method, route, content, headers, timeout, request
            )
        except BaseException:
            state.slots.release()
            raise
        if isinstance(answer, httpx.TransportError):
            state.slots.release()
            raise answer
        return AnswerBody(answer, request, route.proxy, state.slots.release)

    async def aclose(self) -> None:
        """Close this loop's aiohttp session; the transport sends no more."""
        self._closed = True
        await self._sessions.aclose()

    async def _prepare(self) -> None:
        # Both take a tenth of a second the first time: in a worker thread, off the loop.
        # Only then: a forked child going on with its parent's loop has no threads in that
        # loop's executor, and a job sent there would never run.
        if "aiohttp" not in sys.modules:  # pragma: no cover - once a process (test_event_loops)
            await asyncio.to_thread(importlib.import_module, "aiohttp")
        if not self._settings.tls.loaded:
            await asyncio.to_thread(self._settings.ssl_context)

    def _new_session(self) -> _Session:
        import aiohttp

        connector = aiohttp.TCPConnector(
            limit=0,  # the slots limit connections; aiohttp's own limit would only queue
            keepalive_timeout=KEEPALIVE_EXPIRY,
            ssl=self._settings.ssl_context(),  # loaded by _prepare
        )
        session = aiohttp.ClientSession(
            connector=connector,
            auto_decompress=False,  # httpx decodes the body, as for its own transport
            cookie_jar=aiohttp.DummyCookieJar(),
            skip_auto_headers=_AIOHTTP_DEFAULT_HEADERS,
            trust_env=False,  # the proxies are the settings' own, chosen per request
        )
        return _Session(session, ConnectionSlots(self._settings.max_connections))

    async def _send(
        self,
        session: aiohttp.ClientSession,
        method: str,
        route: Route,
        content: bytes,
        headers: Sequence[tuple[str, str]],
        timeout: Mapping[str, float | None],
        request: Callable[[], httpx.Request],
    ) -> aiohttp.ClientResponse | httpx.TransportError:
        """The answer of aiohttp, or the httpx exception for its failure, to raise.

        The failure is returned, and raised outside this except clause, so that aiohttp's
        exception is not chained to it: the locals of its frames hold the request headers,
        the API key among them.
        """
        import aiohttp

        try:
            # Awaited, not entered: the answer outlives this call, until its body is closed.
            return await session.request(
                method,
                route.url,
                data=content or None,
                headers=headers,
                allow_redirects=False,
                proxy=route.proxy_url,
                timeout=self._client_timeout(timeout.get("connect"), timeout.get("read")),
            )
        except (asyncio.TimeoutError, aiohttp.ClientError) as exc:
            return httpx_error(exc, request(), route.proxy)

    def _client_timeout(self, connect: float | None, read: float | None) -> aiohttp.ClientTimeout:
        """The aiohttp timeout of these phases: the last one made, when it is the same."""
        last = self._last_timeout
        if last is not None and last[0] == connect and last[1] == read:
            return last[2]
        import aiohttp

        made = aiohttp.ClientTimeout(total=None, sock_connect=connect, sock_read=read)
        self._last_timeout = (connect, read, made)
        return made


class Route:
    """Where the requests to one URL go: the URL as aiohttp takes it, and the proxy.

    Attributes:
        url: The URL, parsed once.
        proxy: The proxy the requests go through, or `None` to connect directly.
        proxy_url: The same proxy as aiohttp takes it.
    """

    __slots__ = ("proxy", "proxy_url", "url")

    def __init__(self, url: yarl.URL, proxy: httpx.URL | None) -> None:
        self.url = url
        self.proxy = proxy
        self.proxy_url = None if proxy is None else str(proxy)

    def __repr__(self) -> str:
        # Never the proxy: its URL may hold credentials.
        return f"<Route {self.url.path}>"


class AnswerBody(httpx.AsyncByteStream):
    """An answer's body as aiohttp receives it; closing it gives the connection's slot back.

    A body closed before its end closes its connection, which can carry nothing more: the
    rest of it is never read.

    Attributes:
        answer: aiohttp's answer, its headers in.
    """

    __slots__ = ("_proxy", "_release", "_request", "answer")

    def __init__(
        self,
        answer: aiohttp.ClientResponse,
        request: Callable[[], httpx.Request],
        proxy: httpx.URL | None,
        release: Callable[[], None],
    ) -> None:
        self.answer = answer
        self._request = request
        self._proxy = proxy
        self._release: Callable[[], None] | None = release

    def response(self) -> httpx.Response:
        """The answer as httpx's own transport gives it: its body streams from this one."""
        import aiohttp

        answer = self.answer
        version = answer.version or aiohttp.HttpVersion11
        return httpx.Response(
            status_code=answer.status,
            headers=answer.raw_headers,
            stream=self,
            extensions={
                "http_version": f"HTTP/{version.major}.{version.minor}".encode(),
                "reason_phrase": (answer.reason or "").encode("ascii", "replace"),
            },
        )

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while True:
            piece = await self.next_piece()
            if not piece:
                return
            yield piece

    async def next_piece(self) -> bytes:
        """The next piece of the body as it arrives; `b""` at its end.

        Raises:
            httpx.TransportError: The body could not be read (a timeout, a cut connection).
        """
        import aiohttp

        failure: httpx.TransportError
        try:
            return await self.answer.content.readany()
        except (asyncio.TimeoutError, aiohttp.ClientError) as exc:
            failure = httpx_error(exc, self._request(), self._proxy)
        raise failure  # outside the except clause, for the same reason as in open()

    def at_eof(self) -> bool:
        """Whether the whole body has been read."""
        return self.answer.content.at_eof()

    async def aclose(self) -> None:
        self.close()

    def close(self) -> None:
        """Give the connection back to the pool (or close it, mid-body), and the slot."""
        answer = self.answer
        try:
            if answer.content.at_eof():
                answer.release()  # the connection goes back to the pool
            else:
                answer.close()
        finally:
            release, self._release = self._release, None
            if release is not None:
                release()


async def _close(state: _Session) -> None:
    await state.session.close()


def _headers(request: httpx.Request) -> list[tuple[str, str]]:
    # The body goes out whole, with its length, even when httpx meant to stream it.
    return [
        (name.decode("latin-1"), value.decode("latin-1"))
        for name, value in request.headers.raw
        if name.lower() != b"transfer-encoding"
    ]


def httpx_error(
    exc: BaseException, request: httpx.Request, proxy: httpx.URL | None = None
) -> httpx.TransportError:
    """The exception httpx's own transport raises for what aiohttp raised as `exc`.

    A failure of the certificate check or of the name lookup keeps the operating system's
    error as its `__cause__`, as httpx's own transport does, so that the SDK can tell
    that no retry will fix it. The cause is a copy without its traceback: the frames it
    was raised through hold the request's headers. The message never holds the proxy's
    credentials, which aiohttp puts in some of its own (the proxy's URL, whole).
    """
    import aiohttp

    if isinstance(exc, aiohttp.ClientHttpProxyError):
        return httpx.ProxyError(
            f"the proxy refused the tunnel: {exc.status} {exc.message}", request=request
        )
    message = _without_credentials(str(exc) or type(exc).__name__, proxy)
    # Timeouts first: aiohttp's timeout exceptions are connection errors as well.
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return httpx.ConnectTimeout(message, request=request)
    if isinstance(exc, asyncio.TimeoutError):
        return httpx.ReadTimeout(message, request=request)
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return _with_cause(httpx.ConnectError(message, request=request), exc.certificate_error)
    if isinstance(exc, aiohttp.ClientConnectorError):
        return _with_cause(httpx.ConnectError(message, request=request), exc.os_error)
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


def _without_credentials(message: str, proxy: httpx.URL | None) -> str:
    # Every form the credentials take, and the user name alone, which aiohttp may quote.
    secrets = (*proxy_credentials(proxy), proxy.username) if proxy is not None else ()
    for secret in secrets:
        if secret:
            message = message.replace(secret, "[proxy credentials]")
    return message


def _with_cause(error: httpx.TransportError, cause: BaseException) -> httpx.TransportError:
    bare = copy.copy(cause)
    bare.__traceback__ = None
    error.__cause__ = bare
    return error
