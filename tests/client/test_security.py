"""The API key stays secret, and never travels in clear or to a browser.

In process, over respx; what only shows on a real socket (httpx's own logs, a cut
connection) is in `tests/wire/test_security.py`.
"""

from __future__ import annotations

import asyncio
import pickle
import sys
import traceback
import types
from typing import Any

import httpx
import pytest
import respx

from amaimedia import (
    AmaiClient,
    AmaiError,
    APIError,
)
from tests.answers import KEY, error, queue, requests
from tests.conftest import Harness
from tests.planted import SECRET, assert_exception_is_clean, assert_secret_absent, call

# --- the planted secret ----------------------------------------------------------------


def test_client_reprs_hide_the_key(harness: Harness, api: respx.Router) -> None:
    client = harness.client(api, api_key=SECRET)
    shown = {
        "repr(client)": repr(client),
        "str(client)": str(client),
        "vars(client)": repr(vars(client)),
        "repr(with_options)": repr(client.with_options(timeout=5)),
        "repr(config)": repr(client._config),
        "repr(api_key)": repr(client._config.api_key),
        "str(api_key)": str(client._config.api_key),
    }
    for where, text in shown.items():
        assert_secret_absent(text, where)
    assert "amai_live_…XYZW" in repr(client)
    # The key planted is the key sent: the checks above are about a key really in use.
    harness.run(client.check("chat"))
    assert api.calls[0].request.headers["Authorization"] == f"Bearer {SECRET}"


def test_key_never_reaches_exceptions_over_mock_transport(
    harness: Harness, api: respx.Router
) -> None:
    """As in tests/wire/test_security.py, but in process over respx, for timeouts and
    errors that a loopback server cannot easily play."""
    queue(
        api["check"],
        httpx.ReadTimeout("slow"),
        error(402, "insufficient_credits", cost_tokens=5, balance=2),
        httpx.Response(200, json={"ok": True}),
        httpx.Response(500, text="<html>oops</html>"),
    )
    client = harness.client(api, api_key=SECRET, max_retries=0)
    raised = [call(harness, lambda: client.check("chat")) for _ in range(4)]
    assert api.calls.call_count == 4
    for exc in raised:
        assert_exception_is_clean(exc)


# --- invalid keys ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "error"),
    [
        ("amai_live_PLANTED secret0123456789XYZW", ValueError),
        ("amai_live_PLANTEDsecret0123456789XYZW\n", ValueError),
        ("amai_live_PLANTED\tsecret0123456789XYZW", ValueError),
        ("amai_live_PLANTEDsecret0123456789XYZé", ValueError),
        ("amai_live_PLANTEDsecret\x000123456789XYZW", ValueError),
        (b"amai_live_PLANTEDsecret0123456789XYZW", TypeError),
        (12345678901234567890, TypeError),
    ],
    ids=["space", "newline", "tab", "non-ascii", "nul", "bytes", "int"],
)
def test_invalid_key_is_refused_without_quoting_it(
    harness: Harness, api: respx.Router, key: object, error: type[Exception]
) -> None:
    with pytest.raises(error, match="api_key") as info:
        harness.client(api, api_key=key)
    for text in (
        str(info.value),
        repr(info.value),
        "".join(traceback.format_exception(info.value)),
    ):
        assert "PLANTED" not in text
        assert "1234567890" not in text
    assert api.calls.call_count == 0


def test_invalid_key_from_environment_is_refused_without_quoting_it(
    harness: Harness, api: respx.Router, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AMAI_API_KEY", SECRET + "\n")
    with pytest.raises(ValueError, match="api_key") as info:
        harness.client(api, api_key=None)
    assert_secret_absent(str(info.value), "the error for a bad AMAI_API_KEY")


def test_api_key_cannot_be_pickled(harness: Harness, api: respx.Router) -> None:
    client = harness.client(api, api_key=SECRET)
    with pytest.raises(TypeError, match="pickle") as info:
        pickle.dumps(client._config.api_key)
    assert_secret_absent(str(info.value), "the pickling error")
    with pytest.raises(TypeError):
        pickle.dumps(client._config)


# --- plain http ------------------------------------------------------------------------


def build_with_base_url(
    harness: Harness, api: respx.Router, monkeypatch: pytest.MonkeyPatch, source: str, url: str
) -> Any:
    if source == "argument":
        return harness.client(api, base_url=url)
    if source == "env":
        monkeypatch.setenv("AMAI_BASE_URL", url)
        return harness.client(api)
    return harness.client(api).with_options(base_url=url)


SOURCES = ["argument", "env", "with_options"]


@pytest.mark.parametrize("source", SOURCES)
@pytest.mark.parametrize(
    "url",
    [
        "http://api.amaimedia.com",
        "http://10.0.0.1",
        "http://example.com:8080",
        "http://localhost.example.com",
        "http://128.0.0.1",
        "http://[::2]:9000",
    ],
)
def test_plain_http_is_refused_off_loopback(
    harness: Harness, api: respx.Router, monkeypatch: pytest.MonkeyPatch, source: str, url: str
) -> None:
    with pytest.raises(ValueError, match="plain http"):
        build_with_base_url(harness, api, monkeypatch, source, url)
    assert api.calls.call_count == 0


@pytest.mark.parametrize("source", SOURCES)
@pytest.mark.parametrize(
    "url",
    [
        "http://localhost:8787",
        "http://LOCALHOST",
        "http://127.0.0.1",
        "http://127.5.6.7:1",
        "http://[::1]:9000",
        "https://api.amaimedia.com",
        "https://10.0.0.1",
        "https://example.com:8443/prefix",
    ],
)
def test_https_and_loopback_http_are_allowed(
    harness: Harness, api: respx.Router, monkeypatch: pytest.MonkeyPatch, source: str, url: str
) -> None:
    client = build_with_base_url(harness, api, monkeypatch, source, url)
    harness.run(client.check("chat"))
    assert client.base_url == httpx.URL(url)
    assert api.calls[0].request.url.host == httpx.URL(url).host
    assert api.calls[0].request.url.scheme == httpx.URL(url).scheme


@pytest.mark.parametrize("status", [301, 302, 307, 308])
@pytest.mark.parametrize("follow", [False, True], ids=["default", "caller-follows"])
def test_redirect_is_never_followed(
    harness: Harness, api: respx.Router, status: int, follow: bool
) -> None:
    queue(
        api["check"],
        httpx.Response(status, headers={"location": "http://evil.example/api/v1/tools/check"}),
    )
    # Even an httpx client configured by the caller to follow redirects must not.
    client = harness.client(api, http_client=harness.http_client(api, follow_redirects=follow))
    with pytest.raises(APIError) as info:
        harness.run(client.check("chat"))
    assert info.value.status_code == status
    assert "evil.example" in str(info.value)
    assert [r.url.host for r in requests(api.calls)] == ["api.amaimedia.com"]


# --- browsers --------------------------------------------------------------------------


def pretend_browser(monkeypatch: pytest.MonkeyPatch, how: str) -> None:
    if how == "emscripten":
        monkeypatch.setattr(sys, "platform", "emscripten")
    else:
        monkeypatch.setitem(sys.modules, "pyodide", types.ModuleType("pyodide"))


@pytest.mark.parametrize("how", ["emscripten", "pyodide"])
def test_browser_is_refused(
    harness: Harness, api: respx.Router, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    http = harness.http_client(api)
    pretend_browser(monkeypatch, how)
    with pytest.raises(AmaiError, match="browser"):
        harness.client(api, http_client=http)


@pytest.mark.parametrize("how", ["emscripten", "pyodide"])
def test_browser_allowed_when_asked(
    harness: Harness, api: respx.Router, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    http = harness.http_client(api)
    pretend_browser(monkeypatch, how)
    client = harness.client(api, http_client=http, dangerously_allow_browser=True)
    monkeypatch.undo()
    harness.run(client.check("chat"))
    assert api.calls[0].request.headers["Authorization"] == f"Bearer {KEY}"


def test_a_bad_key_from_the_environment_is_blamed_on_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AMAI_API_KEY", SECRET + "\r")
    with pytest.raises(ValueError, match="the api_key from AMAI_API_KEY contains whitespace"):
        AmaiClient()


def test_credentials_in_a_base_url_are_refused_without_quoting_them() -> None:
    with pytest.raises(ValueError, match="must not contain credentials") as info:
        AmaiClient(api_key=SECRET, base_url="ftp://user:hunter2@example.com")
    assert "hunter2" not in str(info.value)


def test_a_bad_base_url_from_the_environment_is_blamed_on_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AMAI_BASE_URL", "http://api.amaimedia.com")
    with pytest.raises(ValueError, match=r"the base_url from AMAI_BASE_URL .* plain http"):
        AmaiClient(api_key=SECRET)


@pytest.mark.parametrize(
    "interrupt", [KeyboardInterrupt(), SystemExit(3), asyncio.CancelledError()], ids=repr
)
def test_an_interrupt_in_the_transport_propagates_unchanged(
    harness: Harness, api: respx.Router, interrupt: BaseException
) -> None:
    """Not an SDK failure: never retried, never wrapped, the very same object."""
    sent: list[httpx.Request] = []

    def interrupted(request: httpx.Request) -> httpx.Response:
        sent.append(request)  # respx records no call that an interrupt ends
        raise interrupt

    queue(api["spend"], interrupted)
    client = harness.client(api)

    # Caught inside the coroutine: at the event loop's edge, Python 3.10 replaces a task's
    # CancelledError with a new one, which would hide what the SDK itself raised.
    async def spend_async() -> BaseException | None:
        try:
            await client.spend("chat")
        except BaseException as exc:
            return exc
        return None

    def spend_sync() -> BaseException | None:
        try:
            client.spend("chat")
        except BaseException as exc:
            return exc
        return None

    raised = harness.run(spend_async()) if harness.is_async else spend_sync()
    assert raised is interrupt
    assert len(sent) == 1
    assert harness.sleeps == []
