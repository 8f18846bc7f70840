"""`bound_answer()`: an answer, read within bounds that a hostile or broken server cannot stretch.

The API's answers are under 200 bytes. The clients send every request with `stream=True`,
call `bound_answer()` as soon as the headers are in, then read the body (`read()`,
`aread()`) through the checks it puts in front of it, on the SDK's own pool and on one of
the caller's alike:

- Size: at most `MAX_ANSWER_BYTES` (1 MiB) is read, and the body decodes to at most as
  much. A `Content-Length` over the cap is refused before any of the body is read; a body
  without one is counted as it arrives. No more than the cap of it is ever held.
- Codings: the SDK asks for gzip or deflate (`Accept-Encoding`), and httpx decodes the one
  coding an answer has; each piece is decoded here first, in steps that never make more
  than the cap, so that httpx is never handed a piece that would pass it. Codings stacked
  on one another (`gzip, gzip`: a 590-byte body expands to 256 MiB) and codings the SDK
  did not ask for are refused unread.
- Time: the body must be whole within the attempt's `read` timeout of its headers, and
  before the call's `total_timeout` runs out. httpx times each wait for a part of it, so
  a server that drips it a byte at a time could hold an attempt for as long as it likes.

An answer refused for its size or coding raises the SDK's error for its status
(`unread_answer_error`); the client then closes the answer, and with it the connection,
so the rest is never read. A late body raises `httpx.ReadTimeout`, and a corrupt one
`httpx.DecodingError`, as httpx's own reading does, so that they are retried like any
timeout or broken answer.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import AsyncIterator, Iterator
from typing import Final

import httpx

from ._constants import ACCEPTED_ENCODINGS, MAX_ANSWER_BYTES
from ._deadline import Deadline
from ._response import unread_answer_error

__all__ = ["body_ends", "bound_answer", "late_body"]

_LIMIT: Final = f"the SDK's limit of {MAX_ANSWER_BYTES:,} bytes (1 MiB)"
_ONE_CODING: Final = "the SDK decodes one gzip or deflate coding"


def bound_answer(response: httpx.Response, deadline: Deadline | None = None) -> None:
    """Check an answer's headers, and put the SDK's bounds in front of its body.

    Args:
        response: The answer, streamed (`stream=True`) and its body not read yet; or read
            whole already by an in-process transport (`httpx.MockTransport`), in which
            case only its size is checked.
        deadline: The call's `total_timeout`, if it has one.

    Raises:
        APIError: The answer is not a 2xx and is refused unread (too large, encoded twice
            over); the subclass is the one its status gives.
        APIResponseValidationError: A 2xx refused unread.
    """
    if response.is_stream_consumed:  # read whole by the transport, in process
        if len(response.content) > MAX_ANSWER_BYTES:
            raise unread_answer_error(response, f"too large: over {_LIMIT}")
        return
    # One pass over the headers: this runs on every call.
    length = codings = None
    for name, value in response.headers.raw:
        name = name.lower()
        if name == b"content-length":
            length = value
        elif name == b"content-encoding":
            codings = value if codings is None else codings + b"," + value
    if length is not None and length.strip().isdigit() and int(length) > MAX_ANSWER_BYTES:
        reason = f"too large: {int(length):,} bytes, over {_LIMIT}"
        raise unread_answer_error(response, reason)
    decoder = None if codings is None else _decoder_for(response, codings)
    response.stream = _BoundedBody(response, decoder, deadline)


class _BoundedBody(httpx.SyncByteStream, httpx.AsyncByteStream):
    """An answer's body as the transport streams it, each piece checked on its way to httpx.

    It counts the raw bytes, decodes each piece (when the answer has a coding) to count
    what it makes, and checks the time, all before httpx sees the piece.
    """

    def __init__(
        self, response: httpx.Response, decoder: _ZlibDecoder | None, deadline: Deadline | None
    ) -> None:
        self._stream = response.stream
        self._response = response
        self._decoder = decoder
        self._raw = 0
        self._decoded = 0
        # The attempt's read timeout: the client's, or what the call's deadline cut it to.
        self._timeout: float | None = response.request.extensions.get("timeout", {}).get("read")
        self._ends, self._by_deadline = body_ends(self._timeout, deadline)

    def __iter__(self) -> Iterator[bytes]:
        stream = self._stream
        assert isinstance(stream, httpx.SyncByteStream)
        for piece in stream:
            self._take(piece)
            yield piece
        self._end()

    async def __aiter__(self) -> AsyncIterator[bytes]:
        stream = self._stream
        assert isinstance(stream, httpx.AsyncByteStream)
        async for piece in stream:
            self._take(piece)
            yield piece
        self._end()

    def close(self) -> None:
        assert isinstance(self._stream, httpx.SyncByteStream)
        self._stream.close()

    async def aclose(self) -> None:
        assert isinstance(self._stream, httpx.AsyncByteStream)
        await self._stream.aclose()

    def _take(self, piece: bytes) -> None:
        """Account for the next raw piece of the body, before httpx decodes it.

        Raises:
            httpx.ReadTimeout: The body is late: its time ran out before this piece.
            httpx.DecodingError: The piece does not decode.
            APIError: The body is over the cap, raw or decoded (a 2xx:
                `APIResponseValidationError`).
        """
        # The first piece is never late: it came with the headers' own wait (a stalled
        # machine that reads it late must not fail an answer that arrived in time); what
        # follows it, a body drip-fed piece by piece, is held to the time left.
        if self._raw and self._ends is not None and time.monotonic() > self._ends:
            raise httpx.ReadTimeout(
                late_body(self._timeout, self._by_deadline), request=self._response.request
            )
        self._raw += len(piece)
        if self._raw > MAX_ANSWER_BYTES:
            raise unread_answer_error(self._response, f"too large: over {_LIMIT}")
        if piece and self._decoder is not None:
            self._count(self._decoder.decode(piece, MAX_ANSWER_BYTES - self._decoded))

    def _end(self) -> None:
        if self._decoder is not None:
            self._count(self._decoder.flush())

    def _count(self, decoded: int) -> None:
        self._decoded += decoded
        if self._decoded > MAX_ANSWER_BYTES:
            raise unread_answer_error(self._response, f"too large once decoded: over {_LIMIT}")


def body_ends(read_timeout: float | None, deadline: Deadline | None) -> tuple[float | None, bool]:
    """When the body of an answer whose headers just came must be whole.

    Args:
        read_timeout: The attempt's `read` timeout: the client's, or what the call's
            deadline cut it to.
        deadline: The call's `total_timeout`, if it has one.

    Returns:
        The `time.monotonic()` by which the body must be in (`None`: no limit), and
        whether the call's deadline is what sets it.
    """
    now = time.monotonic()
    ends = None if read_timeout is None else now + read_timeout
    if deadline is not None:
        call_ends = now + deadline.left()
        if ends is None or call_ends < ends:
            return call_ends, True
    return ends, False


def late_body(read_timeout: float | None, by_deadline: bool) -> str:
    """The message of the `httpx.ReadTimeout` of a body that came too late (`body_ends()`)."""
    if by_deadline or read_timeout is None:
        return "the answer's body did not arrive whole before the call's total_timeout"
    return f"the answer's body did not arrive whole within {read_timeout:g} s of its headers"


def _decoder_for(response: httpx.Response, value: bytes) -> _ZlibDecoder | None:
    """The decoder of the answer's one coding, `None` for none; refuses any more, or others.

    Args:
        response: The answer.
        value: Its `Content-Encoding` headers, joined by commas.
    """
    codings = [coding.strip().lower() for coding in value.decode("latin-1").split(",")]
    codings = [coding for coding in codings if coding and coding != "identity"]
    if not codings:
        return None
    shown = response.headers.get("content-encoding", "")
    if len(codings) > 1:
        times = "twice" if len(codings) == 2 else f"{len(codings)} times"
        reason = f"encoded {times} over ({shown!r}), and {_ONE_CODING}"
        raise unread_answer_error(response, reason)
    if codings[0] not in ACCEPTED_ENCODINGS:
        raise unread_answer_error(response, f"encoded as {shown!r}, and {_ONE_CODING}")
    return _ZlibDecoder(codings[0], response.request)


class _ZlibDecoder:
    """gzip, or deflate (zlib-wrapped, or raw as some servers send it), as httpx decodes them.

    Decoding stops one byte past the room left: that byte is enough to know the body is
    over the cap, and nothing more of it is ever made. The bytes made are counted, not
    kept: httpx decodes the same pieces again, now that their size is known to fit.
    """

    def __init__(self, coding: str, request: httpx.Request) -> None:
        self._request = request
        # Only a deflate body's first piece may show that it lacks the zlib wrapper.
        self._may_be_raw = coding == "deflate"
        self._zlib = zlib.decompressobj(
            zlib.MAX_WBITS | 16 if coding == "gzip" else zlib.MAX_WBITS
        )

    def decode(self, piece: bytes, room: int) -> int:
        """Decode `piece`, making at most `room + 1` bytes; returns how many it made."""
        # max_length stops zlib from making more; the input it did not use is left in
        # unconsumed_tail, and is never needed: the body is then over the cap.
        try:
            made = len(self._zlib.decompress(piece, room + 1))
        except zlib.error as exc:
            if not self._may_be_raw:
                raise httpx.DecodingError(str(exc), request=self._request) from None
            self._may_be_raw = False
            self._zlib = zlib.decompressobj(-zlib.MAX_WBITS)
            return self.decode(piece, room)
        self._may_be_raw = False
        return made

    def flush(self) -> int:
        """The bytes left once the body ended: none, as every piece was decoded whole."""
        try:
            return len(self._zlib.flush())
        except zlib.error as exc:
            raise httpx.DecodingError(str(exc), request=self._request) from None
