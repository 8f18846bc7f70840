"""Client settings: where each comes from, what makes it valid; the public types.

In process, over the `api` respx router. `__all__` and the public module of each class are
checked in `tests/test_public_api.py`.
"""

from __future__ import annotations

import asyncio
import importlib.resources
import importlib.util
import inspect
import logging
import math
import pickle
import platform
from collections.abc import Iterator
from pathlib import Path
from typing import Any, get_args

import httpx
import pytest
import respx

import amaimedia
import amaimedia._logging as sdk_logging
from amaimedia import NOT_GIVEN, AmaiClient, AmaiError, ErrorCode, NotGiven, ToolName
from tests.answers import KEY, QUOTE, error, queue, requests
from tests.conftest import Harness

ROOT = Path(__file__).resolve().parents[2]
OTHER_KEY = "amai_live_other_0123456789abcdefQRST"
CHECK_URL = "https://api.amaimedia.com/api/v1/tools/check"


def close(harness: Harness, client: Any) -> None:
    harness.run(client.aclose() if harness.is_async else client.close())


# --- API key ---------------------------------------------------------------------------


def test_api_key_from_argument(harness: Harness, api: respx.Router) -> None:
    harness.run(harness.client(api, api_key=OTHER_KEY).check("chat"))
    assert api.calls[0].request.headers["Authorization"] == f"Bearer {OTHER_KEY}"


def test_api_key_from_environment(
    harness: Harness, api: respx.Router, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AMAI_API_KEY", OTHER_KEY)
    harness.run(harness.client(api, api_key=None).check("chat"))
    assert api.calls[0].request.headers["Authorization"] == f"Bearer {OTHER_KEY}"


def test_api_key_argument_wins_over_environment(
    harness: Harness, api: respx.Router, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AMAI_API_KEY", OTHER_KEY)
    harness.run(harness.client(api, api_key=KEY).check("chat"))
    assert api.calls[0].request.headers["Authorization"] == f"Bearer {KEY}"


@pytest.mark.parametrize("env_value", [None, ""], ids=["unset", "empty"])
def test_missing_api_key_names_the_variable(
    harness: Harness, api: respx.Router, monkeypatch: pytest.MonkeyPatch, env_value: str | None
) -> None:
    if env_value is not None:
        monkeypatch.setenv("AMAI_API_KEY", env_value)
    with pytest.raises(AmaiError, match="AMAI_API_KEY"):
        harness.client(api, api_key=None)
    assert api.calls.call_count == 0


# --- base URL --------------------------------------------------------------------------


def test_default_base_url(harness: Harness, api: respx.Router) -> None:
    client = harness.client(api)
    harness.run(client.check("chat"))
    assert client.base_url == httpx.URL("https://api.amaimedia.com")
    assert str(api.calls[0].request.url) == CHECK_URL


def test_base_url_from_environment(
    harness: Harness, api: respx.Router, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AMAI_BASE_URL", "https://staging.example")
    client = harness.client(api)
    harness.run(client.check("chat"))
    assert client.base_url == httpx.URL("https://staging.example")
    assert str(api.calls[0].request.url) == "https://staging.example/api/v1/tools/check"


def test_base_url_argument_wins_over_environment(
    harness: Harness, api: respx.Router, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AMAI_BASE_URL", "https://staging.example")
    client = harness.client(api, base_url="https://eu.example")
    harness.run(client.check("chat"))
    assert client.base_url == httpx.URL("https://eu.example")
    assert api.calls[0].request.url.host == "eu.example"


@pytest.mark.parametrize(
    ("base_url", "expected"),
    [
        ("https://api.amaimedia.com/", CHECK_URL),
        ("https://proxy.example/amai/", "https://proxy.example/amai/api/v1/tools/check"),
        ("https://proxy.example/amai", "https://proxy.example/amai/api/v1/tools/check"),
        (
            httpx.URL("https://proxy.example/amai/"),
            "https://proxy.example/amai/api/v1/tools/check",
        ),
    ],
)
def test_base_url_slash_and_path_prefix(
    harness: Harness, api: respx.Router, base_url: str | httpx.URL, expected: str
) -> None:
    harness.run(harness.client(api, base_url=base_url).check("chat"))
    assert str(api.calls[0].request.url) == expected


# --- invalid settings ------------------------------------------------------------------

INVALID_SETTINGS = [
    ("base_url", "ftp://x", ValueError),
    ("base_url", "not a url", ValueError),
    ("base_url", "https://user:pw@host", ValueError),
    ("base_url", "https://api.amaimedia.com/?region=eu", ValueError),
    ("base_url", 42, TypeError),
    ("timeout", -1, ValueError),
    ("timeout", 0, ValueError),
    ("timeout", math.inf, ValueError),
    ("timeout", "3", TypeError),
    ("timeout", True, TypeError),
    ("max_retries", -1, ValueError),
    ("max_retries", 1.5, TypeError),
    ("max_retries", True, TypeError),
    ("max_retry_after", -1, ValueError),
    ("max_retry_after", math.nan, ValueError),
    ("max_retry_after", "x", TypeError),
]


@pytest.mark.parametrize(("setting", "value", "error"), INVALID_SETTINGS)
def test_invalid_setting_is_refused_and_named(
    harness: Harness, api: respx.Router, setting: str, value: object, error: type[Exception]
) -> None:
    with pytest.raises(error, match=setting):
        harness.client(api, **{setting: value})


@pytest.mark.parametrize(("setting", "value", "error"), INVALID_SETTINGS)
def test_invalid_setting_in_with_options_is_refused_and_named(
    harness: Harness, api: respx.Router, setting: str, value: object, error: type[Exception]
) -> None:
    client = harness.client(api)
    with pytest.raises(error, match=setting):
        client.with_options(**{setting: value})
    # The original is untouched by the failed copy.
    assert client.max_retries == 2
    assert client.base_url == httpx.URL("https://api.amaimedia.com")


def test_http_client_of_the_wrong_kind(harness: Harness) -> None:
    wrong: httpx.Client | httpx.AsyncClient = (
        httpx.Client() if harness.is_async else httpx.AsyncClient()
    )
    try:
        with pytest.raises(TypeError, match="http_client"):
            harness.client_class(api_key=KEY, http_client=wrong)
    finally:
        if isinstance(wrong, httpx.Client):
            wrong.close()
        else:
            asyncio.run(wrong.aclose())


# --- timeout ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("timeout", "expected"),
    [
        (5.0, {"connect": 5.0, "read": 5.0, "write": 5.0, "pool": 5.0}),
        (2, {"connect": 2, "read": 2, "write": 2, "pool": 2}),
        (None, {"connect": None, "read": None, "write": None, "pool": None}),
        (
            httpx.Timeout(10.0, connect=1.5),
            {"connect": 1.5, "read": 10.0, "write": 10.0, "pool": 10.0},
        ),
    ],
    ids=["float", "int", "none", "httpx.Timeout"],
)
def test_timeout_is_applied_to_each_request(
    harness: Harness, api: respx.Router, timeout: Any, expected: dict[str, float | None]
) -> None:
    # The caller's httpx client has its own timeout; the SDK's setting must win.
    http = harness.http_client(api, timeout=99.0)
    client = harness.client(api, http_client=http, timeout=timeout)
    harness.run(client.check("chat"))
    harness.run(client.spend("chat"))
    assert [r.extensions["timeout"] for r in requests(api.calls)] == [expected, expected]
    if isinstance(timeout, httpx.Timeout):
        assert client.timeout is timeout


# --- with_options ----------------------------------------------------------------------


def test_with_options_changes_one_setting_and_keeps_the_rest(
    harness: Harness, api: respx.Router
) -> None:
    client = harness.client(
        api, base_url="https://eu.example", timeout=7.0, max_retries=4, max_retry_after=9
    )
    copy = client.with_options(max_retries=0)
    assert type(copy) is type(client)
    assert copy is not client
    assert copy._http is client._http
    assert (copy.max_retries, client.max_retries) == (0, 4)
    assert copy.base_url == client.base_url == httpx.URL("https://eu.example")
    assert copy.timeout == client.timeout == httpx.Timeout(7.0)
    assert copy.max_retry_after == client.max_retry_after == 9.0

    harness.run(copy.with_options(api_key=OTHER_KEY).check("chat"))
    harness.run(copy.check("chat"))
    assert [r.headers["Authorization"] for r in requests(api.calls)] == [
        f"Bearer {OTHER_KEY}",
        f"Bearer {KEY}",
    ]
    assert all(r.url.host == "eu.example" for r in requests(api.calls))


def test_with_options_none_turns_timeout_off_but_not_given_keeps_it(
    harness: Harness, api: respx.Router
) -> None:
    client = harness.client(api, timeout=3.0)
    kept = client.with_options()
    off = client.with_options(timeout=None)
    assert kept.timeout == httpx.Timeout(3.0)
    assert off.timeout == httpx.Timeout(None)
    harness.run(kept.check("chat"))
    harness.run(off.check("chat"))
    assert api.calls[0].request.extensions["timeout"]["read"] == 3.0
    assert api.calls[1].request.extensions["timeout"]["read"] is None


def test_closing_a_copy_leaves_the_original_usable(
    harness: Harness, respx_mock: respx.MockRouter
) -> None:
    route = respx_mock.post(CHECK_URL).mock(return_value=httpx.Response(200, json=QUOTE))
    client = harness.client(http_client=None)
    copy = client.with_options(timeout=5)
    close(harness, copy)
    assert not client.is_closed
    assert harness.run(client.check("chat")).cost_tokens == QUOTE["cost_tokens"]
    assert route.call_count == 1


def test_closing_the_original_closes_the_shared_pool(
    harness: Harness, respx_mock: respx.MockRouter
) -> None:
    route = respx_mock.post(CHECK_URL)
    client = harness.client(http_client=None)
    copy = client.with_options(max_retries=0)
    close(harness, client)
    assert client.is_closed
    assert copy.is_closed
    with pytest.raises(AmaiError, match="closed"):
        harness.run(copy.check("chat"))
    assert route.call_count == 0


# --- closing ---------------------------------------------------------------------------


def test_closed_client_raises_without_sending(
    harness: Harness, respx_mock: respx.MockRouter
) -> None:
    route = respx_mock.post(CHECK_URL)
    client = harness.client(http_client=None)
    close(harness, client)
    with pytest.raises(AmaiError, match="closed") as info:
        harness.run(client.check("chat"))
    assert harness.client_class.__name__ in str(info.value)
    with pytest.raises(AmaiError, match="closed"):
        harness.run(client.spend("chat", reference="job-1"))
    assert route.call_count == 0


def test_client_on_a_closed_http_client_raises_without_sending(
    harness: Harness, api: respx.Router
) -> None:
    http = harness.http_client(api)
    client = harness.client(api, http_client=http)
    harness.run(http.aclose() if harness.is_async else http.close())
    assert client.is_closed
    with pytest.raises(AmaiError, match="closed"):
        harness.run(client.spend("chat"))
    assert api.calls.call_count == 0


def test_context_manager_closes_the_owned_pool(harness: Harness) -> None:
    client = harness.client(http_client=None)
    if harness.is_async:

        async def use() -> Any:
            async with client as entered:
                assert not entered.is_closed
                return entered

        entered = harness.run(use())
    else:
        with client as entered:
            assert not entered.is_closed
    assert entered is client
    assert client.is_closed


def test_context_manager_leaves_the_callers_pool_open(harness: Harness, api: respx.Router) -> None:
    http = harness.http_client(api)
    client = harness.client(api, http_client=http)
    if harness.is_async:

        async def use() -> None:
            async with client:
                pass

        harness.run(use())
    else:
        with client:
            pass
    assert not http.is_closed


# --- headers ---------------------------------------------------------------------------


def test_headers_on_every_request(harness: Harness, api: respx.Router) -> None:
    queue(api["spend"], error(503), error(429, "rate_limited", headers={"retry-after": "0"}))
    client = harness.client(api)
    harness.run(client.check("chat"))
    harness.run(client.spend("chat"))
    expected_agent = (
        f"amaimedia-python/{amaimedia.__version__} "
        f"(Python {platform.python_version()}; {platform.system()})"
    )
    assert api.calls.call_count == 4  # check, then a spend retried twice
    for request in requests(api.calls):
        assert request.headers["User-Agent"] == expected_agent
        assert request.headers["Accept"] == "application/json"
        assert request.headers["Content-Type"] == "application/json"
        assert request.headers["Authorization"] == f"Bearer {KEY}"


# --- AMAI_LOG --------------------------------------------------------------------------


@pytest.fixture
def sdk_logger() -> Iterator[logging.Logger]:
    """The `amaimedia` logger, restored afterwards so AMAI_LOG tests leave no trace."""
    logger = logging.getLogger("amaimedia")
    if sdk_logging._handler is not None:  # left over by an earlier test
        logger.removeHandler(sdk_logging._handler)
        sdk_logging._handler = None
    level, handlers = logger.level, list(logger.handlers)
    yield logger
    for handler in list(logger.handlers):
        if handler not in handlers:
            logger.removeHandler(handler)
            handler.close()
    logger.setLevel(level)
    sdk_logging._handler = None


@pytest.mark.parametrize(
    ("value", "level"), [("debug", logging.DEBUG), ("info", logging.INFO), ("DEBUG", 10)]
)
def test_amai_log_adds_one_handler(
    harness: Harness,
    monkeypatch: pytest.MonkeyPatch,
    sdk_logger: logging.Logger,
    value: str,
    level: int,
) -> None:
    before = list(sdk_logger.handlers)
    monkeypatch.setenv("AMAI_LOG", value)
    for _ in range(3):
        harness.client()
    added = [h for h in sdk_logger.handlers if h not in before]
    assert len(added) == 1
    assert sdk_logger.level == level


@pytest.mark.parametrize("value", [None, ""], ids=["unset", "empty"])
def test_without_amai_log_no_handler_is_added(
    harness: Harness,
    monkeypatch: pytest.MonkeyPatch,
    sdk_logger: logging.Logger,
    value: str | None,
) -> None:
    if value is not None:
        monkeypatch.setenv("AMAI_LOG", value)
    before, level = list(sdk_logger.handlers), sdk_logger.level
    harness.client()
    assert sdk_logger.handlers == before
    assert sdk_logger.level == level


# --- types, the sentinel, the generated sync client ------------------------------------


def test_literal_aliases_match_the_api_doc() -> None:
    tools = get_args(ToolName)
    assert len(tools) == 8
    assert set(tools) == {
        "chat",
        "image",
        "voice_clone",
        "dub",
        "music",
        "sfx",
        "speech2text",
        "translate",
    }
    assert sorted(get_args(ErrorCode)) == sorted(
        ["auth_required", "insufficient_credits", "forbidden", "rate_limited"]
    )


def test_not_given_sentinel() -> None:
    assert not NOT_GIVEN
    assert bool(NOT_GIVEN) is False
    assert NotGiven() is NOT_GIVEN
    assert repr(NOT_GIVEN) == "NOT_GIVEN"
    assert pickle.loads(pickle.dumps(NOT_GIVEN)) is NOT_GIVEN


def test_sync_client_is_generated_from_the_async_one() -> None:
    spec = importlib.util.spec_from_file_location("_unasync", ROOT / "scripts" / "unasync.py")
    assert spec is not None
    assert spec.loader is not None
    unasync = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(unasync)
    for source, target in unasync.PAIRS:
        generated = target.read_text()
        wanted = unasync.unasync(source.read_text(), source.name)
        assert wanted == generated, "run: python scripts/unasync.py"
    assert len(unasync.PAIRS) == 2
    # The installed module is the file in this repo, not a stale copy elsewhere.
    assert Path(inspect.getfile(amaimedia._client)).resolve() == ROOT / "amaimedia" / "_client.py"


def test_an_empty_api_key_argument_is_refused() -> None:
    with pytest.raises(ValueError, match="api_key is empty"):
        AmaiClient(api_key="")


def test_a_short_key_shows_nothing_of_itself() -> None:
    client = AmaiClient(api_key="amai_live_ab12")
    assert "ab12" not in repr(client)
    assert "api_key='…'" in repr(client)
    client.close()


def test_a_base_url_httpx_cannot_parse_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="base_url is not a valid URL"):
        AmaiClient(api_key=KEY, base_url="https://host:not-a-port")
