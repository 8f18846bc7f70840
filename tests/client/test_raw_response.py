"""`client.with_raw_response`: `check` and `spend` that return the HTTP answer too.

They send, retry and raise exactly as the plain methods do, and a raw spend keeps every
guarantee of `spend()`: one reference, fixed before the first attempt, on every retry and
on every error.
"""

from __future__ import annotations

import logging
import pickle
from typing import Any

import httpx
import pytest
import respx

from amaimedia import (
    AmaiError,
    APIConnectionError,
    APIResponseValidationError,
    Charge,
    ChargeEvent,
    Hooks,
    InsufficientCreditsError,
    Quote,
    RawResponse,
    RetryEvent,
    ServerError,
)
from amaimedia.testing import FakeAmaiServer
from tests.answers import CHARGE, KEY, QUOTE, bodies, error, queue
from tests.conftest import Harness

HEADERS = {"cf-ray": "8f1e2d3c4b5a6978-AMS", "x-ratelimit-remaining": "59"}


def test_a_raw_check(harness: Harness, api: respx.Router) -> None:
    queue(api["check"], httpx.Response(200, json=QUOTE, headers=HEADERS))
    raw = harness.run(harness.client(api).with_raw_response.check("dub", 3))

    assert isinstance(raw, RawResponse)
    assert raw.status_code == 200
    assert raw.headers["x-ratelimit-remaining"] == "59"
    assert raw.request_id == "8f1e2d3c4b5a6978-AMS"
    assert isinstance(raw.http_response, httpx.Response)
    assert raw.http_response.json() == QUOTE  # the body was read
    quote = raw.parse()
    assert quote == Quote(**QUOTE)
    assert quote.request_id == raw.request_id
    assert raw.parse() is quote  # parsed once, as the call returned
    assert bodies(api.calls) == [{"tool": "dub", "units": 3}]


def test_a_raw_spend(harness: Harness, api: respx.Router) -> None:
    queue(api["spend"], httpx.Response(201, json=CHARGE, headers=HEADERS))
    raw = harness.run(harness.client(api).with_raw_response.spend("dub", 2, reference="job-1"))

    assert raw.status_code == 201
    assert raw.request_id == "8f1e2d3c4b5a6978-AMS"
    charge = raw.parse()
    assert charge == Charge(**CHARGE, reference="job-1")
    assert charge.request_id == "8f1e2d3c4b5a6978-AMS"
    assert bodies(api.calls) == [{"tool": "dub", "units": 2, "reference": "job-1"}]


def test_the_defaults_are_those_of_the_plain_methods(harness: Harness, api: respx.Router) -> None:
    client = harness.client(api)
    harness.run(client.with_raw_response.check("chat"))
    raw = harness.run(client.with_raw_response.spend("chat"))
    sent = bodies(api.calls)
    assert sent[0] == {"tool": "chat", "units": 1}
    assert sent[1]["units"] == 1
    assert raw.parse().reference == sent[1]["reference"]  # generated, and sent
    assert raw.request_id is None  # the router sends no request id


def test_a_raw_answer_matches_the_plain_one_over_the_fake(harness: Harness) -> None:
    """End to end on the SDK's fake, which gives every answer an `x-request-id`."""
    fake = FakeAmaiServer()
    key = fake.create_key(balance=1_000)
    client = fake.async_client(key) if harness.is_async else fake.client(key)
    try:
        raw = harness.run(client.with_raw_response.spend("chat", reference="job-1"))
        plain = harness.run(client.spend("chat", reference="job-1"))  # a replay: no charge
    finally:
        harness.run(client.aclose() if harness.is_async else client.close())
    first, second = fake.requests
    assert raw.request_id == raw.parse().request_id == first.request_id
    assert plain.request_id == second.request_id != first.request_id
    assert raw.parse() == plain
    assert raw.headers["content-type"].startswith("application/json")
    assert len(fake.spends) == 1


def test_errors_are_raised_as_the_plain_methods_raise_them(
    harness: Harness, api: respx.Router
) -> None:
    refusal = error(402, "insufficient_credits", cost_tokens=400, balance=80)
    queue(api["check"], refusal, refusal)
    client = harness.client(api)
    with pytest.raises(InsufficientCreditsError) as plain:
        harness.run(client.check("dub", 10))
    with pytest.raises(InsufficientCreditsError) as raw:
        harness.run(client.with_raw_response.check("dub", 10))
    assert str(raw.value) == str(plain.value)
    assert (raw.value.cost_tokens, raw.value.balance) == (400, 80)


def test_a_2xx_of_the_wrong_shape_raises_too(harness: Harness, api: respx.Router) -> None:
    queue(api["check"], httpx.Response(200, json={"ok": True}))
    with pytest.raises(APIResponseValidationError):
        harness.run(harness.client(api).with_raw_response.check("chat"))


def test_errors_are_retried_as_the_plain_methods_retry_them(
    harness: Harness, api: respx.Router
) -> None:
    queue(api["check"], error(503, "server_error"), httpx.ConnectError("refused"))
    raw = harness.run(harness.client(api, max_retries=2).with_raw_response.check("chat"))
    assert raw.status_code == 200
    assert api["check"].calls.call_count == 3
    assert len(harness.sleeps) == 2


def test_a_retried_raw_spend_sends_one_reference(harness: Harness, api: respx.Router) -> None:
    retries: list[RetryEvent] = []
    charges: list[ChargeEvent] = []
    hooks = Hooks(on_retry=retries.append, on_charge=charges.append)
    queue(
        api["spend"],
        error(503, "server_error"),
        httpx.ReadTimeout("stalled"),
        httpx.Response(200, json=CHARGE, headers={"cf-ray": "the-charge"}),
    )
    client = harness.client(api, max_retries=2, hooks=hooks)
    raw = harness.run(client.with_raw_response.spend("chat"))

    sent = {body["reference"] for body in bodies(api["spend"].calls)}
    assert api["spend"].calls.call_count == 3
    assert sent == {raw.parse().reference}
    # The observer saw the raw spend as it sees spend(): its retries, then its charge.
    assert [event.reference for event in retries] == [raw.parse().reference] * 2
    [charge] = charges
    assert charge.reference == raw.parse().reference
    assert charge.attempts == 3
    assert charge.request_id == "the-charge"


def test_a_failed_raw_spend_carries_its_reference_and_is_logged(
    harness: Harness, api: respx.Router, caplog: pytest.LogCaptureFixture
) -> None:
    queue(api["spend"], error(503, "server_error"), error(503, "server_error"))
    client = harness.client(api, max_retries=1)
    with (
        caplog.at_level(logging.WARNING, logger="amaimedia"),
        pytest.raises(ServerError) as caught,
    ):
        harness.run(client.with_raw_response.spend("chat", 2))

    reference = caught.value.reference
    assert reference is not None
    assert {body["reference"] for body in bodies(api["spend"].calls)} == {reference}
    [record] = [r for r in caplog.records if r.getMessage().startswith("spend of")]
    assert record.getMessage().startswith(f"spend of chat x2 failed (reference={reference})")


def test_a_raw_spend_without_an_answer_carries_its_reference(
    harness: Harness, api: respx.Router
) -> None:
    queue(api["spend"], httpx.ConnectError("refused"))
    client = harness.client(api, max_retries=0)
    with pytest.raises(APIConnectionError) as caught:
        harness.run(client.with_raw_response.spend("chat", reference="job-9"))
    assert caught.value.reference == "job-9"


@pytest.mark.parametrize(
    ("method", "arguments", "kind"),
    [
        ("check", {"tool": "chat", "units": 0}, ValueError),
        ("check", {"tool": 3}, TypeError),
        ("spend", {"tool": "chat", "reference": ""}, ValueError),
        ("spend", {"tool": "chat", "units": True}, TypeError),
    ],
)
def test_impossible_arguments_are_refused_before_sending(
    harness: Harness,
    api: respx.Router,
    method: str,
    arguments: dict[str, Any],
    kind: type[Exception],
) -> None:
    raw = harness.client(api).with_raw_response
    with pytest.raises(kind):
        harness.run(getattr(raw, method)(**arguments))
    assert api.calls.call_count == 0


def test_a_closed_client_sends_nothing(harness: Harness, api: respx.Router) -> None:
    client = harness.client(api)
    raw = client.with_raw_response  # taken before the close: it still follows the client
    harness.run(client.aclose() if harness.is_async else client.close())
    with pytest.raises(AmaiError, match="is closed"):
        harness.run(raw.check("chat"))
    assert api.calls.call_count == 0


def test_with_options_gives_a_raw_accessor_of_the_copy(
    harness: Harness, api: respx.Router
) -> None:
    queue(api["check"], error(503, "server_error"))
    client = harness.client(api, max_retries=3)
    with pytest.raises(ServerError):
        harness.run(client.with_options(max_retries=0).with_raw_response.check("chat"))
    assert api["check"].calls.call_count == 1


def test_the_key_is_never_shown_nor_pickled(harness: Harness, api: respx.Router) -> None:
    raw = harness.run(harness.client(api).with_raw_response.check("chat"))
    assert repr(raw) == "<RawResponse [200] Quote>"
    assert KEY not in repr(raw)
    assert KEY not in str(raw)
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(raw)
    assert pickle.loads(pickle.dumps(raw.parse())) == raw.parse()


def test_the_accessors_are_typed_twins(harness: Harness, api: respx.Router) -> None:
    accessor = harness.client(api).with_raw_response
    expected = "AsyncRawResponseClient" if harness.is_async else "RawResponseClient"
    assert type(accessor).__name__ == expected
    assert not hasattr(accessor, "__dict__")  # slots: the accessor is two bound methods
