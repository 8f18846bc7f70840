"""What the client reads of an answer, in process: the cap and the one content coding.

The wire tests (`tests/wire/test_hostile_answers.py`) send hostile answers over a real
socket on every transport and measure memory. Here an `httpx.MockTransport` answers with a
body that is streamed piece by piece (`Pieces`, which counts what was read of it) or with
one read whole (respx), so that each rule is seen on its own:

- the cap (1 MiB), by `Content-Length` before reading and by counting while reading;
- the one content coding the SDK decodes (gzip or deflate), in steps bounded by the cap.
"""

from __future__ import annotations

import gzip
import json
import time
import zlib
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import respx

from amaimedia import (
    APIConnectionError,
    APIResponseValidationError,
    InsufficientCreditsError,
    RateLimitError,
)
from tests.answers import QUOTE, queue
from tests.conftest import Harness

MiB = 1 << 20
# The SDK's limit (amaimedia._constants), as the docs give it.
MAX_ANSWER_BYTES = MiB
QUOTE_BYTES = json.dumps(QUOTE).encode()


class Pieces(httpx.SyncByteStream, httpx.AsyncByteStream):
    """A body streamed in `pieces`, for either client, counting the pieces read."""

    def __init__(self, pieces: list[bytes]) -> None:
        self.pieces = pieces
        self.read = 0
        self.closed = False

    def __iter__(self) -> Iterator[bytes]:
        for piece in self.pieces:
            self.read += 1
            yield piece

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for piece in self.pieces:
            self.read += 1
            yield piece

    def close(self) -> None:
        self.closed = True

    async def aclose(self) -> None:
        self.closed = True


def streaming_client(
    harness: Harness, status: int, headers: dict[str, str], body: Pieces, **options: Any
) -> Any:
    """A client whose every answer is `status`, `headers` and the streamed `body`."""

    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, headers=headers, stream=body)

    http = harness.http_client(transport=httpx.MockTransport(answer))
    options.setdefault("max_retries", 0)
    return harness.client(http_client=http, **options)


def test_the_limit_is_the_documented_one() -> None:
    from amaimedia import _constants

    assert _constants.MAX_ANSWER_BYTES == MAX_ANSWER_BYTES


# --- the cap -----------------------------------------------------------------------------


def test_a_length_over_the_cap_is_refused_before_reading(harness: Harness) -> None:
    body = Pieces([b"x" * MiB, b"x" * MiB])
    headers = {"content-length": str(2 * MiB), "cf-ray": "8a1b-LHR"}
    client = streaming_client(harness, 200, headers, body)

    with pytest.raises(APIResponseValidationError) as exc_info:
        harness.run(client.check("chat"))

    exc = exc_info.value
    assert body.read == 0
    assert body.closed
    assert exc.status_code == 200
    assert exc.body is None
    assert str(exc) == (
        "200: the answer to /api/v1/tools/check is too large: 2,097,152 bytes, over the "
        "SDK's limit of 1,048,576 bytes (1 MiB), so it was not read (request_id=8a1b-LHR)"
    )


def test_a_body_without_a_length_is_read_up_to_the_cap(harness: Harness) -> None:
    body = Pieces([b"x" * (64 * 1024)] * 100)  # 6.25 MiB
    client = streaming_client(harness, 200, {}, body)

    with pytest.raises(APIResponseValidationError, match="too large: over the SDK's limit"):
        harness.run(client.check("chat"))

    assert body.read == 17  # the 17th piece is the first past 1 MiB
    assert body.closed


def test_an_error_too_large_to_read_keeps_its_class_and_details(harness: Harness) -> None:
    body = Pieces([b"<html>" * MiB])
    headers = {"retry-after": "7", "x-request-id": "req_9"}
    client = streaming_client(harness, 429, headers, body, max_retry_after=5)

    with pytest.raises(RateLimitError) as exc_info:
        harness.run(client.check("chat"))

    exc = exc_info.value
    assert exc.retry_after == 7
    assert exc.body is None
    assert exc.error is None
    assert str(exc) == (
        "429 Too Many Requests: too many requests; the answer is too large: over the SDK's "
        "limit of 1,048,576 bytes (1 MiB), so its body was not read; the server asked to "
        "wait 7 s (request_id=req_9)"
    )


def test_a_402_too_large_to_read_is_still_insufficient_credits(harness: Harness) -> None:
    body = Pieces([b"{" * (MiB + 1)])
    client = streaming_client(harness, 402, {}, body)
    with pytest.raises(InsufficientCreditsError) as exc_info:
        harness.run(client.spend("dub", reference="job-1"))
    assert exc_info.value.cost_tokens is None
    assert exc_info.value.reference == "job-1"
    assert "too large" in str(exc_info.value)


def test_a_5xx_too_large_to_read_is_retried(harness: Harness, api: respx.Router) -> None:
    queue(api["check"], httpx.Response(503, content=b"x" * (MiB + 1)))
    client = harness.client(api)

    assert harness.run(client.check("chat")).cost_tokens == QUOTE["cost_tokens"]
    assert len(api.calls) == 2


def test_an_answer_read_whole_by_the_transport_is_held_to_the_cap(
    harness: Harness, api: respx.Router
) -> None:
    # respx (any transport that reads the answer itself) hands over the body in one piece:
    # it is in memory already, but the client still refuses what the wire would have.
    padded = {**QUOTE, "pad": "x" * MiB}
    queue(api["check"], httpx.Response(200, json=padded))
    client = harness.client(api)
    with pytest.raises(APIResponseValidationError, match="too large"):
        harness.run(client.check("chat"))
    assert len(api.calls) == 1


def test_the_whole_cap_is_allowed(harness: Harness) -> None:
    padding = MAX_ANSWER_BYTES - len(QUOTE_BYTES) - len(b', "pad": ""')
    exact = QUOTE_BYTES[:-1] + b', "pad": "' + b"x" * padding + b'"}'
    assert len(exact) == MAX_ANSWER_BYTES
    body = Pieces([exact[:10], exact[10:]])
    client = streaming_client(harness, 200, {"content-length": str(len(exact))}, body)
    assert harness.run(client.check("chat")).cost_tokens == QUOTE["cost_tokens"]


# --- content codings ---------------------------------------------------------------------


def raw_deflate(data: bytes) -> bytes:
    compressor = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    return compressor.compress(data) + compressor.flush()


@pytest.mark.parametrize(
    ("coding", "encoded"),
    [
        ("gzip", gzip.compress(QUOTE_BYTES)),
        ("GZIP", gzip.compress(QUOTE_BYTES)),
        ("deflate", zlib.compress(QUOTE_BYTES)),
        ("deflate", raw_deflate(QUOTE_BYTES)),
        ("identity", QUOTE_BYTES),
        ("gzip, identity", gzip.compress(QUOTE_BYTES)),
        ("", QUOTE_BYTES),
    ],
)
def test_one_coding_is_decoded(harness: Harness, coding: str, encoded: bytes) -> None:
    pieces = [encoded[i : i + 7] for i in range(0, len(encoded), 7)]
    body = Pieces(pieces)
    client = streaming_client(harness, 200, {"content-encoding": coding}, body)
    assert harness.run(client.check("chat")).cost_tokens == QUOTE["cost_tokens"]
    assert body.read == len(pieces)


def test_an_error_read_in_pieces_keeps_its_response_whole(harness: Harness) -> None:
    payload = json.dumps({"ok": False, "error": "insufficient_credits", "balance": 2}).encode()
    encoded = gzip.compress(payload)
    body = Pieces([encoded[:5], encoded[5:]])
    client = streaming_client(harness, 402, {"content-encoding": "gzip"}, body)
    with pytest.raises(InsufficientCreditsError) as exc_info:
        harness.run(client.check("chat"))
    response = exc_info.value.response
    assert response is not None
    assert response.headers["content-encoding"] == "gzip"
    assert response.json() == json.loads(payload)
    assert exc_info.value.balance == 2


@pytest.mark.parametrize(
    ("coding", "shown"),
    [
        ("gzip, gzip", "encoded twice over ('gzip, gzip')"),
        ("deflate, gzip", "encoded twice over ('deflate, gzip')"),
        ("gzip, gzip, gzip", "encoded 3 times over ('gzip, gzip, gzip')"),
        ("br", "encoded as 'br'"),
        ("zstd", "encoded as 'zstd'"),
        ("x-custom", "encoded as 'x-custom'"),
    ],
)
def test_stacked_and_unasked_codings_are_refused_unread(
    harness: Harness, coding: str, shown: str
) -> None:
    body = Pieces([b"\x1f\x8b" * 100])
    client = streaming_client(harness, 200, {"content-encoding": coding}, body)
    with pytest.raises(APIResponseValidationError) as exc_info:
        harness.run(client.check("chat"))
    assert shown in str(exc_info.value)
    assert "the SDK decodes one gzip or deflate coding" in str(exc_info.value)
    assert body.read == 0
    assert exc_info.value.body is None


def test_a_decoded_body_over_the_cap_stops_decoding(harness: Harness) -> None:
    encoded = gzip.compress(bytes(64 * MiB))  # 64 KB
    body = Pieces([encoded[i : i + 4096] for i in range(0, len(encoded), 4096)])
    client = streaming_client(harness, 200, {"content-encoding": "gzip"}, body)
    with pytest.raises(APIResponseValidationError, match="too large once decoded"):
        harness.run(client.check("chat"))
    assert body.read < len(body.pieces) // 8


def test_a_corrupt_gzip_body_is_a_broken_answer(harness: Harness) -> None:
    body = Pieces([b"\x1f\x8b\x08\x00 not gzip at all"])
    client = streaming_client(harness, 200, {"content-encoding": "gzip"}, body)
    with pytest.raises(APIConnectionError, match="DecodingError") as exc_info:
        harness.run(client.check("chat"))
    assert exc_info.value.retryable


def test_the_client_asks_only_for_the_codings_it_decodes(
    harness: Harness, api: respx.Router
) -> None:
    # A pool of the caller's that asks for more (brotli installed, or set by hand) still
    # gets the SDK's own header on the SDK's requests.
    http = harness.http_client(api, headers={"accept-encoding": "br, zstd"})
    client = harness.client(http_client=http)
    harness.run(client.check("chat"))
    assert api.calls[0].request.headers["accept-encoding"] == "gzip, deflate"


# --- the body's time ---------------------------------------------------------------------


class LatePieces(Pieces):
    """A body whose pieces are handed over `late` seconds apart, the first one included.

    The wait is a blocking sleep for both clients: it stands for a machine that stalls
    between reading an answer's headers and its body (a loaded CI runner), not for a
    server that is slow to send.
    """

    def __init__(self, pieces: list[bytes], late: float) -> None:
        super().__init__(pieces)
        self.late = late

    def __iter__(self) -> Iterator[bytes]:
        for piece in self.pieces:
            time.sleep(self.late)
            self.read += 1
            yield piece

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for piece in self.pieces:
            time.sleep(self.late)
            self.read += 1
            yield piece


def test_a_body_whose_first_piece_is_read_late_is_not_late(harness: Harness) -> None:
    # The whole body in its first piece: it came with the headers, within their wait,
    # however late the machine got round to reading it.
    body = LatePieces([QUOTE_BYTES], late=0.3)
    client = streaming_client(harness, 200, {}, body, timeout=0.1)

    assert harness.run(client.check("chat")).cost_tokens == QUOTE["cost_tokens"]


def test_a_piece_after_the_first_one_past_the_read_timeout_ends_the_attempt(
    harness: Harness,
) -> None:
    half = len(QUOTE_BYTES) // 2
    body = LatePieces([QUOTE_BYTES[:half], QUOTE_BYTES[half:]], late=0.3)
    client = streaming_client(harness, 200, {}, body, timeout=0.1)

    with pytest.raises(APIConnectionError, match=r"did not arrive whole within 0\.1 s"):
        harness.run(client.check("chat"))
    assert body.read == 2
