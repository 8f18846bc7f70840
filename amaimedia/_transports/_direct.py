"""The direct path: the async client's own requests, sent straight on its aiohttp transport.

Through `httpx.AsyncClient.send()`, each attempt costs more in httpx's client layer (the
`httpx.Request`, headers merged, cookies extracted, the `httpx.Response` and its streams)
than in aiohttp's exchange itself. An `AsyncAmaiClient(transport="aiohttp")` sends its
`check()` and `spend()` (and their `with_raw_response` twins) without it, on its own pool
only (a pool of the caller's, `http_client=`, keeps httpx's client layer, hooks and all):

- the bytes and headers httpx would send, taken from the `Template` of the request's URL
  (`_outgoing.py`), go out on the same aiohttp session, connection slots, proxy route and
  timeouts as `AiohttpTransport.handle_async_request()` (`_aiohttp.py`);
- a 2xx whose body the SDK can read whole as it comes (a `Content-Length` within the
  SDK's cap, no content coding) is read within the same time bound as `bound_answer()`
  sets, and parsed straight into the model (`parse_success()`): a `DirectAnswer`, whose
  `httpx.Response` is built only if someone asks for it (`with_raw_response`), or when
  its body does not parse after all (its error is then made from it, as ever);
- every other answer becomes the `httpx.Response` the transport gives httpx, and is read
  and mapped exactly as on the httpx path: `bound_answer()`, then `parse_response()`. So
  an error, its `response` (with its `request`), message and body are those of the httpx
  path, and so are its failures: httpx's exceptions, wrapped by `connection_error()`.

An attempt is counted by the pool's `InFlight` as on the httpx path, and refused in the
same way once the pool is closed.
"""

from __future__ import annotations

import time
from datetime import timedelta
from typing import TYPE_CHECKING, Final

import httpx

from amaimedia._answer import body_ends, bound_answer, late_body
from amaimedia._constants import MAX_ANSWER_BYTES
from amaimedia._response import REQUEST_ID_HEADERS, connection_error, dead_loop_error

from ._aiohttp import AiohttpTransport, AnswerBody, Route

if TYPE_CHECKING:
    from amaimedia._deadline import Deadline
    from amaimedia._in_flight import InFlight
    from amaimedia._outgoing import Outgoing, Template

__all__ = ["DirectAnswer", "DirectPath"]

# What httpx.AsyncClient raises when asked to send on a client that was closed.
_CLOSED: Final = "Cannot send a request, as the client has been closed."


class DirectPath:
    """Sends a client's own requests straight on the `AiohttpTransport` of its pool.

    Args:
        transport: The pool's transport.
    """

    __slots__ = ("_transport",)

    def __init__(self, transport: AiohttpTransport) -> None:
        self._transport = transport

    async def attempt(
        self,
        outgoing: Outgoing,
        in_flight: InFlight,
        pool: httpx.AsyncClient,
        deadline: Deadline | None,
    ) -> DirectAnswer | httpx.Response:
        """One attempt at sending `outgoing`: its answer, read whole within the SDK's bounds.

        Args:
            outgoing: The request.
            in_flight: The pool's attempts in flight, which this one joins.
            pool: The pool, whose transport this path's is: a closed one sends nothing.
            deadline: The call's `total_timeout`, if it has one.

        Raises:
            APIConnectionError: No answer (`APITimeoutError` for a timeout), or the pool
                was closed.
            APIError: An answer refused unread (too large, encoded twice over).
            APIResponseValidationError: A 2xx refused unread.
        """
        template = outgoing.template()
        with in_flight.attempt(template.request, pool):
            try:
                if pool.is_closed:
                    raise RuntimeError(_CLOSED)
                return await self._exchange(outgoing, template, deadline)
            except httpx.RequestError as exc:
                raise connection_error(exc, outgoing.request()) from exc
            except RuntimeError as exc:
                raise dead_loop_error(exc, outgoing.request()) from exc

    async def _exchange(
        self, outgoing: Outgoing, template: Template, deadline: Deadline | None
    ) -> DirectAnswer | httpx.Response:
        route = template.route
        if not isinstance(route, Route):
            route = template.route = self._transport.route(outgoing.url)
        content = outgoing.content
        started = time.perf_counter()
        body = await self._transport.open(
            "POST",
            route,
            content,
            SentHeaders((*template.headers, ("Content-Length", str(len(content))))),
            outgoing.timeout,
            outgoing.request,
        )
        if _readable_whole(body):
            try:
                read = await _read_whole(body, outgoing, deadline)
            finally:
                body.close()
            return DirectAnswer(outgoing, body, read, time.perf_counter() - started)
        response = body.response()
        try:
            response.request = outgoing.request()
            # As on the httpx path (AsyncAmaiClient._attempt): bounded, read, closed.
            bound_answer(response, deadline)
            await response.aread()
        finally:
            await response.aclose()
        response.elapsed = timedelta(seconds=time.perf_counter() - started)
        return response


class SentHeaders(tuple[tuple[str, str], ...]):
    """The headers of a request as they go on the wire, never shown: the API key is one.

    A traceback's frame locals (what error trackers capture) show the repr of each value.
    """

    __slots__ = ()

    def __repr__(self) -> str:
        return f"<{len(self)} headers>"


def _readable_whole(body: AnswerBody) -> bool:
    """Whether the answer is a 2xx that the direct path reads itself.

    Its `Content-Length` is within the SDK's cap, so aiohttp's parser hands over no more
    than that many bytes; and it has no content coding (nor a transfer coding) to decode
    within bounds, which `bound_answer()` does for the other answers.
    """
    answer = body.answer
    if not 200 <= answer.status < 300:
        return False
    length = answer.content_length
    if length is None or length > MAX_ANSWER_BYTES:
        return False
    headers = answer.headers
    return "Content-Encoding" not in headers and "Transfer-Encoding" not in headers


async def _read_whole(body: AnswerBody, outgoing: Outgoing, deadline: Deadline | None) -> bytes:
    """The body, whole by the time `bound_answer()` allows (see `_answer.py`).

    Raises:
        httpx.ReadTimeout: The body is late.
        httpx.TransportError: The body could not be read.
    """
    read_timeout = outgoing.timeout.get("read")
    ends, by_deadline = body_ends(read_timeout, deadline)
    pieces: list[bytes] = []
    while not body.at_eof():
        piece = await body.next_piece()
        if not piece:
            break
        # The first piece is never late: it came with the headers' own wait.
        if pieces and ends is not None and time.monotonic() > ends:
            raise httpx.ReadTimeout(
                late_body(read_timeout, by_deadline), request=outgoing.request()
            )
        pieces.append(piece)
    return pieces[0] if len(pieces) == 1 else b"".join(pieces)


class DirectAnswer:
    """A 2xx answer the direct path read whole: what a call needs of it, without httpx.

    Its `httpx.Response` is built when asked for (`response()`), with the same status,
    headers, body, request and elapsed time as the httpx path's.

    Attributes:
        method: The request's method.
        url: The request's URL.
        status_code: The HTTP status, a 2xx.
        content: The body.
    """

    __slots__ = (
        "_answer_headers",
        "_elapsed",
        "_headers",
        "_outgoing",
        "_raw_headers",
        "_reason",
        "_response",
        "_version",
        "content",
        "method",
        "status_code",
        "url",
    )

    def __init__(
        self, outgoing: Outgoing, body: AnswerBody, content: bytes, elapsed: float
    ) -> None:
        answer = body.answer
        self.method = "POST"
        self.url = outgoing.url
        self.status_code = answer.status
        self.content = content
        self._outgoing = outgoing
        self._raw_headers = answer.raw_headers
        self._answer_headers = answer.headers
        self._version = answer.version
        self._reason = answer.reason
        self._elapsed = elapsed
        self._headers: httpx.Headers | None = None
        self._response: httpx.Response | None = None

    def __repr__(self) -> str:
        return f"<DirectAnswer [{self.status_code}]>"

    @property
    def headers(self) -> httpx.Headers:
        """The answer's headers, as httpx reads them."""
        headers = self._headers
        if headers is None:
            headers = self._headers = httpx.Headers(self._raw_headers)
        return headers

    @property
    def request_id(self) -> str | None:
        """`request_id_of()` the answer, read from aiohttp's headers: no `httpx.Headers`.

        As httpx reads a header given more than once: its values joined by `", "`.
        """
        headers = self._answer_headers
        for name in REQUEST_ID_HEADERS:
            value = ", ".join(headers.getall(name, ()))
            if value:
                return value
        return None

    def sent_key(self) -> str:
        """The API key of the request this answers."""
        return self._outgoing.sent_key()

    def response(self) -> httpx.Response:
        """The answer as an `httpx.Response`, its body read; built once, on first use."""
        response = self._response
        if response is None:
            version = self._version
            response = self._response = httpx.Response(
                status_code=self.status_code,
                headers=self._raw_headers,
                content=self.content,
                request=self._outgoing.request(),
                extensions={
                    "http_version": (
                        b"HTTP/1.1"
                        if version is None
                        else f"HTTP/{version.major}.{version.minor}".encode()
                    ),
                    "reason_phrase": (self._reason or "").encode("ascii", "replace"),
                },
            )
            response.elapsed = timedelta(seconds=self._elapsed)
        return response
