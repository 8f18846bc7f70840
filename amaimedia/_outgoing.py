"""`Outgoing`: one request of the SDK's, as the bytes it sends; its `httpx.Request` on demand.

A call builds its request once, before the retry loop, so that every attempt of a spend
sends the same bytes. Sent through httpx (the sync client, a pool of the caller's, the
async client's httpx transport), it is an `httpx.Request`, built as soon as it is sent.
The async client's direct path (`_transports/_direct.py`) sends the same bytes with the
same headers straight on aiohttp, and builds the `httpx.Request` only when an error names
it; what every request to one URL shares (the headers httpx would send, the request that
closing the pool names) it takes from that URL's `Template`, made once per configuration.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import httpx

if TYPE_CHECKING:
    from ._config import ClientConfig
    from ._deadline import Deadline

__all__ = ["Outgoing", "RequestBuilder", "Template"]


class RequestBuilder:
    """Builds the requests of one client configuration, on its pool.

    Args:
        config: The configuration: the URLs, headers (with the key) and timeout.
        http: The pool, whose `build_request` adds its own headers.
    """

    __slots__ = ("_config", "_http", "_merges", "_templates")

    def __init__(self, config: ClientConfig, http: httpx.Client | httpx.AsyncClient) -> None:
        self._config = config
        self._http = http
        # A pool whose class builds its requests its own way builds every one of them.
        self._merges = type(http).build_request is httpx.Client.build_request
        # By identity: the URLs are the configuration's own, and hashing an httpx.URL
        # costs more than the whole look-up should.
        self._templates: dict[int, tuple[httpx.URL, Template]] = {}

    def build(self, url: httpx.URL, content: bytes) -> Outgoing:
        """A `POST` of `content` to `url`."""
        return Outgoing(self, url, content, self._config.timeout.as_dict())

    def request(self, url: httpx.URL, content: bytes) -> httpx.Request:
        """The `httpx.Request` of a `POST` of `content` to `url`, as httpx builds it.

        The pool's `build_request` merges its own headers, query parameters and cookies
        into each request. What that merge gives for `url` is kept in the URL's
        template, and a request is made from it directly while the pool holds what it
        held then (the same headers and parameters, and no cookie): the same request, in
        about half the time. After the pool's headers or parameters change, the template
        is made again first. A pool that holds a cookie, or whose class has a
        `build_request` of its own, builds each request itself.
        """
        http = self._http
        if not self._merges or http.cookies:
            return self._built(url, content)
        template = self.template(url)
        if not template.fits(http):
            template = self._refresh(url)
        return httpx.Request(
            "POST",
            template.request.url,
            headers=template.raw,
            content=content,
            extensions={"timeout": self._config.timeout.as_dict()},
        )

    def _built(self, url: httpx.URL, content: bytes) -> httpx.Request:
        config = self._config
        return self._http.build_request(
            "POST", url, content=content, headers=config.headers, timeout=config.timeout
        )

    def sent_key(self) -> str:
        """The API key its requests carry, to blank where an answer echoes it."""
        return self._config.api_key.reveal()

    def template(self, url: httpx.URL) -> Template:
        """What every request to `url` shares, made on first use."""
        found = self._templates.get(id(url))
        if found is None or found[0] is not url:
            return self._refresh(url)
        return found[1]

    def _refresh(self, url: httpx.URL) -> Template:
        template = Template(self._built(url, b""), self._http)
        self._templates[id(url)] = (url, template)
        return template


class Template:
    """What every request of one configuration to one URL shares.

    Attributes:
        request: Such a request with an empty body, as httpx builds it: what the request
            of an attempt is named by when the pool closes under it (`InFlight`), and
            what the observer is told of.
        raw: Its headers as they go on the wire, without `Content-Length` (each request
            adds its own). Never shown: the API key is one of them.
        headers: The same, as text.
        route: Where the transport of the direct path sends to this URL, kept here by it.
    """

    __slots__ = (
        "_cookieless",
        "_pool_headers",
        "_pool_params",
        "headers",
        "raw",
        "request",
        "route",
    )

    def __init__(self, request: httpx.Request, http: httpx.Client | httpx.AsyncClient) -> None:
        self.request = request
        self.raw = [
            (name, value)
            for name, value in request.headers.raw
            if name.lower() not in (b"content-length", b"transfer-encoding")
        ]
        self.headers = tuple(
            (name.decode("latin-1"), value.decode("latin-1")) for name, value in self.raw
        )
        self.route: object = None
        # What the pool merged into `request`; see `fits`.
        self._pool_headers = http.headers.raw
        self._pool_params = http.params
        self._cookieless = not http.cookies

    def fits(self, http: httpx.Client | httpx.AsyncClient) -> bool:
        """Whether `http`, holding no cookie, builds this URL's requests as it built `request`.

        It held no cookie then either, and its headers and query parameters are what they
        were.
        """
        return (
            self._cookieless
            and http.params is self._pool_params
            and http.headers.raw == self._pool_headers
        )

    def __repr__(self) -> str:
        return f"<Template POST {self.request.url.path}>"


class Outgoing:
    """One request of a call, built once and sent by each of its attempts.

    Attributes:
        url: Where it goes.
        content: Its body, the JSON of the call's arguments.
        timeout: The current attempt's timeout, phase by phase (as the `timeout`
            extension of an `httpx.Request` holds it): the client's, or what the call's
            `total_timeout` cut it to.
    """

    __slots__ = ("_builder", "_request", "content", "timeout", "url")

    def __init__(
        self,
        builder: RequestBuilder,
        url: httpx.URL,
        content: bytes,
        timeout: dict[str, float | None],
    ) -> None:
        self._builder = builder
        self.url = url
        self.content = content
        self.timeout = timeout
        self._request: httpx.Request | None = None

    def __repr__(self) -> str:
        return f"<Outgoing POST {self.url.path}>"

    def request(self) -> httpx.Request:
        """The request as an `httpx.Request`, built on first use; the same one after that."""
        request = self._request
        if request is None:
            request = self._request = self._builder.request(self.url, self.content)
            request.extensions["timeout"] = self.timeout
        return request

    def sent_key(self) -> str:
        """The API key this request carries."""
        return self._builder.sent_key()

    def template(self) -> Template:
        """What this request shares with every other of its configuration to its URL."""
        return self._builder.template(self.url)

    def start_attempt(self, deadline: Deadline, timeout: httpx.Timeout) -> None:
        """Cut every phase of the next attempt's `timeout` to the time the call has left.

        Raises:
            APITimeoutError: No time is left.
        """
        self.timeout = deadline.attempt_timeout(timeout)
        if self._request is not None:
            self._request.extensions["timeout"] = self.timeout
