"""Request validation and the request/response models.

Bad arguments must fail before anything is sent, with the builtin `TypeError` or
`ValueError` that names the argument, the same way in both clients and both methods.
"""

from __future__ import annotations

import json
import math
import re
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

import httpx
import pydantic
import pytest
import respx

from amaimedia import Charge, CheckRequest, ErrorBody, Quote, SpendRequest
from amaimedia._references import new_reference
from tests.answers import CHARGE, QUOTE, bodies, queue
from tests.conftest import Harness

REFERENCE_PATTERN = re.compile(r"req_(\d{4}-\d{2}-\d{2})_[0-9a-f]{20}")


def send(harness: Harness, client: Any, method: str, **arguments: Any) -> Any:
    """Call check or spend with keyword arguments (spend always gets a reference unless given)."""
    if method == "check":
        return harness.run(client.check(**arguments))
    arguments.setdefault("reference", "job-1")
    return harness.run(client.spend(**arguments))


# --- Bad arguments are refused before any request --------------------------------------------

BAD_UNITS = [
    pytest.param(0, ValueError, id="zero"),
    pytest.param(0.0, ValueError, id="zero-float"),
    pytest.param(-1, ValueError, id="negative"),
    pytest.param(-0.5, ValueError, id="negative-float"),
    pytest.param(math.nan, ValueError, id="nan"),
    pytest.param(math.inf, ValueError, id="inf"),
    pytest.param(-math.inf, ValueError, id="-inf"),
    # bool is an int subclass: True must not quietly mean one unit.
    pytest.param(True, TypeError, id="True"),
    pytest.param(False, TypeError, id="False"),
    pytest.param("3", TypeError, id="str"),
    pytest.param(None, TypeError, id="None"),
    pytest.param([1], TypeError, id="list"),
    pytest.param(Decimal("3"), TypeError, id="Decimal"),
    pytest.param(1 + 2j, TypeError, id="complex"),
]

BAD_TOOLS = [
    pytest.param("", ValueError, id="empty"),
    pytest.param("   ", ValueError, id="blank"),
    pytest.param("ch at", ValueError, id="inner-space"),
    pytest.param(" chat", ValueError, id="leading-space"),
    pytest.param("chat\n", ValueError, id="newline"),
    pytest.param(None, TypeError, id="None"),
    pytest.param(3, TypeError, id="int"),
    pytest.param(b"chat", TypeError, id="bytes"),
]

BAD_REFERENCES = [
    pytest.param("", ValueError, id="empty"),
    pytest.param("  ", ValueError, id="blank"),
    pytest.param("x" * 256, ValueError, id="too-long"),
    pytest.param("job\n1", ValueError, id="newline"),
    pytest.param("job\x001", ValueError, id="nul"),
    pytest.param(42, TypeError, id="int"),
    pytest.param(b"job-1", TypeError, id="bytes"),
]


def assert_refused(
    harness: Harness,
    api: respx.Router,
    method: str,
    expected: type[Exception],
    name: str,
    **arguments: Any,
) -> None:
    client = harness.client(api)
    with pytest.raises(expected) as excinfo:
        send(harness, client, method, **arguments)
    exc = excinfo.value
    # The builtin itself, never pydantic's ValidationError (a ValueError subclass).
    assert type(exc) is expected
    assert name in str(exc)
    assert api.calls.call_count == 0


@pytest.mark.parametrize("method", ["check", "spend"])
@pytest.mark.parametrize(("units", "expected"), BAD_UNITS)
def test_bad_units(
    harness: Harness, api: respx.Router, method: str, units: object, expected: type[Exception]
) -> None:
    assert_refused(harness, api, method, expected, "units", tool="chat", units=units)


@pytest.mark.parametrize("method", ["check", "spend"])
@pytest.mark.parametrize(("tool", "expected"), BAD_TOOLS)
def test_bad_tool(
    harness: Harness, api: respx.Router, method: str, tool: object, expected: type[Exception]
) -> None:
    assert_refused(harness, api, method, expected, "tool", tool=tool)


@pytest.mark.parametrize(("reference", "expected"), BAD_REFERENCES)
def test_bad_reference(
    harness: Harness, api: respx.Router, reference: object, expected: type[Exception]
) -> None:
    assert_refused(harness, api, "spend", expected, "reference", tool="chat", reference=reference)


def test_reference_at_the_length_limit_is_sent(harness: Harness, api: respx.Router) -> None:
    reference = "r" * 255
    charge = harness.run(harness.client(api).spend("chat", reference=reference))
    assert charge.reference == reference
    assert bodies(api["spend"].calls)[0]["reference"] == reference


def test_type_error_message_shows_what_was_given(harness: Harness, api: respx.Router) -> None:
    with pytest.raises(TypeError, match=r"units .*str '3'"):
        harness.run(harness.client(api).check("chat", units="3"))
    assert api.calls.call_count == 0


# --- Valid arguments are sent as given ---------------------------------------------------------


@pytest.mark.parametrize("method", ["check", "spend"])
@pytest.mark.parametrize(
    ("units", "kind"), [(1, int), (3, int), (2.5, float), (2.0, float), (0.001, float)]
)
def test_units_are_sent_as_is(
    harness: Harness, api: respx.Router, method: str, units: float, kind: type
) -> None:
    send(harness, harness.client(api), method, tool="dub", units=units)
    (body,) = bodies(api[method].calls)
    assert body["units"] == units
    # 1 must not become 1.0 on the wire, nor 2.0 become 2.
    assert type(body["units"]) is kind


@pytest.mark.parametrize("method", ["check", "spend"])
def test_units_default_to_one(harness: Harness, api: respx.Router, method: str) -> None:
    send(harness, harness.client(api), method, tool="chat")
    (body,) = bodies(api[method].calls)
    assert body["units"] == 1
    assert type(body["units"]) is int


@pytest.mark.parametrize("method", ["check", "spend"])
@pytest.mark.parametrize("tool", ["chat", "voice_clone", "hologram", "Image-v2"])
def test_tool_names_are_sent_as_is(
    harness: Harness, api: respx.Router, method: str, tool: str
) -> None:
    """Unknown tools are the server's to judge: the API may add tools before the SDK."""
    send(harness, harness.client(api), method, tool=tool)
    assert bodies(api[method].calls)[0]["tool"] == tool


@pytest.mark.parametrize("reference", ["job-1", "req_2026-07-03_abc123", "ünïcode ref 🎬", "  x"])
def test_reference_is_sent_unchanged(harness: Harness, api: respx.Router, reference: str) -> None:
    charge = harness.run(harness.client(api).spend("chat", units=2, reference=reference))
    assert bodies(api["spend"].calls) == [{"tool": "chat", "units": 2, "reference": reference}]
    assert charge.reference == reference


def test_check_body_has_only_documented_fields(harness: Harness, api: respx.Router) -> None:
    harness.run(harness.client(api).check("image", units=4))
    assert bodies(api["check"].calls) == [{"tool": "image", "units": 4}]


def test_body_on_the_wire_with_respx(harness: Harness, respx_mock: respx.MockRouter) -> None:
    route = respx_mock.post("https://api.amaimedia.com/api/v1/tools/spend").mock(
        return_value=httpx.Response(200, json=CHARGE)
    )
    client = harness.client(http_client=None)
    charge = harness.run(client.spend("hologram", units=2.5, reference="job-7"))
    request = route.calls.last.request
    assert json.loads(request.content) == {"tool": "hologram", "units": 2.5, "reference": "job-7"}
    assert request.headers["content-type"] == "application/json"
    assert charge == Charge(**CHARGE, reference="job-7")


# --- The request models used directly ---------------------------------------------------------


def test_request_models_directly() -> None:
    check = CheckRequest(tool="chat")
    spend = SpendRequest(tool="dub", units=2.5, reference="job-1")
    assert check.model_dump() == {"tool": "chat", "units": 1}
    assert spend.model_dump() == {"tool": "dub", "units": 2.5, "reference": "job-1"}
    assert json.loads(spend.model_dump_json()) == {
        "tool": "dub",
        "units": 2.5,
        "reference": "job-1",
    }


def test_from_arguments_builds_requests() -> None:
    assert CheckRequest.from_arguments(tool="sfx", units=3) == CheckRequest(tool="sfx", units=3)
    spend = SpendRequest.from_arguments(tool="sfx", reference="r-1")
    assert (spend.tool, spend.units, spend.reference) == ("sfx", 1, "r-1")


@pytest.mark.parametrize(
    ("arguments", "expected", "name"),
    [
        ({"tool": 3}, TypeError, "tool"),
        ({"tool": ""}, ValueError, "tool"),
        ({"tool": "chat", "units": True}, TypeError, "units"),
        ({"tool": "chat", "units": -2}, ValueError, "units"),
        ({"tool": "chat", "units": math.nan}, ValueError, "units"),
    ],
)
def test_check_from_arguments_raises_builtins(
    arguments: dict[str, Any], expected: type[Exception], name: str
) -> None:
    with pytest.raises(expected) as excinfo:
        CheckRequest.from_arguments(**arguments)
    assert type(excinfo.value) is expected
    assert not isinstance(excinfo.value, pydantic.ValidationError)
    assert name in str(excinfo.value)
    # "from None": the pydantic error is not chained behind the builtin.
    assert excinfo.value.__cause__ is None
    assert excinfo.value.__suppress_context__


@pytest.mark.parametrize(
    ("arguments", "expected", "name"),
    [
        ({"tool": "chat", "reference": 42}, TypeError, "reference"),
        ({"tool": "chat", "reference": ""}, ValueError, "reference"),
        ({"tool": "chat", "reference": "a\tb"}, ValueError, "reference"),
        ({"tool": None, "reference": "r"}, TypeError, "tool"),
    ],
)
def test_spend_from_arguments_raises_builtins(
    arguments: dict[str, Any], expected: type[Exception], name: str
) -> None:
    with pytest.raises(expected) as excinfo:
        SpendRequest.from_arguments(**arguments)
    assert type(excinfo.value) is expected
    assert name in str(excinfo.value)


def test_direct_construction_raises_validation_error() -> None:
    with pytest.raises(pydantic.ValidationError) as excinfo:
        CheckRequest(tool="", units=1)
    # pydantic's ValidationError is a ValueError, so `except ValueError` catches both paths.
    assert isinstance(excinfo.value, ValueError)
    assert excinfo.value.errors()[0]["loc"] == ("tool",)


def test_request_models_are_frozen_and_strict() -> None:
    request = CheckRequest(tool="chat", units=1)
    with pytest.raises(pydantic.ValidationError):
        request.units = 2  # type: ignore[misc]
    with pytest.raises(pydantic.ValidationError):
        CheckRequest(tool="chat", units=1, reference="r")  # type: ignore[call-arg]


# --- Response models -------------------------------------------------------------------------


def test_quote_and_charge_are_frozen() -> None:
    quote = Quote(**QUOTE)
    charge = Charge(**CHARGE, reference="job-1")
    with pytest.raises(pydantic.ValidationError):
        quote.cost_tokens = 0  # type: ignore[misc]
    with pytest.raises(pydantic.ValidationError):
        charge.reference = "other"  # type: ignore[misc]
    assert quote.cost_tokens == QUOTE["cost_tokens"]
    assert charge.reference == "job-1"
    # Frozen models hash, so results can be cached or put in sets.
    assert hash(quote) == hash(Quote(**QUOTE))


def test_response_models_keep_extra_fields() -> None:
    quote = Quote.model_validate({**QUOTE, "currency": "tokens"})
    charge = Charge.model_validate({**CHARGE, "reference": "r", "ledger": [1, 2]})
    assert quote.model_extra == {"currency": "tokens"}
    assert charge.model_extra == {"ledger": [1, 2]}
    assert quote.model_dump()["currency"] == "tokens"


def test_charge_reference_is_the_one_sent(harness: Harness, api: respx.Router) -> None:
    """The server does not echo the reference; a stray one in its body must not win."""
    queue(api["spend"], httpx.Response(200, json={**CHARGE, "reference": "someone-else"}))
    charge = harness.run(harness.client(api).spend("chat", reference="mine"))
    assert charge.reference == "mine"
    assert bodies(api["spend"].calls)[0]["reference"] == "mine"


@pytest.mark.parametrize(
    "body",
    [
        {"ok": "maybe", "error": 5, "message": [], "cost_tokens": "x", "balance": {}},
        {"ok": None, "error": None, "message": None, "cost_tokens": 2.5, "balance": [1]},
    ],
)
def test_error_body_is_lenient(body: dict[str, Any]) -> None:
    parsed = ErrorBody.model_validate(body)
    assert parsed.ok is None
    assert parsed.error is None
    assert parsed.message is None
    assert parsed.cost_tokens is None
    assert parsed.balance is None


def test_error_body_reads_the_documented_shape() -> None:
    parsed = ErrorBody.model_validate(
        {"ok": False, "error": "insufficient_credits", "cost_tokens": 5, "balance": 2, "x": 1}
    )
    assert (parsed.ok, parsed.error, parsed.cost_tokens, parsed.balance) == (
        False,
        "insufficient_credits",
        5,
        2,
    )
    assert parsed.model_extra == {"x": 1}
    assert ErrorBody() == ErrorBody.model_validate({})


# --- Generated references ---------------------------------------------------------------------


def utc_days() -> set[str]:
    return {datetime.now(timezone.utc).strftime("%Y-%m-%d")}


def test_new_reference_shape_and_date() -> None:
    before = utc_days()
    reference = new_reference()
    days = before | utc_days()  # a call that straddles midnight may carry either date
    match = REFERENCE_PATTERN.fullmatch(reference)
    assert match is not None, reference
    assert match.group(1) in days


def test_a_reference_made_after_midnight_utc_carries_the_new_day(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The day is remembered between references; the clock crossing midnight renews it.
    before_midnight = datetime(2026, 12, 31, 23, 59, 59, 900_000, tzinfo=timezone.utc)
    clock = [before_midnight.timestamp()]
    monkeypatch.setattr("amaimedia._references.time.time", lambda: clock[0])
    assert new_reference().startswith("req_2026-12-31_")
    clock[0] += 0.2
    assert new_reference().startswith("req_2027-01-01_")
    clock[0] -= 0.2  # a clock stepped back (NTP) goes back to that day too
    assert new_reference().startswith("req_2026-12-31_")


def test_new_references_are_distinct() -> None:
    references = [new_reference() for _ in range(10_000)]
    assert len(set(references)) == len(references)
    assert all(REFERENCE_PATTERN.fullmatch(r) for r in references)


def test_spend_without_reference_generates_one(harness: Harness, api: respx.Router) -> None:
    client = harness.client(api)
    before = utc_days()
    first = harness.run(client.spend("chat"))
    second = harness.run(client.spend("chat"))
    days = before | utc_days()
    sent = [body["reference"] for body in bodies(api["spend"].calls)]
    assert sent == [first.reference, second.reference]
    assert first.reference != second.reference
    for reference in sent:
        match = REFERENCE_PATTERN.fullmatch(reference)
        assert match is not None, reference
        assert match.group(1) in days


def test_generated_reference_is_kept_across_retries(harness: Harness, api: respx.Router) -> None:
    """Fixed before the retry loop, so a retried spend can never charge twice."""
    queue(api["spend"], httpx.Response(503), httpx.ConnectError("refused"))
    charge = harness.run(harness.client(api, max_retries=2).spend("chat"))
    sent = {body["reference"] for body in bodies(api["spend"].calls)}
    assert api.calls.call_count == 3
    assert sent == {charge.reference}
