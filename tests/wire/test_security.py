"""The API key stays secret on a real socket: in the logs of httpx's own transport, and in
the exceptions raised for what only a wire shows (a cut connection).

The server is a `FakeAmaiServer` on loopback. The planted key is not one it issued, so every
answer here is a queued fault: faults are answered before any authentication.
"""

from __future__ import annotations

import logging

import pytest

from amaimedia import APIConnectionError, AuthenticationError, RateLimitError
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
