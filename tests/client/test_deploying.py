"""Deployment settings, in process: failures that no retry can fix, a total deadline, the
pool's own transport settings and their checks, errors that cross a process boundary with
their cause, and the log line of a new journal.

Answers come from respx routes, or from a plain `httpx.MockTransport` handler where an OS
error must stay chained under httpx's (respx re-raises with itself as the cause). The
same shapes over real sockets and event loops are in `tests/wire/test_event_loops.py`.
"""

from __future__ import annotations

import asyncio
import logging
import pickle
import socket
import ssl
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import respx

from amaimedia import (
    AmaiClient,
    AmaiError,
    APIConnectionError,
    APITimeoutError,
    AsyncAmaiClient,
    RateLimitError,
    SpendFailedError,
)
from tests.conftest import Harness

KEY = "amai_live_test_0123456789abcdefWXYZ"
BASE_URL = "https://api.amaimedia.com"
CHECK_URL = BASE_URL + "/api/v1/tools/check"
SPEND_URL = BASE_URL + "/api/v1/tools/spend"
QUOTE = {"ok": True, "allowed": True, "cost_tokens": 5, "balance_after": 9995}
CHARGE = {"ok": True, "charged": 5, "balance_after": 9990}


def routed_client(harness: Harness, router: respx.Router, **options: Any) -> Any:
    """A client of `harness`'s kind whose requests go to `router`."""
    http = harness.http_client(transport=httpx.MockTransport(router.handler))
    return harness.client(http_client=http, **options)


@pytest.fixture
def router() -> respx.Router:
    router = respx.Router(assert_all_called=False)
    router.post(CHECK_URL, name="check").respond(json=QUOTE)
    router.post(SPEND_URL, name="spend").respond(json=CHARGE)
    return router


def failing_with(cause: BaseException) -> Callable[[httpx.Request], httpx.Response]:
    """A handler that fails as httpx's own transport does: the OS error chained."""

    def fail(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError(str(cause), request=request) from cause

    return fail


def failing_client(
    harness: Harness, *handlers: Callable[[httpx.Request], httpx.Response], **options: Any
) -> tuple[Any, list[httpx.Request]]:
    """A client whose attempts go to `handlers` in turn (the last one repeats).

    Not respx: respx re-raises a side effect's exception with itself as the cause, which
    would hide the OS error under it.
    """
    sent: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return handlers[min(len(sent), len(handlers)) - 1](request)

    http = harness.http_client(transport=httpx.MockTransport(handle))
    return harness.client(http_client=http, **options), sent


def quoted(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, json=QUOTE)


# --- failures that no retry can fix ---------------------------------------------------


def test_a_certificate_that_cannot_be_verified_is_not_retried(harness: Harness) -> None:
    refused = ssl.SSLCertVerificationError(1, "certificate verify failed")
    refused.verify_message = "unable to get local issuer certificate"
    client, sent = failing_client(harness, failing_with(refused), max_retries=3)

    with pytest.raises(APIConnectionError) as caught:
        harness.run(client.check("chat"))

    assert caught.value.retryable is False
    assert len(sent) == 1
    assert harness.sleeps == []
    message = str(caught.value)
    assert message.startswith("TLS: the certificate of api.amaimedia.com could not be verified")
    assert "unable to get local issuer certificate" in message
    assert "SSL_CERT_FILE" in message
    assert "verify=" in message


def test_a_host_name_that_does_not_exist_is_not_retried(harness: Harness) -> None:
    unknown = socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    client, sent = failing_client(harness, failing_with(unknown), max_retries=3)

    with pytest.raises(APIConnectionError) as caught:
        harness.run(client.spend("chat", reference="job-1"))

    assert caught.value.retryable is False
    assert caught.value.reference == "job-1"
    assert len(sent) == 1
    assert harness.sleeps == []
    assert "DNS: the host name api.amaimedia.com does not exist" in str(caught.value)
    assert "base_url" in str(caught.value)


def test_a_resolver_that_failed_for_now_is_retried(harness: Harness) -> None:
    busy = socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
    client, sent = failing_client(harness, failing_with(busy), quoted, max_retries=3)

    assert harness.run(client.check("chat")).cost_tokens == 5
    assert len(sent) == 2
    assert len(harness.sleeps) == 1


def test_other_connection_failures_stay_retryable(harness: Harness) -> None:
    refused = ConnectionRefusedError(111, "refused")
    client, sent = failing_client(harness, failing_with(refused), max_retries=2)

    with pytest.raises(APIConnectionError) as caught:
        harness.run(client.check("chat"))

    assert caught.value.retryable is True
    assert len(sent) == 3


# --- total_timeout: one deadline for the whole call -----------------------------------


def test_a_wait_past_the_deadline_raises_at_once(harness: Harness, router: respx.Router) -> None:
    limited = {"ok": False, "error": "rate_limited"}
    router.routes["spend"].respond(429, json=limited, headers={"retry-after": "30"})
    client = routed_client(harness, router, max_retries=5, total_timeout=10)

    with pytest.raises(APITimeoutError) as caught:
        harness.run(client.spend("chat", reference="job-9"))

    error = caught.value
    assert error.retryable is False
    assert error.reference == "job-9"
    assert isinstance(error.__cause__, RateLimitError)
    assert "total_timeout of 10 s is spent after 1 attempt" in str(error)
    assert router.routes["spend"].call_count == 1
    assert harness.sleeps == []


def test_waits_that_fit_the_deadline_are_waited(harness: Harness, router: respx.Router) -> None:
    limited = httpx.Response(
        429, json={"ok": False, "error": "rate_limited"}, headers={"retry-after": "1"}
    )
    answers = iter([limited, limited, httpx.Response(200, json=QUOTE)])
    router.routes["check"].side_effect = lambda request: next(answers)
    client = routed_client(harness, router, max_retries=5, total_timeout=60)

    assert harness.run(client.check("chat")).cost_tokens == 5
    assert harness.sleeps == [1.0, 1.0]


def test_each_attempt_gets_only_the_time_left(harness: Harness, router: respx.Router) -> None:
    seen: list[dict[str, float]] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request.extensions["timeout"])
        return httpx.Response(200, json=QUOTE)

    router.routes["check"].side_effect = answer
    client = routed_client(
        harness, router, timeout=httpx.Timeout(30.0, connect=2.0), total_timeout=5
    )
    harness.run(client.check("chat"))

    (timeouts,) = seen
    assert timeouts["connect"] == 2.0
    assert 4.0 < timeouts["read"] <= 5.0
    assert timeouts["read"] == timeouts["write"] == timeouts["pool"]


def test_without_total_timeout_the_attempt_keeps_the_client_timeout(
    harness: Harness, router: respx.Router
) -> None:
    seen: list[dict[str, float]] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request.extensions["timeout"])
        return httpx.Response(200, json=QUOTE)

    router.routes["check"].side_effect = answer
    client = routed_client(harness, router, timeout=7.0)
    assert client.total_timeout is None
    harness.run(client.check("chat"))
    assert seen == [{"connect": 7.0, "read": 7.0, "write": 7.0, "pool": 7.0}]


def test_with_options_sets_and_clears_total_timeout(harness: Harness) -> None:
    client = harness.client(http_client=None, total_timeout=12)
    assert client.total_timeout == 12.0
    assert client.with_options(total_timeout=3).total_timeout == 3.0
    assert client.with_options(total_timeout=None).total_timeout is None
    assert client.with_options(max_retries=0).total_timeout == 12.0


@pytest.mark.parametrize(
    ("value", "error", "match"),
    [
        (0, ValueError, "total_timeout must be a positive number of seconds or None, got 0"),
        (-1.5, ValueError, "got -1.5"),
        (float("nan"), ValueError, "got nan"),
        (float("inf"), ValueError, "got inf"),
        (10**400, ValueError, "total_timeout is beyond the range of a float"),
        ("5", TypeError, "total_timeout must be a number of seconds or None, got str"),
        (True, TypeError, "got bool"),
    ],
    ids=["zero", "negative", "nan", "inf", "huge-int", "str", "bool"],
)
def test_an_impossible_total_timeout_is_refused(
    harness: Harness, value: Any, error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        harness.client(http_client=None, total_timeout=value)
    with pytest.raises(error, match=match):
        harness.client(http_client=None).with_options(total_timeout=value)


# --- transport settings belong to the client's own pool -------------------------------


@pytest.mark.parametrize(
    "setting", [{"verify": False}, {"proxy": "http://127.0.0.1:3128"}, {"trust_env": False}]
)
def test_transport_settings_with_a_pool_of_your_own_are_refused(
    harness: Harness, setting: dict[str, Any]
) -> None:
    with pytest.raises(ValueError, match="configure the client's own connection pool"):
        harness.client(**setting)


def test_verify_false_is_logged_as_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="amaimedia"):
        AmaiClient(api_key=KEY, verify=False).close()
    assert "verify=False: TLS certificates are not checked" in caplog.text


@pytest.mark.parametrize(
    ("setting", "error", "match"),
    [
        ({"verify": "/nowhere/ca.pem"}, ValueError, "verify names no CA file or directory"),
        ({"verify": 3}, TypeError, "verify must be True, False, a CA file or directory"),
        ({"proxy": "ftp://proxy.internal"}, ValueError, "proxy is not a usable proxy URL"),
        ({"proxy": 3128}, TypeError, "proxy must be a URL"),
        ({"trust_env": "yes"}, TypeError, "trust_env must be a bool"),
    ],
)
def test_impossible_transport_settings_are_refused(
    setting: dict[str, Any], error: type[Exception], match: str
) -> None:
    for kind in (AmaiClient, AsyncAmaiClient):
        with pytest.raises(error, match=match):
            kind(api_key=KEY, **setting)


def test_a_missing_ssl_cert_file_is_refused_when_the_client_is_built(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", "/nowhere/corporate-ca.pem")
    with pytest.raises(ValueError, match="SSL_CERT_FILE names no CA file"):
        AmaiClient(api_key=KEY)
    # Without trust_env, the variable does not count.
    AmaiClient(api_key=KEY, trust_env=False).close()


# --- errors across processes ----------------------------------------------------------


def test_a_pickled_spend_failure_keeps_its_cause(harness: Harness) -> None:
    reset = failing_with(ConnectionResetError(104, "reset"))
    client, _ = failing_client(harness, quoted, reset, max_retries=0)

    def block() -> Any:
        if harness.is_async:

            async def run() -> None:
                async with client.metered("dub", units=2, reference="job-5"):
                    pass

            return run()
        with client.metered("dub", units=2, reference="job-5"):
            pass
        return None

    with pytest.raises(SpendFailedError) as caught:
        harness.run(block())

    data = pickle.dumps(caught.value)
    assert KEY.encode() not in data
    again = pickle.loads(data)
    cause = again.__cause__
    assert isinstance(cause, APIConnectionError)
    assert str(cause) == str(caught.value.__cause__)
    assert cause.reference == "job-5"
    # The httpx error under it holds the request (and the key): only its text travels.
    assert type(cause.__cause__) is Exception
    assert str(cause.__cause__).startswith("httpx.ConnectError: ")


def test_a_pickled_error_without_a_cause_has_none() -> None:
    again = pickle.loads(pickle.dumps(AmaiError("plain")))
    assert again.__cause__ is None
    assert str(again) == "plain"


# Imports aiohttp inside a running loop as a user's first request would, and reports from
# which thread the import ran and the longest the loop went without running a ticker.
def test_a_new_journal_file_is_logged(tmp_path: Any, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "volume" / "spends.sqlite3"
    with caplog.at_level(logging.INFO, logger="amaimedia"):
        AmaiClient(api_key=KEY, spend_journal=path).close()
    created = [r.getMessage() for r in caplog.records if "created a new" in r.getMessage()]
    assert created == [
        f"created a new, empty spend journal at {path}, and its directory; entries left "
        "pending in an earlier journal are not in it"
    ]
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="amaimedia"):
        AmaiClient(api_key=KEY, spend_journal=path).close()  # the same file: nothing new
        (tmp_path / "volume" / "other.sqlite3").unlink(missing_ok=True)
        AmaiClient(api_key=KEY, spend_journal=tmp_path / "volume" / "other.sqlite3").close()
    messages = [r.getMessage() for r in caplog.records]
    assert messages == [
        f"created a new, empty spend journal at {tmp_path / 'volume' / 'other.sqlite3'}; "
        "entries left pending in an earlier journal are not in it"
    ]


# --- the first call of a process, and the caller's pool from another loop -------------


def test_the_first_call_builds_the_models_once(
    harness: Harness, router: respx.Router, monkeypatch: pytest.MonkeyPatch
) -> None:
    from amaimedia import _lazy_names, _models

    # As in a fresh process: no model built, and none of the names the calls use bound.
    monkeypatch.setattr(_models, "_built", False)
    monkeypatch.setattr(_lazy_names, "bound", False)
    client = routed_client(harness, router)
    assert harness.run(client.check("chat")).cost_tokens == 5
    assert _models.models_built()
    assert _lazy_names.bound
    monkeypatch.setattr(_models, "_built", False)
    monkeypatch.setattr(_lazy_names, "bound", False)
    assert harness.run(client.spend("chat", reference="job-1")).charged == 5
    assert _models.models_built()
    assert _lazy_names.bound
    _models.build_models()  # again: nothing left to build
    assert _models.models_built()


def test_a_pool_of_yours_bound_to_another_loop_is_explained_at_once() -> None:
    def dead_loop(request: httpx.Request) -> httpx.Response:
        raise RuntimeError("Event loop is closed")

    async def main() -> APIConnectionError:
        http = httpx.AsyncClient(transport=httpx.MockTransport(dead_loop))
        client = AsyncAmaiClient(api_key=KEY, http_client=http, max_retries=3)
        try:
            await client.check("chat")
        except APIConnectionError as exc:
            return exc
        finally:
            await http.aclose()
        raise AssertionError("no error")

    error = asyncio.run(main())
    assert error.retryable is False
    assert "Event loop is closed" in str(error)


def test_another_runtime_error_of_a_pool_of_yours_goes_on_unchanged() -> None:
    def broken(request: httpx.Request) -> httpx.Response:
        raise RuntimeError("something else entirely")

    async def main() -> None:
        async with httpx.AsyncClient(transport=httpx.MockTransport(broken)) as http:
            await AsyncAmaiClient(api_key=KEY, http_client=http).check("chat")

    with pytest.raises(RuntimeError, match="something else entirely"):
        asyncio.run(main())


def test_a_url_the_pool_cannot_speak_is_not_retried(harness: Harness) -> None:
    def unsupported(request: httpx.Request) -> httpx.Response:
        raise httpx.UnsupportedProtocol("Request URL has an unsupported protocol", request=request)

    client, sent = failing_client(harness, unsupported, max_retries=3)
    with pytest.raises(APIConnectionError) as caught:
        harness.run(client.check("chat"))
    assert caught.value.retryable is False
    assert str(caught.value).startswith("cannot send POST https://api.amaimedia.com")
    assert len(sent) == 1


def test_a_deadline_already_passed_refuses_the_attempt() -> None:
    from amaimedia._deadline import Deadline

    deadline = Deadline(1e-9)
    request = httpx.Request("POST", CHECK_URL)
    with pytest.raises(
        APITimeoutError, match=r"total_timeout of 1e-09 s is spent after 0 attempts"
    ):
        deadline.start_attempt(request, httpx.Timeout(5.0))
