"""The retry rule: what is retried, how long the client waits, and what it raises at the end.

Most tests drive both clients through `harness` over the `api` respx router; the waits
between attempts are recorded in `harness.sleeps` instead of slept. The decisions themselves
(`should_retry`, `retry_wait`, `parse_retry_after`) are pure and tested directly too.
"""

from __future__ import annotations

import json
import logging
import time
from email.utils import formatdate
from typing import Any

import httpx
import pytest
import respx
import tenacity

from amaimedia import (
    APIConnectionError,
    APIError,
    APIResponseValidationError,
    APITimeoutError,
    AuthenticationError,
    Charge,
    ForbiddenError,
    InsufficientCreditsError,
    Quote,
    RateLimitError,
    ServerError,
)
from amaimedia._response import parse_retry_after
from amaimedia._retry import retry_wait, should_retry
from tests.answers import CHARGE, QUOTE, bodies, error, queue, requests
from tests.conftest import Harness

CHECK_URL = "https://api.amaimedia.com/api/v1/tools/check"

# The backoff before each retry when the server gives no Retry-After, at zero jitter:
# doubling from 0.5 s, capped at 8 s. Jitter takes off up to a quarter.
BACKOFF = [0.5, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0, 8.0, 8.0, 8.0]


def call(harness: Harness, client: Any, endpoint: str) -> Quote | Charge:
    """One call to `endpoint` with either client."""
    result: Quote | Charge
    if endpoint == "check":
        result = harness.run(client.check("chat"))
    else:
        result = harness.run(client.spend("chat", reference="job-1"))
    return result


def in_backoff_range(seconds: float, attempt: int) -> bool:
    top = BACKOFF[attempt - 1]
    return 0.75 * top <= seconds <= top


# --- which answers are retried -----------------------------------------------------------


@pytest.mark.parametrize("endpoint", ["check", "spend"])
@pytest.mark.parametrize(
    ("status", "code"),
    [
        (408, None),
        (429, "rate_limited"),
        (500, None),
        (502, None),
        (503, None),
        (504, None),
    ],
)
def test_retried_status_recovers_on_next_attempt(
    harness: Harness, api: respx.Router, endpoint: str, status: int, code: str | None
) -> None:
    queue(api[endpoint], error(status, code))
    client = harness.client(api)

    result = call(harness, client, endpoint)

    assert isinstance(result, Quote if endpoint == "check" else Charge)
    assert api.calls.call_count == 2
    assert len(harness.sleeps) == 1


@pytest.mark.parametrize(
    ("status", "code", "exc_type"),
    [
        (400, "bad_request", APIError),
        (401, "auth_required", AuthenticationError),
        (402, "insufficient_credits", InsufficientCreditsError),
        (403, "forbidden", ForbiddenError),
        (404, "not_found", APIError),
        (409, "conflict", APIError),
    ],
)
def test_client_errors_are_never_retried(
    harness: Harness, api: respx.Router, status: int, code: str, exc_type: type[APIError]
) -> None:
    # A success is queued behind the error: a retry would turn the call into a success.
    queue(api["spend"], error(status, code), httpx.Response(200, json=CHARGE))
    client = harness.client(api)

    with pytest.raises(exc_type) as exc_info:
        harness.run(client.spend("chat", reference="job-1"))

    assert exc_info.value.status_code == status
    assert api.calls.call_count == 1
    assert harness.sleeps == []


def test_malformed_success_body_is_not_retried(harness: Harness, api: respx.Router) -> None:
    # The server did answer, and a spend may have charged: retrying would hide that.
    queue(api["spend"], httpx.Response(200, json={"ok": True}), httpx.Response(200, json=CHARGE))
    client = harness.client(api)

    with pytest.raises(APIResponseValidationError):
        harness.run(client.spend("chat", reference="job-1"))

    assert api.calls.call_count == 1
    assert harness.sleeps == []


# --- exhausting the retries ----------------------------------------------------------------


def test_default_is_two_retries(harness: Harness, api: respx.Router) -> None:
    queue(api["check"], *[error(503)] * 4)
    client = harness.client(api)
    assert client.max_retries == 2

    with pytest.raises(ServerError) as exc_info:
        harness.run(client.check("chat"))

    assert exc_info.value.status_code == 503
    assert api.calls.call_count == 3
    assert len(harness.sleeps) == 2


def test_exhausted_retries_raise_the_last_error_itself(
    harness: Harness, api: respx.Router
) -> None:
    queue(api["check"], error(503), error(502), error(500, request_id_marker="last"))
    client = harness.client(api, max_retries=2)

    with pytest.raises(ServerError) as exc_info:
        harness.run(client.check("chat"))

    assert not isinstance(exc_info.value, tenacity.RetryError)
    assert exc_info.value.status_code == 500
    assert isinstance(exc_info.value.body, dict)
    assert exc_info.value.body["request_id_marker"] == "last"


def test_max_retries_zero_sends_once(harness: Harness, api: respx.Router) -> None:
    queue(api["check"], error(503), httpx.Response(200, json=QUOTE))
    client = harness.client(api, max_retries=0)

    with pytest.raises(ServerError):
        harness.run(client.check("chat"))

    assert api.calls.call_count == 1
    assert harness.sleeps == []


# --- transport failures --------------------------------------------------------------------


# Transport failures as httpx raises them; a fresh instance per attempt, as on a real wire.
CONNECTION_FAILURES: list[type[httpx.TransportError]] = [
    httpx.ConnectError,
    httpx.ReadError,
    httpx.RemoteProtocolError,
]
TIMEOUTS: list[type[httpx.TransportError]] = [httpx.ReadTimeout, httpx.ConnectTimeout]


@pytest.mark.parametrize(
    ("failure", "exc_type"),
    [(f, APIConnectionError) for f in CONNECTION_FAILURES]
    + [(t, APITimeoutError) for t in TIMEOUTS],
    ids=lambda value: value.__name__,
)
def test_transport_failure_raises_after_retries(
    harness: Harness,
    api: respx.Router,
    failure: type[httpx.TransportError],
    exc_type: type[APIConnectionError],
) -> None:
    last = failure("third failure")
    queue(api["spend"], failure("first failure"), failure("second failure"), last)
    client = harness.client(api)

    with pytest.raises(exc_type) as exc_info:
        harness.run(client.spend("chat", reference="job-1"))

    assert type(exc_info.value) is exc_type
    assert isinstance(exc_info.value, APIConnectionError)
    assert exc_info.value.__cause__ is last
    assert "third failure" in str(exc_info.value)
    assert api.calls.call_count == 3
    assert len(harness.sleeps) == 2


@pytest.mark.parametrize("failure", CONNECTION_FAILURES + TIMEOUTS, ids=lambda v: v.__name__)
def test_transport_failure_recovers_on_later_attempt(
    harness: Harness, api: respx.Router, failure: type[httpx.TransportError]
) -> None:
    queue(api["check"], failure("first failure"), failure("second failure"))
    client = harness.client(api)

    assert harness.run(client.check("chat")) == Quote(**QUOTE)
    assert api.calls.call_count == 3
    assert len(harness.sleeps) == 2


def test_timeout_error_is_a_connection_error() -> None:
    assert issubclass(APITimeoutError, APIConnectionError)


# --- Retry-After -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "wait"),
    [
        ({"Retry-After": "3"}, 3.0),
        ({"Retry-After": "2.5"}, 2.5),
        ({"Retry-After": "0"}, 0.0),
        ({"retry-after-ms": "1500"}, 1.5),
        ({"retry-after-ms": "1500", "Retry-After": "30"}, 1.5),
        ({"retry-after-ms": "soon", "Retry-After": "4"}, 4.0),
    ],
)
def test_retry_after_sets_the_wait(
    harness: Harness, api: respx.Router, headers: dict[str, str], wait: float
) -> None:
    queue(api["check"], error(429, "rate_limited", headers=headers))
    client = harness.client(api)

    assert harness.run(client.check("chat")) == Quote(**QUOTE)
    assert harness.sleeps == [wait]
    assert api.calls.call_count == 2


def test_retry_after_is_honoured_on_server_errors(harness: Harness, api: respx.Router) -> None:
    queue(api["check"], error(503, headers={"Retry-After": "3"}))
    client = harness.client(api)

    harness.run(client.check("chat"))

    assert harness.sleeps == [3.0]


def test_retry_after_http_date(harness: Harness, api: respx.Router) -> None:
    when = formatdate(time.time() + 10, usegmt=True)
    queue(api["check"], error(429, "rate_limited", headers={"Retry-After": when}))
    client = harness.client(api)

    harness.run(client.check("chat"))

    assert len(harness.sleeps) == 1
    assert 8 <= harness.sleeps[0] <= 11


def test_unreadable_retry_after_falls_back_to_backoff(harness: Harness, api: respx.Router) -> None:
    queue(api["check"], error(429, "rate_limited", headers={"Retry-After": "in a while"}))
    client = harness.client(api)

    harness.run(client.check("chat"))

    assert len(harness.sleeps) == 1
    assert in_backoff_range(harness.sleeps[0], 1)


@pytest.mark.parametrize(
    "headers", [{"Retry-After": "120"}, {"retry-after-ms": "120000"}], ids=["seconds", "ms"]
)
def test_retry_after_above_cap_raises_at_once(
    harness: Harness, api: respx.Router, headers: dict[str, str]
) -> None:
    queue(api["spend"], error(429, "rate_limited", headers=headers))
    client = harness.client(api)
    assert client.max_retry_after == 60

    with pytest.raises(RateLimitError) as exc_info:
        harness.run(client.spend("chat", reference="job-1"))

    assert exc_info.value.retry_after == 120
    assert "120" in str(exc_info.value)
    assert api.calls.call_count == 1
    assert harness.sleeps == []


def test_custom_max_retry_after_waits_longer(harness: Harness, api: respx.Router) -> None:
    queue(api["check"], error(429, "rate_limited", headers={"Retry-After": "120"}))
    client = harness.client(api, max_retry_after=200)

    assert harness.run(client.check("chat")) == Quote(**QUOTE)
    assert harness.sleeps == [120.0]
    assert api.calls.call_count == 2


def test_with_options_changes_max_retry_after(harness: Harness, api: respx.Router) -> None:
    rate_limited = error(429, "rate_limited", headers={"Retry-After": "120"})
    client = harness.client(api)

    queue(api["check"], rate_limited)
    patient = client.with_options(max_retry_after=200)
    assert harness.run(patient.check("chat")) == Quote(**QUOTE)
    assert harness.sleeps == [120.0]

    # The original keeps its own cap.
    queue(api["check"], rate_limited)
    with pytest.raises(RateLimitError):
        harness.run(client.check("chat"))
    assert harness.sleeps == [120.0]

    # And a lower cap turns a short wait into an immediate error.
    queue(api["check"], error(429, "rate_limited", headers={"Retry-After": "3"}))
    with pytest.raises(RateLimitError) as exc_info:
        harness.run(client.with_options(max_retry_after=1).check("chat"))
    assert exc_info.value.retry_after == 3
    assert harness.sleeps == [120.0]


# --- backoff without Retry-After ---------------------------------------------------------


@pytest.mark.parametrize("attempt", range(1, 11))
def test_retry_wait_backoff(attempt: int) -> None:
    top = BACKOFF[attempt - 1]

    assert retry_wait(None, attempt, jitter=0.0) == top
    low = retry_wait(None, attempt, jitter=0.999)
    assert 0.75 * top <= low < top
    assert retry_wait(APIConnectionError("reset"), attempt, jitter=0.0) == top
    assert retry_wait(ServerError("down", status_code=500), attempt, jitter=0.0) == top


def test_retry_wait_grows_then_caps() -> None:
    waits = [retry_wait(None, attempt, jitter=0.5) for attempt in range(1, 11)]
    assert waits[:5] == sorted(waits[:5])
    assert len(set(waits[:5])) == 5
    assert max(waits) <= 8.0
    assert waits[4:] == [waits[4]] * 6


@pytest.mark.parametrize("attempt", [1, 4, 10])
def test_retry_wait_prefers_retry_after(attempt: int) -> None:
    exc = RateLimitError("slow down", status_code=429, retry_after=3.0)
    assert retry_wait(exc, attempt, jitter=0.999) == 3.0


def test_client_backoff_grows_and_is_capped(harness: Harness, api: respx.Router) -> None:
    queue(api["check"], *[error(500)] * 7)
    client = harness.client(api, max_retries=6)

    with pytest.raises(ServerError):
        harness.run(client.check("chat"))

    assert api.calls.call_count == 7
    assert len(harness.sleeps) == 6
    for attempt, seconds in enumerate(harness.sleeps, start=1):
        assert in_backoff_range(seconds, attempt), (attempt, seconds)
    assert harness.sleeps[:5] == sorted(harness.sleeps[:5])
    assert max(harness.sleeps) <= 8.0


# --- should_retry ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (APIConnectionError("reset"), True),
        (APITimeoutError("slow"), True),
        (ServerError("down", status_code=500), True),
        (ServerError("down", status_code=503, retry_after=5.0), True),
        (ServerError("down", status_code=503, retry_after=61.0), False),
        (APIError("timeout", status_code=408), True),
        (APIError("bad", status_code=400), False),
        (APIError("missing", status_code=404), False),
        (APIError("conflict", status_code=409), False),
        (AuthenticationError("no key", status_code=401), False),
        (InsufficientCreditsError("poor"), False),
        (ForbiddenError("no", status_code=403), False),
        (RateLimitError("slow down", status_code=429), True),
        (RateLimitError("slow down", status_code=429, retry_after=30.0), True),
        (RateLimitError("slow down", status_code=429, retry_after=60.0), True),
        (RateLimitError("slow down", status_code=429, retry_after=60.5), False),
        (RateLimitError("slow down", status_code=429, retry_after=120.0), False),
        (APIResponseValidationError("shape", status_code=200), False),
        (httpx.ConnectError("raw httpx, not from the SDK"), False),
        (ValueError("units"), False),
        (KeyboardInterrupt(), False),
    ],
    ids=lambda value: repr(value) if isinstance(value, BaseException) else None,
)
def test_should_retry(exc: BaseException, expected: bool) -> None:
    assert should_retry(exc, max_retry_after=60.0) is expected


def test_should_retry_respects_the_cap_given() -> None:
    exc = RateLimitError("slow down", status_code=429, retry_after=120.0)
    assert should_retry(exc, max_retry_after=200.0) is True
    assert should_retry(exc, max_retry_after=119.0) is False


# --- parse_retry_after -------------------------------------------------------------------

NOW = 784111777.0  # Sun, 06 Nov 1994 08:49:37 GMT, the RFC 9110 example date


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({}, None),
        ({"Retry-After": "3"}, 3.0),
        ({"Retry-After": " 3 "}, 3.0),
        ({"Retry-After": "2.5"}, 2.5),
        ({"Retry-After": "0"}, 0.0),
        ({"Retry-After": "-1"}, None),
        ({"Retry-After": "inf"}, None),
        ({"Retry-After": "nan"}, None),
        ({"Retry-After": ""}, None),
        ({"Retry-After": "soon"}, None),
        ({"retry-after-ms": "1500"}, 1.5),
        ({"retry-after-ms": "0"}, 0.0),
        ({"retry-after-ms": "1500", "Retry-After": "30"}, 1.5),
        ({"retry-after-ms": "-5", "Retry-After": "30"}, 30.0),
        ({"retry-after-ms": "nan", "Retry-After": "30"}, 30.0),
        ({"retry-after-ms": "inf"}, None),
        # HTTP dates, measured from NOW.
        ({"Retry-After": "Sun, 06 Nov 1994 08:49:47 GMT"}, 10.0),
        ({"Retry-After": "Sunday, 06-Nov-94 08:49:47 GMT"}, 10.0),
        ({"Retry-After": "Sun, 06 Nov 1994 08:49:27 GMT"}, 0.0),
        ({"Retry-After": "Sun, 06 Nov 1994 08:49:37 GMT"}, 0.0),
        # asctime() form: no zone, but RFC 9110 section 5.6.7 says it is GMT like the rest.
        ({"Retry-After": "Sun Nov  6 08:49:47 1994"}, 10.0),
        ({"Retry-After": "Sun Nov  6 08:49:27 1994"}, 0.0),
    ],
    ids=lambda value: (
        ",".join(f"{k}={v}" for k, v in value.items()) if isinstance(value, dict) else None
    ),
)
def test_parse_retry_after(headers: dict[str, str], expected: float | None) -> None:
    assert parse_retry_after(httpx.Headers(headers), now=NOW) == expected


def test_parse_retry_after_date_defaults_to_current_time() -> None:
    headers = httpx.Headers({"Retry-After": formatdate(time.time() + 30, usegmt=True)})
    seconds = parse_retry_after(headers)
    assert seconds is not None
    assert 28 <= seconds <= 30


def test_rate_limit_error_carries_retry_after(harness: Harness, api: respx.Router) -> None:
    queue(api["check"], *[error(429, "rate_limited", headers={"retry-after-ms": "250"})] * 3)
    client = harness.client(api)

    with pytest.raises(RateLimitError) as exc_info:
        harness.run(client.check("chat"))

    assert exc_info.value.retry_after == 0.25
    assert harness.sleeps == [0.25, 0.25]


# --- spend keeps its reference across retries --------------------------------------------


def test_spend_retries_send_identical_generated_reference(
    harness: Harness, api: respx.Router
) -> None:
    queue(
        api["spend"],
        error(429, "rate_limited"),
        error(500),
        httpx.ConnectError("connection refused"),
    )
    client = harness.client(api, max_retries=3)

    charge = harness.run(client.spend("dub", units=2))

    assert api.calls.call_count == 4
    contents = {request.content for request in requests(api.calls)}
    assert len(contents) == 1
    body = json.loads(contents.pop())
    assert body["tool"] == "dub"
    assert body["reference"].startswith("req_")
    assert charge.reference == body["reference"]


def test_spend_retries_send_callers_reference(harness: Harness, api: respx.Router) -> None:
    queue(api["spend"], error(503), httpx.ReadTimeout("slow"))
    client = harness.client(api)

    charge = harness.run(client.spend("chat", reference="job-42"))

    assert [body["reference"] for body in bodies(api["spend"].calls)] == ["job-42"] * 3
    assert len({request.content for request in requests(api.calls)}) == 1
    assert charge.reference == "job-42"


def test_separate_spends_get_separate_references(harness: Harness, api: respx.Router) -> None:
    client = harness.client(api)

    first = harness.run(client.spend("chat"))
    second = harness.run(client.spend("chat"))

    assert first.reference != second.reference


# --- logging -----------------------------------------------------------------------------


def retry_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [
        r
        for r in caplog.records
        if r.name == "amaimedia" and r.levelno == logging.INFO and r.msg.startswith("Retrying")
    ]


def test_each_retry_is_logged(
    harness: Harness, api: respx.Router, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="amaimedia")
    queue(api["check"], *[error(503, headers={"Retry-After": "2"})] * 3)
    client = harness.client(api)

    with pytest.raises(ServerError):
        harness.run(client.check("chat"))

    messages = [r.getMessage() for r in retry_records(caplog)]
    assert len(messages) == 2
    assert "attempt 2 of 3" in messages[0]
    assert "attempt 3 of 3" in messages[1]
    for message in messages:
        assert "2.00 s" in message
        assert "/api/v1/tools/check" in message
        assert "503" in message


def test_logged_wait_matches_the_backoff(
    harness: Harness, api: respx.Router, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="amaimedia")
    queue(api["spend"], httpx.ConnectError("connection refused"))
    client = harness.client(api)

    harness.run(client.spend("chat", reference="job-1"))

    (record,) = retry_records(caplog)
    assert "attempt 2 of 3" in record.getMessage()
    assert f"{harness.sleeps[0]:.2f} s" in record.getMessage()


def test_nothing_logged_at_info_without_retries(
    harness: Harness, api: respx.Router, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="amaimedia")
    client = harness.client(api)

    harness.run(client.check("chat"))

    assert retry_records(caplog) == []


def test_api_key_is_not_in_retry_logs(
    harness: Harness, api: respx.Router, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="amaimedia")
    queue(api["check"], error(401, "auth_required"), error(503))
    client = harness.client(api)

    with pytest.raises(AuthenticationError):
        harness.run(client.check("chat"))
    harness.run(client.check("chat"))

    assert "test_0123456789" not in caplog.text


# --- over respx, with the client's own connection pool -----------------------------------


def test_respx_rate_limited_then_success(harness: Harness) -> None:
    with respx.mock(assert_all_called=True) as router:
        route = router.post(CHECK_URL).mock(
            side_effect=[
                httpx.Response(429, json={"ok": False, "error": "rate_limited"}),
                httpx.Response(200, json=QUOTE),
            ]
        )
        client = harness.client(http_client=None)

        quote = harness.run(client.check("chat"))

    assert quote == Quote(**QUOTE)
    assert route.call_count == 2
    assert len(harness.sleeps) == 1
    assert in_backoff_range(harness.sleeps[0], 1)


def test_respx_retry_after_ms_over_own_pool(harness: Harness) -> None:
    with respx.mock(assert_all_called=True) as router:
        route = router.post(CHECK_URL).mock(
            side_effect=[
                httpx.Response(503, text="busy", headers={"retry-after-ms": "750"}),
                httpx.ConnectError("connection refused"),
                httpx.Response(200, json=QUOTE),
            ]
        )
        client = harness.client(http_client=None)

        harness.run(client.check("chat"))

    assert route.call_count == 3
    assert harness.sleeps[0] == 0.75
    assert in_backoff_range(harness.sleeps[1], 2)


def test_respx_persistent_server_error(harness: Harness) -> None:
    with respx.mock(assert_all_called=True) as router:
        route = router.post(CHECK_URL).mock(return_value=httpx.Response(500, text="oops"))
        client = harness.client(http_client=None, max_retries=1)

        with pytest.raises(ServerError) as exc_info:
            harness.run(client.check("chat"))

    assert route.call_count == 2
    assert exc_info.value.status_code == 500
    assert exc_info.value.body == "oops"
