"""What only shows on a real socket: dropped connections, timeouts, the bytes on the wire.

Every client here talks to a `FakeAmaiServer` served on loopback (the `loopback` fixture)
over httpx's real transport, through its own connection pool unless a test says otherwise;
faults are queued with `fail_next`, and what arrived is read from `fake.requests`. Waits
between retries are recorded by the harness, so the only real waiting is the client
timeout of a few tenths of a second.
"""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import pytest

from amaimedia import (
    AmaiError,
    APIConnectionError,
    APIError,
    APITimeoutError,
    Quote,
    ServerError,
)
from tests.answers import QUOTE
from tests.conftest import Harness, Served

TIMEOUT = 0.3


def loopback_client(harness: Harness, loopback: Served, **options: Any) -> Any:
    """A client with its own connection pool, pointed at the loopback server."""
    options.setdefault("timeout", TIMEOUT)
    return harness.client(
        http_client=None, base_url=loopback.base_url, api_key=loopback.key, **options
    )


def close(harness: Harness, client: Any) -> None:
    harness.run(client.aclose() if harness.is_async else client.close())


# --- the round trip ----------------------------------------------------------------------


def test_over_loopback(harness: Harness, loopback: Served) -> None:
    client = harness.client(http_client=None, base_url=loopback.base_url, api_key=loopback.key)
    # The fake prices dub at 40 tokens a unit.
    assert harness.run(client.check("dub", units=2.5)).cost_tokens == 100
    assert loopback.fake.requests[0].path == "/api/v1/tools/check"


# --- dropped connections -----------------------------------------------------------------


def test_dropped_connection_then_success_recovers(harness: Harness, loopback: Served) -> None:
    loopback.fake.fail_next("check", drop=True)
    client = loopback_client(harness, loopback)

    assert harness.run(client.check("chat")) == Quote(**QUOTE)
    assert len(loopback.fake.requests) == 2
    assert len(harness.sleeps) == 1


def test_persistent_drops_raise_connection_error(harness: Harness, loopback: Served) -> None:
    loopback.fake.fail_next("spend", drop=True, times=3)
    client = loopback_client(harness, loopback, max_retries=1)

    with pytest.raises(APIConnectionError) as exc_info:
        harness.run(client.spend("chat", reference="job-1"))

    # A dropped connection is not a timeout; the message names what httpx saw.
    assert not isinstance(exc_info.value, APITimeoutError)
    assert isinstance(exc_info.value.__cause__, httpx.TransportError)
    assert "/api/v1/tools/spend" in str(exc_info.value)
    assert len(loopback.fake.requests) == 2
    assert len(harness.sleeps) == 1


# --- slow answers ------------------------------------------------------------------------


def test_slow_answer_times_out(harness: Harness, loopback: Served) -> None:
    loopback.fake.fail_next("check", delay=1.0)
    client = loopback_client(harness, loopback, timeout=0.2, max_retries=0)

    started = time.monotonic()
    with pytest.raises(APITimeoutError) as exc_info:
        harness.run(client.check("chat"))
    elapsed = time.monotonic() - started

    # Given up at the client's timeout, not when the server finally answered.
    assert elapsed < 0.8
    assert isinstance(exc_info.value.__cause__, httpx.TimeoutException)
    assert len(loopback.fake.requests) == 1


def test_slow_answer_then_normal_answer_succeeds(harness: Harness, loopback: Served) -> None:
    loopback.fake.fail_next("check", delay=1.0)
    client = loopback_client(harness, loopback, timeout=0.2, max_retries=1)

    started = time.monotonic()
    assert harness.run(client.check("chat")) == Quote(**QUOTE)
    elapsed = time.monotonic() - started

    assert elapsed < 0.8
    assert len(loopback.fake.requests) == 2
    assert len(harness.sleeps) == 1


# --- the request on the wire -------------------------------------------------------------


@pytest.mark.parametrize("endpoint", ["check", "spend"])
def test_request_on_the_wire(harness: Harness, loopback: Served, endpoint: str) -> None:
    client = loopback_client(harness, loopback)

    if endpoint == "check":
        harness.run(client.check("dub", units=2.5))
        expected = {"tool": "dub", "units": 2.5}
    else:
        harness.run(client.spend("dub", units=2.5, reference="job-7"))
        expected = {"tool": "dub", "units": 2.5, "reference": "job-7"}

    (request,) = loopback.fake.requests
    headers = dict(request.headers)
    assert request.path == f"/api/v1/tools/{endpoint}"
    # The fake keeps no key, but accepted this one: it is the key the client was given.
    # (The exact header value is checked in process: tests/client/test_config.py.)
    assert headers["authorization"] == "Bearer [redacted]"
    assert request.status == 200
    assert headers["user-agent"].startswith("amaimedia-python/")
    assert "Python" in headers["user-agent"]
    assert headers["accept"] == "application/json"
    assert headers["content-type"] == "application/json"
    assert json.loads(request.content) == expected


def test_retried_request_sends_the_same_bytes(harness: Harness, loopback: Served) -> None:
    loopback.fake.fail_next("spend", drop=True)
    loopback.fake.fail_next("spend", status=503, body=b"busy")
    client = loopback_client(harness, loopback)

    charge = harness.run(client.spend("chat"))

    requests = loopback.fake.requests
    assert len(requests) == 3
    assert len({request.content for request in requests}) == 1
    assert json.loads(requests[0].content)["reference"] == charge.reference


# --- answers that are not what the client expects ----------------------------------------


def test_redirect_is_not_followed(harness: Harness, loopback: Served) -> None:
    # The target is on the same server, so a followed redirect would show as a second request.
    target = f"{loopback.base_url}/api/v1/tools/moved"
    loopback.fake.fail_next("check", status=302, headers={"location": target})
    client = loopback_client(harness, loopback)

    with pytest.raises(APIError) as exc_info:
        harness.run(client.check("chat"))

    assert exc_info.value.status_code == 302
    assert target in str(exc_info.value)
    assert len(loopback.fake.requests) == 1
    assert harness.sleeps == []


def test_html_bad_gateway_is_a_server_error(harness: Harness, loopback: Served) -> None:
    page = b"<html><body><h1>502 Bad Gateway</h1></body></html>"
    loopback.fake.fail_next(
        "check", status=502, body=page, content_type="text/html", headers={"cf-ray": "abc-LHR"}
    )
    client = loopback_client(harness, loopback, max_retries=0)

    with pytest.raises(ServerError) as exc_info:
        harness.run(client.check("chat"))

    error = exc_info.value
    assert error.status_code == 502
    assert error.error is None
    assert error.body == page.decode()
    assert error.request_id == "abc-LHR"
    assert "not JSON" in str(error)
    assert len(loopback.fake.requests) == 1


def test_html_bad_gateway_is_retried(harness: Harness, loopback: Served) -> None:
    loopback.fake.fail_next(
        "check", status=502, body=b"<html>Bad Gateway</html>", content_type="text/html"
    )
    client = loopback_client(harness, loopback)

    assert harness.run(client.check("chat")) == Quote(**QUOTE)
    assert len(loopback.fake.requests) == 2


# --- who closes the connection pool ------------------------------------------------------


def test_close_closes_own_pool(harness: Harness, loopback: Served) -> None:
    client = loopback_client(harness, loopback)
    harness.run(client.check("chat"))
    assert not client.is_closed

    close(harness, client)

    assert client.is_closed
    with pytest.raises(AmaiError, match="closed"):
        harness.run(client.check("chat"))
    assert len(loopback.fake.requests) == 1


def test_context_manager_closes_own_pool(harness: Harness, loopback: Served) -> None:
    client = loopback_client(harness, loopback)

    async def use_async() -> None:
        async with client:
            await client.check("chat")

    if harness.is_async:
        harness.run(use_async())
    else:
        with client:
            client.check("chat")

    assert client.is_closed is True
    assert len(loopback.fake.requests) == 1


def test_callers_http_client_is_left_open(harness: Harness, loopback: Served) -> None:
    http = harness.http_client(timeout=TIMEOUT)
    client = harness.client(http_client=http, base_url=loopback.base_url, api_key=loopback.key)
    harness.run(client.check("chat"))

    close(harness, client)

    assert http.is_closed is False
    # The SDK client is closed all the same: it sends nothing more.
    assert client.is_closed is True
    with pytest.raises(AmaiError, match="closed"):
        harness.run(client.check("chat"))
    # The pool is still usable by its owner.
    response = harness.run(
        http.post(
            f"{loopback.base_url}/api/v1/tools/check",
            json={"tool": "chat", "units": 1},
            headers={"Authorization": f"Bearer {loopback.key}"},
        )
    )
    assert response.status_code == 200
    assert len(loopback.fake.requests) == 2


def test_with_options_copy_does_not_close_the_shared_pool(
    harness: Harness, loopback: Served
) -> None:
    client = loopback_client(harness, loopback)
    copy = client.with_options(max_retries=0)
    harness.run(copy.check("chat"))

    close(harness, copy)

    assert client.is_closed is False
    assert harness.run(client.check("chat")) == Quote(**QUOTE)
    close(harness, client)
    assert copy.is_closed is True
