"""The settings and headers that bound how long a call waits, checked before any request.

- `max_retry_after` must be finite: infinity made every `Retry-After` one to wait for, and
  `Retry-After: 1e308` then raised a bare `OverflowError` (sync) or waited forever (async).
- A `Retry-After` longer than a day (`MAX_RETRY_AFTER_HEADER`) is no wait a server means:
  it counts as absent, and the client backs off as it would without one.
- Every phase of an `httpx.Timeout` is checked when the client is built (httpx accepts
  `httpx.Timeout(-1)` and fails at the first request with a `ValueError` naming nothing).
"""

from __future__ import annotations

import math

import httpx
import pytest
import respx

from amaimedia._response import parse_retry_after
from tests.answers import QUOTE, error, queue
from tests.conftest import Harness

# The SDK's limit (amaimedia._constants), as the docs give it: a day.
MAX_RETRY_AFTER_HEADER = 86_400.0


def test_the_limit_is_the_documented_one() -> None:
    from amaimedia import _constants

    assert _constants.MAX_RETRY_AFTER_HEADER == MAX_RETRY_AFTER_HEADER


# --- Retry-After ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {"Retry-After": "1e308"},
        {"Retry-After": str(MAX_RETRY_AFTER_HEADER + 1)},
        {"retry-after-ms": "1e308"},
        {"Retry-After": "Fri, 31 Dec 9999 23:59:59 GMT"},
    ],
)
def test_an_absurd_retry_after_counts_as_absent(headers: dict[str, str]) -> None:
    assert parse_retry_after(httpx.Headers(headers)) is None


def test_a_day_is_the_longest_retry_after_taken() -> None:
    headers = httpx.Headers({"Retry-After": "86400"})
    assert parse_retry_after(headers) == MAX_RETRY_AFTER_HEADER


def test_an_absurd_retry_after_falls_back_to_backoff(harness: Harness, api: respx.Router) -> None:
    queue(api["check"], error(429, "rate_limited", headers={"Retry-After": "1e308"}))
    client = harness.client(api)

    assert harness.run(client.check("chat")).cost_tokens == QUOTE["cost_tokens"]
    assert len(harness.sleeps) == 1
    assert harness.sleeps[0] <= 0.5


def test_an_absurd_retry_after_is_not_waited_for_whatever_the_cap(
    harness: Harness, api: respx.Router
) -> None:
    queue(api["check"], error(503, headers={"Retry-After": "1e308"}))
    client = harness.client(api, max_retry_after=1e300)
    harness.run(client.check("chat"))
    assert harness.sleeps[0] <= 0.5


# --- settings checked when the client is built --------------------------------------------


@pytest.mark.parametrize("value", [math.inf, -math.inf, 1e309])
def test_max_retry_after_must_be_finite(harness: Harness, api: respx.Router, value: float) -> None:
    with pytest.raises(ValueError, match="max_retry_after must be a finite number of seconds"):
        harness.client(api, max_retry_after=value)
    client = harness.client(api)
    with pytest.raises(ValueError, match="max_retry_after"):
        client.with_options(max_retry_after=value)
    assert len(api.calls) == 0


@pytest.mark.parametrize(
    ("timeout", "phase", "shown"),
    [
        (httpx.Timeout(-1), "connect", "-1"),
        (httpx.Timeout(5.0, read=-1), "read", "-1"),
        (httpx.Timeout(5.0, pool=0), "pool", "0"),
        (httpx.Timeout(5.0, write=math.inf), "write", "inf"),
        (httpx.Timeout(5.0, connect=math.nan), "connect", "nan"),
    ],
)
def test_each_phase_of_an_httpx_timeout_is_checked(
    harness: Harness, api: respx.Router, timeout: httpx.Timeout, phase: str, shown: str
) -> None:
    expected = (
        f"timeout: the {phase} limit of the httpx.Timeout must be a positive number of "
        f"seconds or None, got {shown}"
    )
    with pytest.raises(ValueError, match="timeout") as exc_info:
        harness.client(api, timeout=timeout)
    assert str(exc_info.value) == expected
    with pytest.raises(ValueError, match=f"the {phase} limit"):
        harness.client(api).with_options(timeout=timeout)
    assert len(api.calls) == 0


def test_a_phase_that_is_not_a_number_is_a_type_error(harness: Harness, api: respx.Router) -> None:
    with pytest.raises(TypeError, match=r"timeout: the read limit of the httpx\.Timeout"):
        harness.client(api, timeout=httpx.Timeout(5.0, read="3"))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "timeout",
    [httpx.Timeout(None), httpx.Timeout(5.0, pool=None), httpx.Timeout(10.0, connect=0.5)],
)
def test_valid_httpx_timeouts_are_kept(
    harness: Harness, api: respx.Router, timeout: httpx.Timeout
) -> None:
    client = harness.client(api, timeout=timeout)
    assert client.timeout == timeout
    harness.run(client.check("chat"))
