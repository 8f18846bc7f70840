"""The error mapping: from an HTTP answer to the SDK's typed exceptions.

Every test runs against both clients through the `harness` fixture, in process: the answer
is queued on the `api` respx router. Statuses that the SDK would retry (429, 5xx) are
tested with `max_retries=0` so that one answer is one error.
"""

from __future__ import annotations

import json
import pickle
from typing import Any

import httpx
import pytest
import respx

from amaimedia import (
    AmaiError,
    APIError,
    APIResponseValidationError,
    AuthenticationError,
    ForbiddenError,
    InsufficientCreditsError,
    RateLimitError,
    ServerError,
)
from tests.answers import CHARGE, KEY, QUOTE, bodies, error, queue
from tests.conftest import Harness

BASE_URL = "https://api.amaimedia.com"
CHECK_URL = BASE_URL + "/api/v1/tools/check"
SPEND_URL = BASE_URL + "/api/v1/tools/spend"


def call(harness: Harness, client: Any, endpoint: str) -> Any:
    if endpoint == "check":
        return harness.run(client.check("chat"))
    return harness.run(client.spend("chat", reference="job-1"))


def raised(
    harness: Harness,
    api: respx.Router,
    reply: httpx.Response,
    *,
    endpoint: str = "check",
    expected: type[AmaiError] = AmaiError,
) -> Any:
    """The exception one answer turns into, with retries off; exactly one request is sent."""
    queue(api[endpoint], reply)
    client = harness.client(api, max_retries=0)
    with pytest.raises(expected) as excinfo:
        call(harness, client, endpoint)
    assert api.calls.call_count == 1
    return excinfo.value


def raw(status: int, content: bytes | str, **headers: str) -> httpx.Response:
    return httpx.Response(status, content=content, headers=headers)


# --- One class per documented error ------------------------------------------------------


@pytest.mark.parametrize("endpoint", ["check", "spend"])
@pytest.mark.parametrize(
    ("status", "code", "cls"),
    [
        (401, "auth_required", AuthenticationError),
        (402, "insufficient_credits", InsufficientCreditsError),
        (403, "forbidden", ForbiddenError),
        (429, "rate_limited", RateLimitError),
    ],
)
def test_documented_errors_map_to_their_class(
    harness: Harness,
    api: respx.Router,
    endpoint: str,
    status: int,
    code: str,
    cls: type[APIError],
) -> None:
    reply = error(status, code, headers={"x-request-id": "req-abc"})
    exc = raised(harness, api, reply, endpoint=endpoint)
    assert type(exc) is cls
    assert isinstance(exc, APIError)
    assert isinstance(exc, AmaiError)
    assert exc.status_code == status
    assert exc.error == code
    assert exc.body == {"ok": False, "error": code}
    assert isinstance(exc.response, httpx.Response)
    assert exc.response.status_code == status
    assert exc.request_id == "req-abc"


def test_insufficient_credits_carries_cost_and_balance(
    harness: Harness, api: respx.Router
) -> None:
    reply = error(402, "insufficient_credits", cost_tokens=5, balance=2)
    exc = raised(harness, api, reply, endpoint="spend", expected=InsufficientCreditsError)
    assert exc.cost_tokens == 5
    assert exc.balance == 2
    assert exc.body == {
        "ok": False,
        "error": "insufficient_credits",
        "cost_tokens": 5,
        "balance": 2,
    }


def test_insufficient_credits_without_amounts(harness: Harness, api: respx.Router) -> None:
    exc = raised(
        harness, api, error(402, "insufficient_credits"), expected=InsufficientCreditsError
    )
    assert exc.cost_tokens is None
    assert exc.balance is None


def test_rate_limited_without_retry_after(harness: Harness, api: respx.Router) -> None:
    exc = raised(harness, api, error(429, "rate_limited"), expected=RateLimitError)
    assert exc.retry_after is None


@pytest.mark.parametrize(("header", "seconds"), [("7", 7.0), ("0.5", 0.5), ("0", 0.0)])
def test_rate_limited_with_retry_after(
    harness: Harness, api: respx.Router, header: str, seconds: float
) -> None:
    reply = error(429, "rate_limited", headers={"Retry-After": header})
    exc = raised(harness, api, reply, expected=RateLimitError)
    assert exc.retry_after == seconds


@pytest.mark.parametrize("status", [500, 502, 503])
def test_5xx_is_server_error(harness: Harness, api: respx.Router, status: int) -> None:
    exc = raised(harness, api, error(status), expected=ServerError)
    assert type(exc) is ServerError
    assert isinstance(exc, APIError)
    assert exc.status_code == status
    assert exc.error is None
    assert exc.body == {"ok": False}


# --- The error string decides first, the status second -----------------------------------


@pytest.mark.parametrize(
    ("status", "code", "cls"),
    [
        (400, "forbidden", ForbiddenError),
        (400, "auth_required", AuthenticationError),
        (403, "rate_limited", RateLimitError),
        (401, "insufficient_credits", InsufficientCreditsError),
        (500, "forbidden", ForbiddenError),
        (503, "rate_limited", RateLimitError),
    ],
)
def test_known_string_wins_over_status(
    harness: Harness, api: respx.Router, status: int, code: str, cls: type[APIError]
) -> None:
    exc = raised(harness, api, error(status, code))
    assert type(exc) is cls
    assert exc.status_code == status
    assert exc.error == code


@pytest.mark.parametrize("status", [400, 404, 405, 409, 418, 422])
def test_unknown_string_on_4xx_is_plain_api_error(
    harness: Harness, api: respx.Router, status: int
) -> None:
    exc = raised(harness, api, error(status, "tool_unknown"))
    assert type(exc) is APIError
    assert exc.status_code == status
    assert exc.error == "tool_unknown"
    assert "tool_unknown" in str(exc)


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (401, AuthenticationError),
        (402, InsufficientCreditsError),
        (403, ForbiddenError),
        (429, RateLimitError),
    ],
)
def test_unknown_string_on_a_documented_status_maps_by_status(
    harness: Harness, api: respx.Router, status: int, cls: type[APIError]
) -> None:
    """An unknown string is no known string: the documented status still decides."""
    exc = raised(harness, api, error(status, "key_expired"))
    assert type(exc) is cls
    assert exc.error == "key_expired"
    assert "key_expired" in str(exc)


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_unknown_string_on_5xx_is_server_error(
    harness: Harness, api: respx.Router, status: int
) -> None:
    exc = raised(harness, api, error(status, "worker_crashed"))
    assert type(exc) is ServerError
    assert exc.error == "worker_crashed"


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        # Deliberate: a documented status without a known string (an edge page, a proxy)
        # still means what the API doc says it means.
        (401, AuthenticationError),
        (402, InsufficientCreditsError),
        (403, ForbiddenError),
        (429, RateLimitError),
        (500, ServerError),
        (502, ServerError),
        (503, ServerError),
        (599, ServerError),
        (400, APIError),
        (404, APIError),
        (409, APIError),
        (418, APIError),
        (422, APIError),
    ],
)
def test_status_decides_without_a_known_string(
    harness: Harness, api: respx.Router, status: int, cls: type[APIError]
) -> None:
    exc = raised(harness, api, error(status))
    assert type(exc) is cls
    assert exc.status_code == status
    assert exc.error is None


# --- Bodies that are not the documented JSON ----------------------------------------------


def test_html_502_page_is_server_error(harness: Harness, api: respx.Router) -> None:
    page = "<html><body><h1>502 Bad Gateway</h1></body></html>"
    exc = raised(harness, api, raw(502, page, **{"content-type": "text/html"}))
    assert type(exc) is ServerError
    assert exc.status_code == 502
    assert exc.error is None
    assert exc.body == page
    assert not isinstance(exc, json.JSONDecodeError)
    assert "502" in str(exc)
    assert "not JSON" in str(exc)


@pytest.mark.parametrize(
    ("status", "cls"), [(500, ServerError), (400, APIError), (401, AuthenticationError)]
)
def test_empty_body(harness: Harness, api: respx.Router, status: int, cls: type[APIError]) -> None:
    exc = raised(harness, api, raw(status, b""))
    assert type(exc) is cls
    assert exc.status_code == status
    assert exc.error is None
    assert exc.body == ""


@pytest.mark.parametrize(
    ("content", "parsed"),
    [
        (b'["forbidden"]', ["forbidden"]),
        (b'"forbidden"', "forbidden"),
        (b"42", 42),
        (b"null", None),
        (b"true", True),
    ],
)
def test_json_that_is_not_an_object(
    harness: Harness, api: respx.Router, content: bytes, parsed: object
) -> None:
    """Only an object carries an error string; "forbidden" as a bare string does not count."""
    exc = raised(harness, api, raw(400, content, **{"content-type": "application/json"}))
    assert type(exc) is APIError
    assert exc.status_code == 400
    assert exc.error is None
    if parsed is None:
        # JSON null decodes to None, which the mapper treats as "no body given": it reads
        # the text instead. Either way the caller gets an APIError, not a crash.
        assert exc.body in (None, "null")
    else:
        assert exc.body == parsed


@pytest.mark.parametrize(
    "fields",
    [
        {"error": 5},
        {"error": ["forbidden"]},
        {"error": None},
        {"error": {"code": "forbidden"}},
        {"message": 12, "ok": "nope"},
    ],
)
def test_error_fields_of_the_wrong_type_never_crash(
    harness: Harness, api: respx.Router, fields: dict[str, Any]
) -> None:
    exc = raised(harness, api, httpx.Response(400, json=fields))
    assert type(exc) is APIError
    assert exc.error is None
    assert exc.body == fields


def test_amounts_of_the_wrong_type_never_crash(harness: Harness, api: respx.Router) -> None:
    body = {"ok": False, "error": "insufficient_credits", "cost_tokens": "x", "balance": [2]}
    exc = raised(harness, api, httpx.Response(402, json=body), expected=InsufficientCreditsError)
    assert exc.cost_tokens is None
    assert exc.balance is None
    assert exc.body == body
    assert "insufficient_credits" in str(exc)


@pytest.mark.parametrize("status", [500, 400])
def test_invalid_utf8_body(harness: Harness, api: respx.Router, status: int) -> None:
    exc = raised(harness, api, raw(status, b'\xff\xfe\xfa{"error": "forbidden"'))
    assert type(exc) is (ServerError if status >= 500 else APIError)
    assert exc.error is None
    assert isinstance(exc.body, str)


def test_unknown_charset(harness: Harness, api: respx.Router) -> None:
    reply = raw(502, b"<html>down</html>", **{"content-type": "text/html; charset=no-such"})
    exc = raised(harness, api, reply, expected=ServerError)
    assert exc.body == "<html>down</html>"


def test_deeply_nested_json(harness: Harness, api: respx.Router) -> None:
    """A body that would blow the parser's recursion limit is read as text."""
    content = b"[" * 100_000 + b"]" * 100_000
    exc = raised(harness, api, raw(500, content), expected=ServerError)
    assert isinstance(exc.body, str)


# --- Request ids, str() and repr() ---------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "request_id"),
    [
        ({"cf-ray": "8a1b2c3d4e5f-FRA"}, "8a1b2c3d4e5f-FRA"),
        ({"x-request-id": "req-42"}, "req-42"),
        ({"cf-ray": "8a1b2c3d4e5f-FRA", "x-request-id": "req-42"}, "8a1b2c3d4e5f-FRA"),
        ({"x-request-id": "req-42", "CF-Ray": "ray-1"}, "ray-1"),
    ],
)
def test_request_id_from_headers(
    harness: Harness, api: respx.Router, headers: dict[str, str], request_id: str
) -> None:
    exc = raised(harness, api, error(403, "forbidden", headers=headers), expected=ForbiddenError)
    assert exc.request_id == request_id
    assert request_id in str(exc)


def test_no_request_id(harness: Harness, api: respx.Router) -> None:
    exc = raised(harness, api, error(403, "forbidden"), expected=ForbiddenError)
    assert exc.request_id is None
    assert "request_id" not in str(exc)


def test_str_of_insufficient_credits(harness: Harness, api: respx.Router) -> None:
    reply = error(402, "insufficient_credits", cost_tokens=50, balance=7)
    exc = raised(harness, api, reply, endpoint="spend")
    text = str(exc)
    assert "402" in text
    assert "insufficient_credits" in text
    assert "50" in text
    assert "7" in text
    assert "\n" not in text  # one log line


def test_str_of_rate_limit_mentions_the_wait(harness: Harness, api: respx.Router) -> None:
    reply = error(429, "rate_limited", headers={"Retry-After": "12"})
    exc = raised(harness, api, reply, expected=RateLimitError)
    assert "429" in str(exc)
    assert "12" in str(exc)


@pytest.mark.parametrize(
    ("status", "body", "name"),
    [
        (402, {"error": "insufficient_credits", "cost_tokens": 5}, "InsufficientCreditsError"),
        (401, {"error": "auth_required"}, "AuthenticationError"),
        (502, "<html>" + "x" * 5000 + "</html>", "ServerError"),
    ],
)
def test_repr_is_short(
    harness: Harness, api: respx.Router, status: int, body: dict[str, Any] | str, name: str
) -> None:
    # Responses are built per test: one httpx.Response cannot serve both clients.
    if isinstance(body, str):
        reply = raw(status, body)
    else:
        reply = httpx.Response(status, json={"ok": False, **body}, headers={"cf-ray": "r"})
    exc = raised(harness, api, reply)
    text = repr(exc)
    assert text.startswith(name + "(")
    assert len(text) < 120
    assert "<html>" not in text


def test_server_message_is_shown(harness: Harness, api: respx.Router) -> None:
    reply = error(403, "forbidden", message="region blocked")
    exc = raised(harness, api, reply, expected=ForbiddenError)
    assert exc.message == "region blocked"
    assert "region blocked" in str(exc)


def test_request_id_and_mapping_with_respx(harness: Harness, respx_mock: respx.MockRouter) -> None:
    """The same mapping over httpx's real transport stack, mocked by respx."""
    respx_mock.post(SPEND_URL).mock(
        return_value=httpx.Response(
            402,
            json={"ok": False, "error": "insufficient_credits", "cost_tokens": 9, "balance": 1},
            headers={"cf-ray": "ray-9"},
        )
    )
    client = harness.client(http_client=None, max_retries=0)
    with pytest.raises(InsufficientCreditsError) as excinfo:
        harness.run(client.spend("dub", units=3, reference="job-9"))
    exc = excinfo.value
    assert (exc.cost_tokens, exc.balance, exc.request_id) == (9, 1, "ray-9")
    assert respx_mock.calls.call_count == 1
    assert json.loads(respx_mock.calls.last.request.content)["reference"] == "job-9"


# --- 2xx bodies that are not the documented shape ------------------------------------------


@pytest.mark.parametrize(
    ("endpoint", "body", "field"),
    [
        ("check", {**QUOTE, "cost_tokens": None}, "cost_tokens"),
        ("check", {"ok": True, "allowed": True}, "cost_tokens"),
        ("check", {**QUOTE, "allowed": "maybe"}, "allowed"),
        ("check", {**QUOTE, "ok": "yes please"}, "ok"),
        ("spend", {"ok": True, "charged": 5}, "balance_after"),
        ("spend", {**CHARGE, "charged": "five"}, "charged"),
        ("spend", {**CHARGE, "charged": 2.5}, "charged"),
    ],
)
def test_2xx_of_the_wrong_shape(
    harness: Harness, api: respx.Router, endpoint: str, body: dict[str, Any], field: str
) -> None:
    """Not retried: the server did answer, and a spend may already have charged."""
    queue(api[endpoint], httpx.Response(200, json=body))
    client = harness.client(api, max_retries=2)
    with pytest.raises(APIResponseValidationError) as excinfo:
        call(harness, client, endpoint)
    exc = excinfo.value
    assert api.calls.call_count == 1
    assert harness.sleeps == []
    assert isinstance(exc, AmaiError)
    assert not isinstance(exc, APIError)
    assert exc.status_code == 200
    assert field in str(exc)
    assert exc.body == body
    assert exc.response is not None


@pytest.mark.parametrize(
    ("content", "body"),
    [
        (b"<html>ok</html>", "<html>ok</html>"),
        (b"", ""),
        (b"[]", []),
        (b"null", None),
        (b"\xff\xfe", None),
    ],
)
@pytest.mark.parametrize("endpoint", ["check", "spend"])
def test_2xx_that_is_not_a_json_object(
    harness: Harness, api: respx.Router, endpoint: str, content: bytes, body: object
) -> None:
    queue(api[endpoint], httpx.Response(200, content=content, headers={"x-request-id": "r-1"}))
    client = harness.client(api, max_retries=2)
    with pytest.raises(APIResponseValidationError) as excinfo:
        call(harness, client, endpoint)
    exc = excinfo.value
    assert api.calls.call_count == 1
    assert exc.request_id == "r-1"
    assert "r-1" in str(exc)
    assert ("Quote" if endpoint == "check" else "Charge") in str(exc)
    if body is not None:
        assert exc.body == body


@pytest.mark.parametrize("endpoint", ["check", "spend"])
def test_2xx_with_ok_false_maps_by_error_string(
    harness: Harness, api: respx.Router, endpoint: str
) -> None:
    reply = error(200, "insufficient_credits", cost_tokens=5, balance=2)
    queue(api[endpoint], reply)
    client = harness.client(api, max_retries=2)
    with pytest.raises(InsufficientCreditsError) as excinfo:
        call(harness, client, endpoint)
    assert (excinfo.value.cost_tokens, excinfo.value.balance) == (5, 2)
    assert api.calls.call_count == 1


def test_2xx_valid_shape_but_ok_false_is_an_error(harness: Harness, api: respx.Router) -> None:
    """A body that fits Quote but says ok:false must not be returned as a quote."""
    queue(api["check"], httpx.Response(200, json={**QUOTE, "ok": False}))
    client = harness.client(api, max_retries=0)
    with pytest.raises(APIError) as excinfo:
        harness.run(client.check("chat"))
    assert excinfo.value.status_code == 200


# --- Redirects -------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [301, 302, 307, 308])
@pytest.mark.parametrize("endpoint", ["check", "spend"])
def test_redirect_is_not_followed(
    harness: Harness, api: respx.Router, status: int, endpoint: str
) -> None:
    # The caller's own httpx client asks to follow redirects; the SDK still must not, since
    # a redirected POST could drop the body or send the key to another host.
    location = "https://elsewhere.example/api/v1/tools/" + endpoint
    queue(api[endpoint], httpx.Response(status, headers={"location": location}))
    client = harness.client(
        http_client=harness.http_client(api, follow_redirects=True), max_retries=2
    )
    with pytest.raises(APIError) as excinfo:
        call(harness, client, endpoint)
    exc = excinfo.value
    assert type(exc) is APIError
    assert exc.status_code == status
    assert "redirect" in str(exc)
    assert location in str(exc)
    assert api.calls.call_count == 1
    assert harness.sleeps == []


def test_redirect_with_respx(harness: Harness, respx_mock: respx.MockRouter) -> None:
    respx_mock.post(CHECK_URL).mock(
        return_value=httpx.Response(301, headers={"location": "https://www.amaimedia.com/"})
    )
    client = harness.client(http_client=None)
    with pytest.raises(APIError, match="redirect") as excinfo:
        harness.run(client.check("chat"))
    assert excinfo.value.status_code == 301
    # respx_mock refuses unmocked URLs, so following the redirect would also fail loudly.
    assert respx_mock.calls.call_count == 1


# --- Extra fields ----------------------------------------------------------------------------


def test_extra_fields_are_kept(harness: Harness, api: respx.Router) -> None:
    queue(api["check"], httpx.Response(200, json={**QUOTE, "currency": "tokens", "tier": 2}))
    queue(api["spend"], httpx.Response(200, json={**CHARGE, "ledger_id": "l-1"}))
    client = harness.client(api)
    quote = harness.run(client.check("chat"))
    charge = harness.run(client.spend("chat", reference="job-1"))
    assert quote.cost_tokens == QUOTE["cost_tokens"]
    assert quote.model_extra == {"currency": "tokens", "tier": 2}
    assert charge.charged == CHARGE["charged"]
    assert charge.model_extra == {"ledger_id": "l-1"}
    assert charge.reference == "job-1"


def test_many_invalid_fields_are_summarized(harness: Harness, api: respx.Router) -> None:
    queue(api["check"], httpx.Response(200, json={"ok": "maybe", "unrelated": 1}))
    client = harness.client(api)
    with pytest.raises(APIResponseValidationError) as info:
        harness.run(client.check("chat"))
    # four fields are wrong or missing: three are named, the rest counted
    assert "and 1 more" in str(info.value)


def test_errors_survive_pickling_without_their_response(
    harness: Harness, api: respx.Router
) -> None:
    """Errors cross process boundaries (concurrent.futures) with their fields intact,
    but without the httpx response, whose request holds the Authorization header."""
    queue(
        api["spend"],
        error(402, "insufficient_credits", cost_tokens=7, balance=3, headers={"cf-ray": "r-9"}),
        error(429, "rate_limited", headers={"retry-after": "120"}),
        httpx.ConnectError("refused"),
    )
    client = harness.client(api, max_retries=0)
    raised = []
    for _ in range(3):
        with pytest.raises(AmaiError) as info:
            harness.run(client.spend("chat", reference="job-1"))
        raised.append(info.value)

    for original in raised:
        data = pickle.dumps(original)
        assert KEY.encode() not in data
        copy = pickle.loads(data)
        assert type(copy) is type(original)
        assert str(copy) == str(original)
        assert copy.args == original.args
        expected = {**vars(original)}
        if "response" in expected:
            expected["response"] = None
        assert vars(copy) == expected

    credits, limited, _ = (pickle.loads(pickle.dumps(e)) for e in raised)
    assert (credits.cost_tokens, credits.balance, credits.request_id) == (7, 3, "r-9")
    assert limited.retry_after == 120


# --- the reference travels with every spend error --------------------------------------


@pytest.mark.parametrize(
    "failure",
    [
        httpx.ConnectError("refused"),
        httpx.ReadTimeout("slow"),
        httpx.Response(200, json={"ok": True}),  # malformed: did it charge? replay to know
        httpx.Response(503, text="<html>busy</html>"),
        error(402, "insufficient_credits", cost_tokens=5, balance=2),
        error(401, "auth_required"),
    ],
    ids=["connect", "timeout", "malformed-2xx", "html-503", "402", "401"],
)
def test_a_failed_spend_names_its_reference_for_replay(
    harness: Harness, api: respx.Router, failure: Any
) -> None:
    """A spend with a generated reference and an unclear outcome must stay replayable."""

    def reply(request: httpx.Request) -> httpx.Response:
        if isinstance(failure, Exception):
            raise failure
        return httpx.Response(failure.status_code, content=failure.content)

    queue(api["spend"], reply)
    client = harness.client(api, max_retries=0)
    with pytest.raises(AmaiError) as info:
        harness.run(client.spend("dub", units=2))
    (sent,) = bodies(api["spend"].calls)
    assert info.value.reference == sent["reference"]
    assert f"reference={sent['reference']}" in str(info.value)

    charge = harness.run(client.spend("dub", units=2, reference=info.value.reference))
    assert bodies(api["spend"].calls)[1] == sent
    assert charge.reference == sent["reference"]


def test_check_errors_carry_no_reference(harness: Harness, api: respx.Router) -> None:
    queue(api["check"], error(402, "insufficient_credits"))
    with pytest.raises(InsufficientCreditsError) as info:
        harness.run(harness.client(api).check("chat"))
    assert info.value.reference is None
    assert "reference=" not in str(info.value)
