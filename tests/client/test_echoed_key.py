"""A key the server echoes back is never shown: `[API key]` stands in for it.

A server, or a proxy on the way, may quote the request in its error: its message, a field
of its body, its page of HTML, a header. Whatever the SDK makes of that answer (the
error's message, `str()`, `repr()`, notebook table, `error`, `body` and `request_id`,
the journal's `last_error`, the log lines) shows `[API key]` where the request's own key
was; only `response`, the `httpx.Response` itself, keeps the answer as it came (its
request carries the key in its `Authorization` header anyway).
"""

from __future__ import annotations

import json
import logging
import pickle
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx

from amaimedia import (
    APIConnectionError,
    APIError,
    APIResponseValidationError,
    Charge,
    Hooks,
    InsufficientCreditsError,
    Quote,
    ResponseEvent,
    ServerError,
    SpendFailedError,
)
from amaimedia._auth import ApiKey
from amaimedia._response import blank_echoes, error_from_response, unread_answer_error
from tests.answers import CHARGE, KEY, QUOTE, Reply, error, queue
from tests.conftest import Harness

SHOWN = "[API key]"


def everything_shown(exc: BaseException, *, pickled: bool = True) -> str:
    """All an error shows or carries that the SDK made, one text to search."""
    parts = [str(exc), repr(exc), exc.args[0], getattr(exc, "message", "")]
    parts += [repr(getattr(exc, name, None)) for name in ("error", "body", "request_id")]
    parts.append(exc._repr_html_())  # type: ignore[attr-defined]
    if pickled:  # what crosses a process boundary, too
        again = pickle.loads(pickle.dumps(exc))
        parts += [str(again), repr(again), repr(getattr(again, "body", None))]
    return "\n".join(parts)


def raised(harness: Harness, api: respx.Router, answer: Reply) -> BaseException:
    queue(api["spend"], answer)
    client = harness.client(api, max_retries=0)
    with pytest.raises(Exception) as caught:  # noqa: PT011 - each test says which
        harness.run(client.spend("chat", reference="job-1"))
    return caught.value


def test_a_message_that_echoes_the_key(harness: Harness, api: respx.Router) -> None:
    answer = error(503, "server_error", message=f"upstream refused {KEY} (Bearer {KEY})")
    exc = raised(harness, api, answer)

    assert isinstance(exc, ServerError)
    assert KEY not in everything_shown(exc)
    assert exc.message == f"upstream refused {SHOWN} (Bearer {SHOWN})"
    assert (
        str(exc)
        == f"503 server_error: upstream refused {SHOWN} (Bearer {SHOWN}) (reference=job-1)"
    )
    assert exc.body == {
        "ok": False,
        "error": "server_error",
        "message": f"upstream refused {SHOWN} (Bearer {SHOWN})",
    }
    # The answer itself is kept as it came.
    assert exc.response is not None
    assert KEY in exc.response.text


def test_an_error_string_that_echoes_the_key(harness: Harness, api: respx.Router) -> None:
    exc = raised(harness, api, error(400, f"bad_key_{KEY}", message="no"))
    assert isinstance(exc, APIError)
    assert KEY not in everything_shown(exc)
    assert exc.error == f"bad_key_{SHOWN}"


def test_a_body_that_echoes_it_anywhere(harness: Harness, api: respx.Router) -> None:
    answer = error(
        502,
        "server_error",
        request={"headers": {"authorization": f"Bearer {KEY}"}, "keys": [KEY, [KEY]]},
        **{KEY: "as a name"},
    )
    exc = raised(harness, api, answer)
    assert isinstance(exc, ServerError)
    assert KEY not in everything_shown(exc)
    assert isinstance(exc.body, dict)
    assert exc.body["request"] == {
        "headers": {"authorization": f"Bearer {SHOWN}"},
        "keys": [SHOWN, [SHOWN]],
    }
    assert exc.body[SHOWN] == "as a name"


def test_a_page_of_text_that_echoes_it(harness: Harness, api: respx.Router) -> None:
    page = f"<html><body>502 Bad Gateway: Authorization: Bearer {KEY}</body></html>"
    exc = raised(harness, api, httpx.Response(502, text=page))
    assert isinstance(exc, ServerError)
    assert KEY not in everything_shown(exc)
    assert exc.body == page.replace(KEY, SHOWN)


def test_a_refusal_of_credits_that_echoes_it(harness: Harness, api: respx.Router) -> None:
    answer = error(402, "insufficient_credits", message=f"{KEY} is broke", cost_tokens=5)
    exc = raised(harness, api, answer)
    assert isinstance(exc, InsufficientCreditsError)
    assert KEY not in everything_shown(exc)
    assert exc.message.startswith(f"{SHOWN} is broke")


def test_a_2xx_that_echoes_it(harness: Harness, api: respx.Router) -> None:
    exc = raised(harness, api, httpx.Response(200, json={"ok": True, "charged": KEY}))
    assert isinstance(exc, APIResponseValidationError)
    assert KEY not in everything_shown(exc)
    assert exc.body == {"ok": True, "charged": SHOWN}


def test_a_2xx_saying_ok_false_that_echoes_it(harness: Harness, api: respx.Router) -> None:
    body = {"ok": False, "error": "server_error", "message": f"key {KEY} refused"}
    exc = raised(harness, api, httpx.Response(200, json=body))
    assert isinstance(exc, APIError)
    assert KEY not in everything_shown(exc)
    assert exc.message == f"key {SHOWN} refused"


def results_shown(*results: Quote | Charge) -> str:
    """All a result shows or carries that the SDK made, one text to search."""
    parts: list[str] = []
    for result in results:
        parts += [repr(result), str(result), result._repr_html_()]
        parts += [json.dumps(result.model_dump()), repr(result.request_id)]
    return "\n".join(parts)


def test_a_success_that_echoes_it_holds_the_stand_in(
    harness: Harness, api: respx.Router, caplog: pytest.LogCaptureFixture
) -> None:
    """Failed before: the key was in the result's extra field, repr and request id."""
    echo = {"request": {"authorization": f"Bearer {KEY}"}, "note": f"for {KEY}"}
    headers = {"x-request-id": f"req-{KEY}"}
    queue(api["check"], httpx.Response(200, json={**QUOTE, **echo}, headers=headers))
    queue(api["spend"], httpx.Response(200, json={**CHARGE, **echo}, headers=headers))
    client = harness.client(api)
    with caplog.at_level(logging.DEBUG, logger="amaimedia"):
        quote = harness.run(client.check("chat"))
        charge = harness.run(client.spend("chat", reference="job-1"))
    assert KEY not in results_shown(quote, charge)
    assert quote.request_id == charge.request_id == f"req-{SHOWN}"
    assert (
        quote.model_extra
        == charge.model_extra
        == {
            "request": {"authorization": f"Bearer {SHOWN}"},
            "note": f"for {SHOWN}",
        }
    )
    assert (quote.cost_tokens, charge.charged, charge.reference) == (5, 5, "job-1")
    assert not [r for r in caplog.records if KEY in r.getMessage()]
    assert not [r for r in caplog.records if KEY in json.dumps(vars(r), default=str)]


def test_a_key_json_escapes_is_found_escaped() -> None:
    odd = 'amai_live_quote"and\\slash_0123'
    content = json.dumps({**QUOTE, "echo": odd}).encode()
    assert odd.encode() not in content  # only its escaped form is there
    blanked, request_id = blank_echoes(content, odd, ApiKey(odd))
    assert request_id == SHOWN
    assert json.loads(blanked)["echo"] == SHOWN


def test_a_success_that_echoes_nothing_is_parsed_as_it_came() -> None:
    content = json.dumps(QUOTE).encode()
    assert blank_echoes(content, "req-1", ApiKey(KEY)) == (content, "req-1")
    assert blank_echoes(content, None, None) == (content, None)


def test_hooks_and_raw_responses_read_the_stand_in(harness: Harness, api: respx.Router) -> None:
    headers = {"cf-ray": f"{KEY}-AMS"}
    queue(api["check"], httpx.Response(200, json=QUOTE, headers=headers))
    queue(api["check"], httpx.Response(200, json=QUOTE, headers=headers))
    seen: list[ResponseEvent] = []
    client = harness.client(api, hooks=Hooks(on_response=seen.append))
    raw = harness.run(client.with_raw_response.check("chat"))
    harness.run(client.check("chat"))
    assert raw.request_id == raw.parse().request_id == f"{SHOWN}-AMS"
    assert [event.request_id for event in seen] == [f"{SHOWN}-AMS"] * 2
    assert KEY not in repr(seen)
    assert raw.headers["cf-ray"] == f"{KEY}-AMS"  # the answer itself, as it came


def test_a_redirect_and_a_request_id_that_echo_it(harness: Harness, api: respx.Router) -> None:
    headers = {"location": f"https://elsewhere.example/?key={KEY}", "x-request-id": KEY}
    exc = raised(harness, api, httpx.Response(302, headers=headers))
    assert isinstance(exc, APIError)
    assert KEY not in everything_shown(exc)
    assert f"key={SHOWN}" in exc.message
    assert exc.request_id == SHOWN


def test_an_answer_refused_unread_that_echoes_it_in_a_header() -> None:
    request = httpx.Request(
        "POST", "https://api.example/x", headers={"authorization": f"Bearer {KEY}"}
    )
    for status in (200, 503):
        response = httpx.Response(status, headers={"cf-ray": KEY}, request=request)
        exc = unread_answer_error(response, "too large: 1 byte")
        assert KEY not in everything_shown(exc)
        assert exc.request_id == SHOWN


def test_only_the_requests_own_key_is_blanked() -> None:
    """Another text shaped like a key is not this request's secret: the server's to quote."""
    other = "amai_live_someone_else_0000000000"
    request = httpx.Request(
        "POST", "https://api.example/x", headers={"authorization": f"Bearer {KEY}"}
    )
    body = {"ok": False, "error": "server_error", "message": f"{other} and {KEY}"}
    exc = error_from_response(httpx.Response(503, json=body, request=request))
    assert exc.message == f"{other} and {SHOWN}"


def test_an_answer_without_a_request_maps_as_before() -> None:
    body = {"ok": False, "error": "server_error", "message": "plain"}
    exc = error_from_response(httpx.Response(503, json=body))
    assert exc.message == "plain"
    assert exc.body == body


def test_a_metered_spend_that_failed_for_good(
    harness: Harness, api: respx.Router, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The error, its cause, the journal's last_error and the SDK's warning: no key."""
    echo = error(503, "server_error", message=f"upstream refused {KEY}")
    queue(api["spend"], echo)
    client = harness.client(api, max_retries=0, spend_journal=tmp_path / "j.sqlite3")
    block = client.metered("dub", 2, reference="job-7")

    with caplog.at_level(logging.WARNING, logger="amaimedia"):
        meter = harness.run(block.__aenter__()) if harness.is_async else block.__enter__()
        assert meter.reference == "job-7"
        leave = block.__aexit__ if harness.is_async else block.__exit__
        with pytest.raises(SpendFailedError) as caught:
            harness.run(leave(None, None, None))

    failure = caught.value
    assert KEY not in everything_shown(failure)
    assert isinstance(failure.__cause__, ServerError)
    assert KEY not in everything_shown(failure.__cause__)
    [pending] = harness.run(client.pending_spends())
    assert pending.reference == "job-7"
    assert pending.last_error is not None
    assert KEY not in pending.last_error
    assert f"upstream refused {SHOWN}" in pending.last_error
    assert KEY not in (tmp_path / "j.sqlite3").read_bytes().decode("latin-1")

    [warning] = [r for r in caplog.records if r.getMessage().startswith("spend of")]
    assert warning.levelno == logging.WARNING
    assert KEY not in warning.getMessage()
    assert f"upstream refused {SHOWN}" in warning.getMessage()
    for record in caplog.records:
        assert KEY not in record.getMessage()
        assert KEY not in json.dumps(vars(record), default=str)


def test_a_plain_spend_that_failed_logs_no_key(
    harness: Harness, api: respx.Router, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG, logger="amaimedia"):
        exc = raised(harness, api, error(503, "server_error", message=f"refused {KEY}"))
    assert isinstance(exc, ServerError)
    shown: list[Any] = [record.getMessage() for record in caplog.records]
    assert any(text.startswith("spend of chat x1 failed") for text in shown)
    assert not [text for text in shown if KEY in text]


def _nested_error(depth: int) -> tuple[str, APIError]:
    request = httpx.Request(
        "POST", "https://api.example/x", headers={"authorization": f"Bearer {KEY}"}
    )
    text = (
        '{"ok": false, "error": "server_error", "trace": '
        + "[" * depth
        + f'"{KEY}"'
        + "]" * depth
        + "}"
    )
    return text, error_from_response(httpx.Response(503, content=text.encode(), request=request))


def test_a_body_nested_as_deep_as_the_decoder_takes_is_walked_too() -> None:
    text, exc = _nested_error(198)  # with the object around it, 199 levels: decoded
    # pickle cannot write a body this deep, whatever it holds.
    assert KEY not in everything_shown(exc, pickled=False)
    assert exc.error == "server_error"
    assert exc.body == json.loads(text.replace(KEY, SHOWN))


def test_a_body_nested_deeper_is_kept_as_text_without_the_key() -> None:
    text, exc = _nested_error(900)
    assert KEY not in everything_shown(exc, pickled=False)
    assert exc.error is None
    assert exc.body == text.replace(KEY, SHOWN)


def test_a_transport_failure_that_quotes_it(harness: Harness, api: respx.Router) -> None:
    """httpx and aiohttp quote some of what the peer sent in their messages."""
    exc = raised(harness, api, httpx.RemoteProtocolError(f"peer sent {KEY}"))
    assert isinstance(exc, APIConnectionError)
    assert KEY not in everything_shown(exc)
    assert f"peer sent {SHOWN}" in str(exc)
