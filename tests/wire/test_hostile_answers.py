"""Answers from a hostile or broken server are bounded, on every transport, on a real socket.

The API's answers are under 200 bytes. Each test here sends one that is not: a 590-byte
body encoded `gzip, gzip` that expands to 256 MiB, a 200 MiB body (with a length, and
chunked without one), a body dripped a byte at a time. The client must refuse the large
ones with an error that says why, read no more of them than the SDK's cap (1 MiB), and hold
no more than that in memory (the peak is measured with `tracemalloc` around the call, after
a first call has loaded everything a client loads once); it must give up on the dripped one
at its timeout.

Every test runs on each way a client sends: the sync and async clients' own httpx pools,
`AsyncAmaiClient(transport="aiohttp")`, and an `httpx.Client` / `httpx.AsyncClient` of the
caller's own.
"""

from __future__ import annotations

import functools
import gzip
import tracemalloc
import zlib
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from amaimedia import (
    APIResponseValidationError,
    APITimeoutError,
    Quote,
    ServerError,
)
from tests.answers import QUOTE
from tests.conftest import Harness, Served
from tests.wire.hostile import Answer, HostileServer, repeated

MiB = 1 << 20
# The SDK's cap on an answer, raw and decoded (amaimedia._constants.MAX_ANSWER_BYTES).
MAX_ANSWER_BYTES = MiB
# What a call may hold at its peak while it refuses an answer: the cap, read and decoded,
# and some room for the client's own work. The answers sent are 256 MiB and 200 MiB.
PEAK_LIMIT = 4 * MiB

VARIANTS = ["sync", "async", "aiohttp", "sync-http_client", "async-http_client"]


@pytest.fixture(params=VARIANTS)
def variant(request: pytest.FixtureRequest) -> Iterator[tuple[Harness, Callable[..., Any]]]:
    """A harness and a factory of clients that send the way the parameter names."""
    name: str = request.param
    harness = Harness("async" if name.startswith(("async", "aiohttp")) else "sync")

    def make(
        base_url: str, api_key: str = "amai_live_hostile_test_key_0000", **options: Any
    ) -> Any:
        options.setdefault("max_retries", 0)
        if name == "aiohttp":
            options["transport"] = "aiohttp"
        http_client = harness.http_client() if name.endswith("http_client") else None
        return harness.client(
            http_client=http_client, base_url=base_url, api_key=api_key, **options
        )

    yield harness, make
    harness.close()


def peak_of(harness: Harness, call: Callable[[], Any]) -> tuple[BaseException, int]:
    """What `call()` raised, and the peak of the memory allocated while it ran."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        with pytest.raises(Exception) as exc_info:  # noqa: PT011 - checked by each test
            harness.run(call())
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return exc_info.value, peak


@functools.cache
def zeros_gzipped() -> bytes:
    """256 MiB of zeros, gzipped once: about 260 KB."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, zlib.MAX_WBITS | 16)
    block = bytes(MiB)
    return b"".join([compressor.compress(block) for _ in range(256)] + [compressor.flush()])


@functools.cache
def double_gzip_bomb() -> bytes:
    """The same, gzipped twice: under 600 bytes that expand to 256 MiB."""
    return gzip.compress(zeros_gzipped(), 9)


# --- compression bombs -------------------------------------------------------------------


@pytest.mark.parametrize("status", [200, 503])
def test_a_stacked_gzip_bomb_is_refused_unread(
    variant: tuple[Harness, Callable[..., Any]], loopback: Served, status: int
) -> None:
    harness, make = variant
    bomb = double_gzip_bomb()
    assert len(bomb) < 600
    client = make(loopback.base_url, api_key=loopback.key)
    assert harness.run(client.check("chat")) == Quote(**QUOTE)
    loopback.fake.fail_next(
        "check", status=status, body=bomb, headers={"content-encoding": "gzip, gzip"}
    )

    exc, peak = peak_of(harness, lambda: client.check("chat"))

    expected = APIResponseValidationError if status == 200 else ServerError
    assert isinstance(exc, expected)
    assert exc.status_code == status
    assert "gzip, gzip" in str(exc)
    assert "not read" in str(exc)
    assert exc.request_id is not None
    assert exc.request_id in str(exc)
    assert exc.body is None
    assert peak < PEAK_LIMIT, f"peak {peak / MiB:.1f} MiB"


def test_a_gzip_bomb_is_cut_at_the_cap(
    variant: tuple[Harness, Callable[..., Any]], loopback: Served
) -> None:
    harness, make = variant
    client = make(loopback.base_url, api_key=loopback.key)
    assert harness.run(client.check("chat")) == Quote(**QUOTE)
    loopback.fake.fail_next(
        "check", status=200, body=zeros_gzipped(), headers={"content-encoding": "gzip"}
    )

    exc, peak = peak_of(harness, lambda: client.check("chat"))

    assert isinstance(exc, APIResponseValidationError)
    assert "too large" in str(exc)
    assert f"{MAX_ANSWER_BYTES:,}" in str(exc)
    assert "decoded" in str(exc)
    assert exc.body is None
    assert peak < PEAK_LIMIT, f"peak {peak / MiB:.1f} MiB"


# --- huge bodies -------------------------------------------------------------------------

HUGE = 200 * MiB


@pytest.mark.parametrize("chunked", [False, True], ids=["with-length", "chunked"])
def test_a_200_mib_body_is_refused_without_holding_it(
    variant: tuple[Harness, Callable[..., Any]], chunked: bool
) -> None:
    harness, make = variant
    with HostileServer() as server:
        client = make(server.base_url)
        assert harness.run(client.check("chat")) == Quote(**QUOTE)
        server.queue(Answer(body=repeated(HUGE), length=HUGE, chunked=chunked))

        exc, peak = peak_of(harness, lambda: client.check("chat"))

        assert isinstance(exc, APIResponseValidationError)
        assert exc.status_code == 200
        assert "too large" in str(exc)
        assert f"{MAX_ANSWER_BYTES:,}" in str(exc)
        if not chunked:
            assert f"{HUGE:,}" in str(exc)  # refused by its length, before any of it is read
        assert exc.body is None
        assert peak < PEAK_LIMIT, f"peak {peak / MiB:.1f} MiB"
    # The client hung up: what the server could write is what the socket buffers took.
    assert server.sent[0] < HUGE // 4


def test_a_huge_error_body_keeps_its_status_and_retry_after(
    variant: tuple[Harness, Callable[..., Any]],
) -> None:
    harness, make = variant
    with HostileServer() as server:
        client = make(server.base_url, max_retries=1)
        headers = (("content-type", "text/html"), ("retry-after", "0"), ("cf-ray", "8a-LHR"))
        server.queue(Answer(status=503, headers=headers, body=repeated(HUGE), chunked=True))

        # A 5xx with a body too large to read is still a 5xx, and retried as one.
        assert harness.run(client.check("chat")) == Quote(**QUOTE)
        assert server.requests == 2
        assert harness.sleeps == [0.0]

        server.queue(Answer(status=503, headers=headers, body=repeated(HUGE), length=HUGE))
        exc, _ = peak_of(harness, lambda: client.with_options(max_retries=0).check("chat"))
        assert isinstance(exc, ServerError)
        assert exc.retry_after == 0.0
        assert exc.request_id == "8a-LHR"
        assert "too large" in str(exc)
        assert str(exc).endswith("(request_id=8a-LHR)")


def test_a_body_within_the_cap_is_read_whole(
    variant: tuple[Harness, Callable[..., Any]],
) -> None:
    harness, make = variant
    quote = httpx.Response(200, json=QUOTE).content
    padded = quote[:-1] + b', "pad": "' + b"x" * (MAX_ANSWER_BYTES - len(quote) - 11) + b'"}'
    assert len(padded) == MAX_ANSWER_BYTES
    with HostileServer() as server:
        client = make(server.base_url)
        server.queue(
            Answer(body=lambda: iter([padded[:1000], padded[1000:]]), close=False),
            Answer(
                body=lambda: iter([gzip.compress(padded)]),
                headers=(("content-type", "application/json"), ("content-encoding", "gzip")),
                close=False,
            ),
        )
        for _ in range(2):
            assert harness.run(client.check("chat")).cost_tokens == QUOTE["cost_tokens"]
        assert server.requests == 2


# --- slow bodies -------------------------------------------------------------------------

# A 2,000-byte body, one byte every 20 ms: 40 s to send whole. The server gives up after
# 300 bytes (6 s) and closes, so that a client that waits it out still ends the test.
DRIP = Answer(
    body=lambda: iter([b"{"] * 300), length=2_000, pause=0.02, headers=(("content-type", "x"),)
)
# A client that gives up within its budget reads about 25 bytes in 0.5 s; this leaves
# room for a slow machine, and is far below what a per-read timeout lets through.
DRIPPED_AT_MOST = 150


def test_a_dripped_body_ends_the_attempt_at_its_read_timeout(
    variant: tuple[Harness, Callable[..., Any]],
) -> None:
    harness, make = variant
    with HostileServer() as server:
        client = make(server.base_url, timeout=0.5)
        server.queue(DRIP)

        with pytest.raises(APITimeoutError) as exc_info:
            harness.run(client.check("chat"))

    assert exc_info.value.retryable
    assert "within 0.5 s" in str(exc_info.value)
    assert server.sent[0] < DRIPPED_AT_MOST


def test_total_timeout_bounds_a_dripped_body(
    variant: tuple[Harness, Callable[..., Any]],
) -> None:
    harness, make = variant
    with HostileServer() as server:
        client = make(server.base_url, timeout=10, total_timeout=0.5, max_retries=2)
        server.queue(DRIP)

        with pytest.raises(APITimeoutError) as exc_info:
            harness.run(client.check("chat"))

    assert not exc_info.value.retryable
    assert "total_timeout of 0.5 s is spent after 1 attempt" in str(exc_info.value)
    assert server.requests == 1
    assert server.sent[0] < DRIPPED_AT_MOST
