"""`FakeAmaiServer.fail_next()`: every fault, met by the SDK's real clients.

Most tests run four ways: sync and async clients (the `harness`), each in process and
over a real loopback socket. Waits between retries are recorded by the harness instead
of slept; the only real waits are a client timeout of a few hundredths of a second.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import httpx
import pytest

from amaimedia import (
    APIConnectionError,
    APIError,
    APIResponseValidationError,
    APITimeoutError,
    Charge,
    ForbiddenError,
    Quote,
    RateLimitError,
    ServerError,
)
from amaimedia.testing import FakeAmaiServer
from tests.conftest import Harness

CHECK = "/api/v1/tools/check"
SPEND = "/api/v1/tools/spend"

MakeClient = Callable[..., Any]


@pytest.fixture(params=["in-process", "loopback"])
def via(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def fake() -> FakeAmaiServer:
    return FakeAmaiServer()


@pytest.fixture
def key(fake: FakeAmaiServer) -> str:
    return fake.create_key(balance=1_000)


@pytest.fixture
def make_client(
    harness: Harness, fake: FakeAmaiServer, key: str, via: str
) -> Iterator[MakeClient]:
    """Builds a client of the harness's kind on `fake`, the `via` way, with `key`."""
    with ExitStack() as stack:

        def make(**options: Any) -> Any:
            if via == "in-process":
                factory = fake.async_client if harness.is_async else fake.client
                client: Any = factory(key, **options)
                harness.record_sleeps(client)
                stack.callback(
                    lambda: harness.run(client.aclose() if harness.is_async else client.close())
                )
                return client
            base_url = stack.enter_context(fake.serve())
            return harness.client(http_client=None, api_key=key, base_url=base_url, **options)

        yield make


def statuses(fake: FakeAmaiServer, endpoint: str | None = None) -> list[int | None]:
    return [r.status for r in fake.requests if endpoint is None or r.endpoint == endpoint]


# --- rate limits and server errors -------------------------------------------------------


def test_a_rate_limit_with_retry_after_is_retried(
    harness: Harness, fake: FakeAmaiServer, key: str, make_client: MakeClient
) -> None:
    fake.fail_next("spend", status=429, retry_after=1)
    client = make_client(max_retry_after=5)

    charge = harness.run(client.spend("chat", reference="job-1"))

    assert charge == Charge(ok=True, charged=5, balance_after=995, reference="job-1")
    assert harness.sleeps == [1.0]
    assert statuses(fake) == [429, 200]
    assert len(fake.spends) == 1


def test_a_rate_limit_is_raised_once_retries_are_off(
    harness: Harness, fake: FakeAmaiServer, key: str, make_client: MakeClient
) -> None:
    fake.fail_next("check", status=429, retry_after=2.5)
    client = make_client(max_retries=0)

    with pytest.raises(RateLimitError) as caught:
        harness.run(client.check("chat"))

    error = caught.value
    assert (error.status_code, error.error, error.retry_after) == (429, "rate_limited", 2.5)
    assert error.body == {"ok": False, "error": "rate_limited"}
    assert error.request_id == fake.requests[0].request_id
    assert fake.balance(key) == 1_000


def test_retry_after_longer_than_the_client_accepts_is_raised_at_once(
    harness: Harness, fake: FakeAmaiServer, make_client: MakeClient
) -> None:
    fake.fail_next("check", status=429, retry_after=120)
    client = make_client(max_retry_after=60)
    with pytest.raises(RateLimitError):
        harness.run(client.check("chat"))
    assert harness.sleeps == []


def test_an_html_error_page_is_a_server_error(
    harness: Harness, fake: FakeAmaiServer, make_client: MakeClient
) -> None:
    page = b"<html>bad gateway</html>"
    fake.fail_next("spend", status=503, body=page, content_type="text/html")
    client = make_client(max_retries=0)

    with pytest.raises(ServerError) as caught:
        harness.run(client.spend("chat", reference="job-1"))

    assert caught.value.status_code == 503
    assert caught.value.error is None
    assert caught.value.body == page.decode()
    assert caught.value.response is not None
    assert caught.value.response.headers["content-type"] == "text/html"
    assert caught.value.reference == "job-1"
    assert fake.spends == []


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_server_errors_are_retried_until_one_succeeds(
    harness: Harness, fake: FakeAmaiServer, make_client: MakeClient, status: int
) -> None:
    fake.fail_next("check", status=status, times=2)
    quote = harness.run(make_client().check("chat"))
    assert quote.allowed is True
    assert statuses(fake) == [status, status, 200]
    assert len(harness.sleeps) == 2


def test_server_errors_beyond_the_retries_are_raised(
    harness: Harness, fake: FakeAmaiServer, make_client: MakeClient
) -> None:
    fake.fail_next("spend", status=500, times=3)
    client = make_client(max_retries=2)

    with pytest.raises(ServerError) as caught:
        harness.run(client.spend("chat", reference="job-1"))

    assert caught.value.error == "server_error"
    assert caught.value.body == {"ok": False, "error": "server_error"}
    # The queue is used up: the next spend of the same reference charges, once.
    assert harness.run(client.spend("chat", reference="job-1")).charged == 5
    assert statuses(fake) == [500, 500, 500, 200]


# --- cut connections ---------------------------------------------------------------------


def test_a_spend_cut_after_commit_is_replayed_not_charged_twice(
    harness: Harness, fake: FakeAmaiServer, key: str, make_client: MakeClient
) -> None:
    fake.fail_next("spend", drop_after_commit=True)
    client = make_client()

    charge = harness.run(client.spend("dub", units=2))

    first, second = fake.requests
    assert first.body == second.body  # the retry sent the same reference
    assert (first.status, second.status) == (None, 200)
    assert first.request_id is None
    [row] = fake.spends
    assert row.reference == charge.reference == first.body["reference"]
    # The second answer is the replay of the charge the first attempt made.
    assert (charge.charged, charge.balance_after) == (80, 920)
    assert fake.balance(key) == 920
    assert len(harness.sleeps) == 1


def test_a_spend_cut_after_commit_without_retries_can_be_replayed(
    harness: Harness, fake: FakeAmaiServer, key: str, make_client: MakeClient
) -> None:
    fake.fail_next("spend", drop_after_commit=True)
    client = make_client(max_retries=0)

    with pytest.raises(APIConnectionError) as caught:
        harness.run(client.spend("music"))

    reference = caught.value.reference
    assert reference is not None
    assert fake.balance(key) == 970  # it did charge
    replay = harness.run(client.spend("music", reference=reference))
    assert (replay.charged, replay.balance_after) == (30, 970)
    assert len(fake.spends) == 1


@pytest.mark.parametrize("endpoint", ["check", "spend"])
def test_a_connection_cut_before_processing_is_retried(
    harness: Harness, fake: FakeAmaiServer, key: str, make_client: MakeClient, endpoint: str
) -> None:
    fake.fail_next(endpoint, drop=True)
    client = make_client()

    if endpoint == "check":
        assert harness.run(client.check("chat")).balance_after == 995
    else:
        assert harness.run(client.spend("chat")).balance_after == 995

    assert statuses(fake) == [None, 200]
    assert fake.balance(key) == (1_000 if endpoint == "check" else 995)
    assert len(harness.sleeps) == 1


def test_a_cut_before_processing_charges_nothing(
    harness: Harness, fake: FakeAmaiServer, key: str, make_client: MakeClient
) -> None:
    fake.fail_next("spend", drop=True)
    with pytest.raises(APIConnectionError) as caught:
        harness.run(make_client(max_retries=0).spend("chat", reference="job-1"))
    assert not isinstance(caught.value, APITimeoutError)
    assert caught.value.reference == "job-1"
    assert fake.balance(key) == 1_000
    assert fake.spends == []


@pytest.mark.parametrize("drop", ["drop", "drop_after_commit"])
def test_a_cut_looks_like_a_server_that_closed_without_answering(
    fake: FakeAmaiServer, key: str, via: str, drop: str
) -> None:
    fake.fail_next("check", drop=drop == "drop", drop_after_commit=drop == "drop_after_commit")
    with ExitStack() as stack:
        if via == "in-process":
            http = stack.enter_context(
                httpx.Client(transport=fake.transport(), base_url=fake.BASE_URL)
            )
        else:
            http = stack.enter_context(httpx.Client(base_url=stack.enter_context(fake.serve())))
        with pytest.raises(httpx.RemoteProtocolError) as caught:
            http.post(CHECK, json={"tool": "chat", "units": 1})
    assert str(caught.value) == "Server disconnected without sending a response."


# --- slow answers ------------------------------------------------------------------------


def test_a_delayed_answer_then_arrives_normally(
    harness: Harness, fake: FakeAmaiServer, make_client: MakeClient
) -> None:
    fake.fail_next("check", delay=0.01)
    assert harness.run(make_client().check("chat")) == Quote(
        ok=True, allowed=True, cost_tokens=5, balance_after=995
    )
    assert statuses(fake) == [200]


def test_a_delay_with_a_status(
    harness: Harness, fake: FakeAmaiServer, make_client: MakeClient
) -> None:
    fake.fail_next("check", status=403, delay=0.01)
    with pytest.raises(ForbiddenError):
        harness.run(make_client().check("chat"))


def test_in_process_delays_sleep_the_way_the_client_waits(
    harness: Harness, fake: FakeAmaiServer, key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    slept: list[tuple[str, float]] = []
    client: Any
    if harness.is_async:

        async def recorded_sleep(seconds: float) -> None:
            slept.append(("asyncio", seconds))

        monkeypatch.setattr(asyncio, "sleep", recorded_sleep)
        client = fake.async_client(key)
    else:
        monkeypatch.setattr(time, "sleep", lambda seconds: slept.append(("time", seconds)))
        client = fake.client(key)
    fake.fail_next("check", delay=30)

    assert harness.run(client.check("chat")).allowed is True
    harness.run(client.aclose() if harness.is_async else client.close())
    assert slept == [("asyncio" if harness.is_async else "time", 30.0)]


@pytest.mark.parametrize("endpoint", ["check", "spend"])
def test_a_delay_beyond_the_timeout_times_out(
    harness: Harness, fake: FakeAmaiServer, key: str, endpoint: str
) -> None:
    fake.fail_next(endpoint, delay=60)
    with fake.serve() as base_url:
        client = harness.client(
            http_client=None, api_key=key, base_url=base_url, timeout=0.05, max_retries=0
        )
        with pytest.raises(APITimeoutError) as caught:
            harness.run(client.check("chat") if endpoint == "check" else client.spend("chat"))
        harness.run(client.aclose() if harness.is_async else client.close())
    # A slow answer is still a processed request: the spend charged.
    assert fake.balance(key) == (1_000 if endpoint == "check" else 995)
    if endpoint == "spend":
        assert caught.value.reference == fake.spends[0].reference


# --- other answers -----------------------------------------------------------------------


def test_a_success_status_with_a_broken_body(
    harness: Harness, fake: FakeAmaiServer, make_client: MakeClient
) -> None:
    fake.fail_next("spend", status=200, body="definitely not json")
    with pytest.raises(APIResponseValidationError) as caught:
        harness.run(make_client().spend("chat"))
    assert caught.value.body == "definitely not json"
    assert harness.sleeps == []  # never retried: a 2xx may have charged


def test_a_mapping_body_is_sent_as_json(
    harness: Harness, fake: FakeAmaiServer, make_client: MakeClient
) -> None:
    fake.fail_next("check", status=200, body={"ok": False, "error": "forbidden"})
    with pytest.raises(ForbiddenError):
        harness.run(make_client().check("chat"))


def test_retry_after_as_an_http_date(
    harness: Harness, fake: FakeAmaiServer, make_client: MakeClient
) -> None:
    fake.fail_next("check", status=429, retry_after="Wed, 21 Oct 2015 07:28:00 GMT")
    harness.run(make_client().check("chat"))
    assert fake.requests[0].status == 429
    assert harness.sleeps == [0.0]  # a date in the past: retry at once


@pytest.mark.parametrize(
    ("status", "error"),
    [(400, "invalid_request"), (404, "not_found"), (409, "conflict"), (418, "i_m_a_teapot"),
     (499, "error"), (302, "found")],
)  # fmt: skip
def test_default_error_bodies(fake: FakeAmaiServer, status: int, error: str) -> None:
    fake.fail_next("check", status=status)
    with httpx.Client(transport=fake.transport(), base_url=fake.BASE_URL) as http:
        response = http.post(CHECK)
    assert (response.status_code, response.json()) == (status, {"ok": False, "error": error})
    assert "retry-after" not in response.headers


# --- extra answer headers ----------------------------------------------------------------


@contextmanager
def raw_http(fake: FakeAmaiServer, via: str) -> Iterator[httpx.Client]:
    """A plain httpx client reaching `fake` in process, or over a loopback socket."""
    if via == "in-process":
        with httpx.Client(transport=fake.transport(), base_url=fake.BASE_URL) as http:
            yield http
    else:
        with fake.serve() as base_url, httpx.Client(base_url=base_url, timeout=5) as http:
            yield http


def test_extra_headers_are_sent_with_the_answer(fake: FakeAmaiServer, via: str) -> None:
    fake.fail_next(
        "check",
        status=503,
        retry_after=2,
        headers={"CF-Ray": "8a1b2c3d-LHR", "x-served-by": "edge-7"},
    )
    with raw_http(fake, via) as http:
        response = http.post(CHECK)
    assert response.status_code == 503
    assert response.headers["cf-ray"] == "8a1b2c3d-LHR"
    assert response.headers["x-served-by"] == "edge-7"
    # The fake's own headers are all still there, and only once.
    assert response.headers.get_list("content-type") == ["application/json"]
    assert response.headers.get_list("retry-after") == ["2"]
    assert response.headers["x-request-id"] == fake.requests[0].request_id


def test_a_header_the_client_reads_reaches_it(
    harness: Harness, fake: FakeAmaiServer, make_client: MakeClient
) -> None:
    fake.fail_next("check", status=403, headers={"cf-ray": "8a1b2c3d-LHR"})
    with pytest.raises(ForbiddenError) as caught:
        harness.run(make_client().check("chat"))
    assert caught.value.request_id == "8a1b2c3d-LHR"  # the SDK prefers cf-ray


def test_a_redirect_with_its_location(
    harness: Harness, fake: FakeAmaiServer, make_client: MakeClient
) -> None:
    target = "https://elsewhere.example/api/v1/tools/check"
    fake.fail_next("check", status=302, headers={"location": target})
    with pytest.raises(APIError, match="redirect") as caught:
        harness.run(make_client().check("chat"))
    assert caught.value.status_code == 302
    assert target in str(caught.value)
    assert statuses(fake) == [302]  # not followed


def test_an_encoded_body_is_sent_as_given(fake: FakeAmaiServer, via: str) -> None:
    quote = {"ok": True, "allowed": True, "cost_tokens": 5, "balance_after": 95}
    encoded = gzip.compress(json.dumps(quote).encode())
    fake.fail_next("check", status=200, body=encoded, headers={"content-encoding": "gzip"})
    with raw_http(fake, via) as http:
        response = http.post(CHECK)
    assert response.headers["content-encoding"] == "gzip"
    assert response.json() == quote  # decoded by httpx, as from a real server


# --- the queue ---------------------------------------------------------------------------


def test_faults_are_first_in_first_out_and_used_once(
    harness: Harness, fake: FakeAmaiServer, make_client: MakeClient
) -> None:
    fake.fail_next("check", status=429)
    fake.fail_next("check", status=503, times=2)
    client = make_client(max_retries=0)

    raised = []
    for _ in range(3):
        with pytest.raises(APIError) as caught:
            harness.run(client.check("chat"))
        raised.append(type(caught.value))

    assert raised == [RateLimitError, ServerError, ServerError]
    assert harness.run(client.check("chat")).allowed is True


def test_faults_are_per_endpoint(
    harness: Harness, fake: FakeAmaiServer, make_client: MakeClient
) -> None:
    fake.fail_next("spend", status=503)
    client = make_client(max_retries=0)
    assert harness.run(client.check("chat")).allowed is True
    with pytest.raises(ServerError):
        harness.run(client.spend("chat"))
    assert statuses(fake, "check") == [200]
    assert statuses(fake, "spend") == [503]


def test_faults_come_before_authentication(fake: FakeAmaiServer, key: str) -> None:
    fake.revoke(key)
    fake.fail_next("check", status=503)
    with fake.client(key, max_retries=0) as client, pytest.raises(ServerError):
        client.check("chat")


def test_faults_do_not_apply_to_other_paths(fake: FakeAmaiServer) -> None:
    fake.fail_next("check", drop=True)
    with httpx.Client(transport=fake.transport(), base_url=fake.BASE_URL) as http:
        assert http.post("/api/v1/tools/other").status_code == 404
        with pytest.raises(httpx.RemoteProtocolError):
            http.post(CHECK)


def test_reset_faults(harness: Harness, fake: FakeAmaiServer, make_client: MakeClient) -> None:
    fake.fail_next("check", drop=True, times=5)
    fake.fail_next("spend", status=500)
    fake.reset_faults()
    client = make_client(max_retries=0)
    harness.run(client.check("chat"))
    harness.run(client.spend("chat"))
    assert statuses(fake) == [200, 200]


@pytest.mark.parametrize(
    ("arguments", "error", "message"),
    [
        ({"endpoint": "refund", "status": 500}, ValueError, "endpoint must be 'check' or 'spend'"),
        ({"status": 500, "times": 0}, ValueError, "times must be 1 or more"),
        ({"status": 500, "times": 1.0}, TypeError, "times must be an int"),
        ({}, ValueError, "give a status, drop=True, drop_after_commit=True or a delay"),
        ({"delay": 0}, ValueError, "give a status"),
        ({"drop": True, "drop_after_commit": True}, ValueError, "choose one of drop"),
        ({"drop": True, "status": 500}, ValueError, "status cannot be given"),
        ({"drop_after_commit": True, "body": b"x"}, ValueError, "body cannot be given"),
        ({"body": b"x"}, ValueError, "body needs a status"),
        ({"retry_after": 1}, ValueError, "retry_after needs a status"),
        ({"content_type": "text/html"}, ValueError, "content_type needs a status"),
        ({"status": "500"}, TypeError, "status must be an int, got str"),
        ({"status": True}, TypeError, "status must be an int, got bool"),
        ({"status": 199}, ValueError, "status must be between 200 and 599"),
        ({"status": 600}, ValueError, "status must be between 200 and 599"),
        ({"status": 200}, ValueError, "a 200 fault needs a body"),
        ({"status": 500, "body": 5}, TypeError, "body must be bytes, str or a mapping"),
        ({"status": 500, "body": {"when": object()}}, TypeError, "not JSON-serialisable"),
        ({"status": 500, "content_type": 5}, TypeError, "content_type must be a str"),
        ({"status": 500, "content_type": ""}, ValueError, "content_type must be a non-empty"),
        ({"status": 500, "content_type": "a\r\nb: c"}, ValueError, "printable ASCII"),
        ({"status": 429, "retry_after": -1}, ValueError, "retry_after must be a finite"),
        ({"status": 429, "retry_after": float("inf")}, ValueError, "retry_after must be"),
        ({"status": 429, "retry_after": True}, TypeError, "retry_after must be seconds"),
        ({"status": 429, "retry_after": "soon\n"}, ValueError, "printable ASCII"),
        ({"delay": -1}, ValueError, "delay must be a finite number of seconds"),
        ({"delay": float("nan")}, ValueError, "delay must be a finite"),
        ({"delay": "1"}, TypeError, "delay must be a number of seconds, got str"),
        ({"delay": True}, TypeError, "got bool"),
        ({"headers": {"cf-ray": "r"}}, ValueError, "headers needs a status"),
        ({"headers": {}}, ValueError, "headers needs a status"),
        ({"drop": True, "headers": {"cf-ray": "r"}}, ValueError, "headers cannot be given"),
        ({"status": 500, "headers": [("cf-ray", "r")]}, TypeError, "headers must be a mapping"),
        ({"status": 500, "headers": {5: "r"}}, TypeError, "header names must be str, got int"),
        ({"status": 500, "headers": {"cf ray": "r"}}, ValueError, "'cf ray' is not a header"),
        ({"status": 500, "headers": {"": "r"}}, ValueError, "'' is not a header name"),
        ({"status": 500, "headers": {"x:y": "r"}}, ValueError, "is not a header name"),
        ({"status": 500, "headers": {"cf-ray": 5}}, TypeError, "the cf-ray header must be a str"),
        ({"status": 500, "headers": {"cf-ray": ""}}, ValueError, "must be a non-empty"),
        ({"status": 500, "headers": {"cf-ray": "a\r\nb: c"}}, ValueError, "printable ASCII"),
        ({"status": 500, "headers": {"CF-Ray": "a", "cf-ray": "b"}}, ValueError, "cf-ray twice"),
        (
            {"status": 500, "headers": {"Content-Type": "text/html"}},
            ValueError,
            "headers cannot set content-type: give content_type instead",
        ),
        (
            {"status": 429, "headers": {"Retry-After": "1"}},
            ValueError,
            "headers cannot set retry-after: give retry_after instead",
        ),
        ({"status": 500, "headers": {"content-length": "1"}}, ValueError, "cannot set content-l"),
        ({"status": 500, "headers": {"transfer-encoding": "x"}}, ValueError, "cannot set transf"),
        ({"status": 500, "headers": {"Connection": "close"}}, ValueError, "cannot set connection"),
        ({"status": 500, "headers": {"x-request-id": "r"}}, ValueError, "cannot set x-request-id"),
    ],
)
def test_impossible_faults_are_refused(
    arguments: dict[str, Any], error: type[Exception], message: str
) -> None:
    fake = FakeAmaiServer()
    endpoint = arguments.pop("endpoint", "check")
    with pytest.raises(error) as caught:
        fake.fail_next(endpoint, **arguments)
    assert message in str(caught.value)
    with httpx.Client(transport=fake.transport(), base_url=fake.BASE_URL) as http:
        assert http.post(CHECK).status_code == 401  # nothing was queued


@pytest.mark.parametrize(("seconds", "header"), [(1, "1"), (2.0, "2"), (0.25, "0.25"), (0, "0")])
def test_retry_after_header(fake: FakeAmaiServer, seconds: float, header: str) -> None:
    fake.fail_next("spend", status=429, retry_after=seconds)
    with httpx.Client(transport=fake.transport()) as http:
        response = http.post(fake.BASE_URL + SPEND)
    assert response.headers["retry-after"] == header
    assert json.loads(response.content) == {"ok": False, "error": "rate_limited"}
