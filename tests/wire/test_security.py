"""The API key stays secret on a real socket: in the logs of httpx's own transport, and in
the exceptions raised for what only a wire shows (a cut connection)."""

from __future__ import annotations

import json
import logging

import pytest

from amaimedia import APIConnectionError, AuthenticationError, RateLimitError
from tests.conftest import Harness
from tests.fakes import Action, LoopbackServer
from tests.planted import SECRET, assert_exception_is_clean, assert_secret_absent, call


def test_key_never_reaches_logs_or_exceptions(
    harness: Harness, loopback: LoopbackServer, caplog: pytest.LogCaptureFixture
) -> None:
    for name in (None, "amaimedia", "httpx", "httpcore"):
        caplog.set_level(logging.DEBUG, logger=name)
    client = harness.client(http_client=None, base_url=loopback.base_url, api_key=SECRET)
    once = client.with_options(max_retries=0)
    rate_limited = json.dumps({"ok": False, "error": "rate_limited"}).encode()
    loopback.actions.extend(
        [
            LoopbackServer.default("/check"),
            LoopbackServer.default("/spend"),
            Action(status=429, body=rate_limited, headers={"retry-after": "0"}),
            LoopbackServer.default("/check"),  # the retry
            Action(status=401, body=b'{"ok": false, "error": "auth_required"}'),
            Action(status=429, body=rate_limited),
            Action(drop=True),
        ]
    )
    harness.run(client.check("chat"))
    harness.run(client.spend("chat", reference="job-1"))
    harness.run(client.check("chat"))
    raised = [
        call(harness, lambda: client.spend("chat", reference="job-2")),
        call(harness, lambda: once.check("chat")),
        call(harness, lambda: once.check("chat")),
    ]
    assert [type(e) for e in raised] == [AuthenticationError, RateLimitError, APIConnectionError]
    assert len(loopback.requests) == 7
    assert all(h["Authorization"] == f"Bearer {SECRET}" for _, h, _ in loopback.requests)

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
