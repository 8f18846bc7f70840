"""The API key stays secret on a real socket: in the logs of httpx's own transport, and in
the exceptions raised for what only a wire shows (a cut connection).

The server is a `FakeAmaiServer` on loopback. The planted key is not one it issued, so every
answer here is a queued fault: faults are answered before any authentication.
"""

from __future__ import annotations

import logging
import socket
import sys
import traceback

import httpx
import pytest

from amaimedia import APIConnectionError, APITimeoutError, AuthenticationError, RateLimitError
from tests.answers import CHARGE, QUOTE
from tests.conftest import Harness, Served
from tests.planted import SECRET, assert_exception_is_clean, assert_secret_absent, call


def test_key_never_reaches_logs_or_exceptions(
    harness: Harness, loopback: Served, caplog: pytest.LogCaptureFixture
) -> None:
    for name in (None, "amaimedia", "httpx", "httpcore"):
        caplog.set_level(logging.DEBUG, logger=name)
    client = harness.client(http_client=None, base_url=loopback.base_url, api_key=SECRET)
    once = client.with_options(max_retries=0)
    fake = loopback.fake
    fake.fail_next("check", status=200, body=QUOTE)
    fake.fail_next("spend", status=200, body=CHARGE)
    fake.fail_next("check", status=429, retry_after=0)
    fake.fail_next("check", status=200, body=QUOTE)  # the retry
    fake.fail_next("spend", status=401)
    fake.fail_next("check", status=429)
    fake.fail_next("check", drop=True)
    harness.run(client.check("chat"))
    harness.run(client.spend("chat", reference="job-1"))
    harness.run(client.check("chat"))
    raised = [
        call(harness, lambda: client.spend("chat", reference="job-2")),
        call(harness, lambda: once.check("chat")),
        call(harness, lambda: once.check("chat")),
    ]
    assert [type(e) for e in raised] == [AuthenticationError, RateLimitError, APIConnectionError]
    assert len(fake.requests) == 7
    # A bearer key went with every request; that it is the planted one, the fake (which
    # keeps no key) cannot say: tests/client/test_security.py checks it in process.
    assert all(dict(r.headers)["authorization"] == "Bearer [redacted]" for r in fake.requests)

    # The logs are real: the SDK's, httpx's and httpcore's own, at every level.
    names = {record.name.split(".")[0] for record in caplog.records}
    assert {"amaimedia", "httpx", "httpcore"} <= names
    assert any("Retrying" in record.getMessage() for record in caplog.records)
    formatter = logging.Formatter()
    for record in caplog.records:
        where = f"log record {record.name}:{record.lineno}"
        assert_secret_absent(record.getMessage(), where)
        assert_secret_absent(repr(record.args), f"args of {where}")
        assert_secret_absent(formatter.format(record), where)

    for exc in raised:
        assert_exception_is_clean(exc)


def test_a_stalled_write_leaves_the_key_out_of_the_traceback(harness: Harness) -> None:
    # A peer that never reads: the request's bytes fill the socket buffers and the write
    # times out while httpcore's frames hold the raw headers (and the write buffer) in
    # their locals. A padding header makes the request larger than those buffers.
    with socket.create_server(("127.0.0.1", 0)) as silent:
        port = silent.getsockname()[1]
        http = harness.http_client(headers={"x-padding": "p" * 16_000_000})
        client = harness.client(
            http_client=http,
            base_url=f"http://127.0.0.1:{port}",
            api_key=SECRET,
            timeout=httpx.Timeout(5.0, write=0.2),
            max_retries=0,
        )
        exc = call(harness, lambda: client.check("chat"))

    assert isinstance(exc, APITimeoutError)
    assert isinstance(exc.__cause__, httpx.WriteTimeout)
    assert_exception_is_clean(exc)
    # Only the frames that held the key are gone: the failure still shows where it began.
    frames = [frame.name for frame in traceback.extract_tb(exc.__cause__.__traceback__)]
    assert "_attempt" in frames
    if sys.version_info >= (3, 11):
        # httpcore's own exception, chained under httpx's, is the one that lost frames.
        chained = [exc.__cause__, exc.__cause__.__context__]
        notes = [note for e in chained for note in getattr(e, "__notes__", [])]
        assert any("left out of this traceback" in note for note in notes), notes
