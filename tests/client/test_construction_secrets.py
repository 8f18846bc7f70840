"""A client that cannot be built leaves no API key in the locals of its traceback.

Error trackers (Sentry, rich's `show_locals`, `traceback` with `capture_locals=True`) show
the local variables of every frame of a traceback, and Sentry's default scrubbing looks
for names like `api_key` only: a constructor that fails on a bad `base_url` while its
frame still holds the key, or a key from the environment in a local named `from_env`,
would hand the key to whoever reads the error. Each kind of construction failure is tried
on both clients; only the SDK's own frames are looked at (a test's own locals are not the
SDK's to clear).

On Python 3.10 and 3.11, capturing the locals calls the repr of each one, the half-built
client's and key's among them: a repr that raised there would make the traceback itself
fail and hide the real error (3.12 and later print `<local repr() failed>` instead).
"""

from __future__ import annotations

import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

import amaimedia
from amaimedia import AmaiClient, AsyncAmaiClient
from tests.planted import SECRET, SECRET_CORE, assert_exception_is_clean

Client = type[AmaiClient] | type[AsyncAmaiClient]
PACKAGE = str(Path(amaimedia.__file__).parent)
ANOTHER_KEY = "amai_live_another_key_0000"

# Each builds a client that must fail, with the planted key in the argument or in
# AMAI_API_KEY. The key is only ever read from the module constant, inside the lambda,
# so that the frames of this test hold it nowhere but in that argument.
BadBuild = Callable[[Client, pytest.MonkeyPatch, Path], Any]


def _browser(cls: Client, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Any:
    monkeypatch.setattr(sys, "platform", "emscripten")
    return cls(api_key=SECRET)


def _from_env(**options: Any) -> BadBuild:
    def build(cls: Client, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Any:
        monkeypatch.setenv("AMAI_API_KEY", SECRET)
        return cls(**options)

    return build


def _bad_env_key(suffix: str) -> BadBuild:
    def build(cls: Client, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Any:
        monkeypatch.setenv("AMAI_API_KEY", SECRET + suffix)
        return cls()

    return build


FAILURES: dict[str, BadBuild] = {
    "base_url plain http": lambda cls, mp, tmp: cls(SECRET, base_url="http://example.com"),
    "base_url type": lambda cls, mp, tmp: cls(SECRET, base_url=8080),
    "base_url with credentials": lambda cls, mp, tmp: cls(
        SECRET, base_url="https://u:p@example.com"
    ),
    "timeout negative": lambda cls, mp, tmp: cls(SECRET, timeout=-1),
    "timeout type": lambda cls, mp, tmp: cls(SECRET, timeout="30"),
    "max_retries": lambda cls, mp, tmp: cls(SECRET, max_retries=-1),
    "max_retry_after": lambda cls, mp, tmp: cls(SECRET, max_retry_after=-1),
    "total_timeout": lambda cls, mp, tmp: cls(SECRET, total_timeout=0),
    "journal is a directory": lambda cls, mp, tmp: cls(SECRET, spend_journal=tmp),
    "journal type": lambda cls, mp, tmp: cls(SECRET, spend_journal=3),
    "verify file missing": lambda cls, mp, tmp: cls(SECRET, verify=str(tmp / "no-ca.pem")),
    "proxy scheme": lambda cls, mp, tmp: cls(SECRET, proxy="ftp://proxy.example:21"),
    "http_client type": lambda cls, mp, tmp: cls(SECRET, http_client=3),
    "http_client and verify": lambda cls, mp, tmp: cls(
        SECRET,
        verify=False,
        http_client=httpx.AsyncClient() if cls is AsyncAmaiClient else httpx.Client(),
    ),
    "browser": _browser,
    "key with a newline": lambda cls, mp, tmp: cls(SECRET + "\n"),
    "key with a space": lambda cls, mp, tmp: cls(SECRET[:12] + " " + SECRET[12:]),
    "key not ascii": lambda cls, mp, tmp: cls(SECRET + "é"),
    "key as bytes": lambda cls, mp, tmp: cls(SECRET.encode()),
    "key from env, bad base_url": _from_env(base_url="http://example.com"),
    "key from env, bad journal": _from_env(spend_journal=3),
    "key from env with a newline": _bad_env_key("\n"),
    "key from env not ascii": _bad_env_key("é"),
    "with_options, bad base_url": lambda cls, mp, tmp: cls(ANOTHER_KEY).with_options(
        api_key=SECRET, base_url="http://example.com"
    ),
    "with_options, bad key": lambda cls, mp, tmp: cls(ANOTHER_KEY).with_options(
        api_key=SECRET + "\n"
    ),
}
ASYNC_ONLY: dict[str, BadBuild] = {
    "transport": lambda cls, mp, tmp: cls(SECRET, transport="curl"),
    "transport with http_client": lambda cls, mp, tmp: cls(
        SECRET, transport="aiohttp", http_client=httpx.AsyncClient()
    ),
}


def failure_of(
    build: BadBuild, cls: Client, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> BaseException:
    with pytest.raises(Exception) as info:  # noqa: PT011 - every kind is one case
        build(cls, monkeypatch, tmp_path)
    return info.value


def sdk_locals(exc: BaseException) -> list[tuple[str, str, str]]:
    """(frame, name, repr) of every local of every SDK frame in `exc` and its chain.

    Building the summary is itself part of the test: on Python 3.10 and 3.11 it raises
    if the repr of a local raises.
    """
    found = []
    pending = [traceback.TracebackException.from_exception(exc, capture_locals=True)]
    seen: set[int] = set()
    while pending:
        summary = pending.pop()
        if id(summary) in seen:
            continue
        seen.add(id(summary))
        for frame in summary.stack:
            if frame.filename.startswith(PACKAGE):
                where = f"{Path(frame.filename).name}:{frame.lineno} in {frame.name}"
                found += [(where, name, shown) for name, shown in (frame.locals or {}).items()]
        pending += [s for s in (summary.__cause__, summary.__context__) if s is not None]
    return found


@pytest.fixture(params=["sync", "async"])
def client_class(request: pytest.FixtureRequest) -> Client:
    return AsyncAmaiClient if request.param == "async" else AmaiClient


@pytest.mark.parametrize("kind", list(FAILURES))
def test_no_sdk_frame_of_a_failed_construction_holds_the_key(
    client_class: Client, kind: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    exc = failure_of(FAILURES[kind], client_class, monkeypatch, tmp_path)
    shown = sdk_locals(exc)
    assert shown, "the failure must come from the SDK's own frames"
    assert [(where, name) for where, name, text in shown if SECRET_CORE in text] == []


@pytest.mark.parametrize("kind", list(ASYNC_ONLY))
def test_nor_does_one_of_the_async_clients_own_checks(
    kind: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    exc = failure_of(ASYNC_ONLY[kind], AsyncAmaiClient, monkeypatch, tmp_path)
    shown = sdk_locals(exc)
    assert shown
    assert [(where, name) for where, name, text in shown if SECRET_CORE in text] == []


@pytest.mark.parametrize("kind", list(FAILURES))
def test_every_local_of_a_failed_construction_can_be_shown(
    client_class: Client, kind: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The half-built client and key among them: their reprs never raise."""
    exc = failure_of(FAILURES[kind], client_class, monkeypatch, tmp_path)
    failed = [(where, name) for where, name, text in sdk_locals(exc) if "repr() failed" in text]
    assert failed == []
    assert_exception_is_clean(exc)


@pytest.mark.parametrize(
    "kind", ["base_url plain http", "journal is a directory", "key with a newline"]
)
def test_the_half_built_objects_say_what_they_are(
    client_class: Client, kind: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    exc = failure_of(FAILURES[kind], client_class, monkeypatch, tmp_path)
    shown = {text for where, name, text in sdk_locals(exc) if name == "self"}
    name = client_class.__name__
    # The client has no configuration yet (a bad base_url, a bad key), or has one (a
    # journal that cannot be opened is the last step) and shows it with the key's hint.
    assert shown & {f"<{name}, not constructed>", "ApiKey(<not set>)"} or any(
        text.startswith(f"{name}(") and "amai_live_…XYZW" in text for text in shown
    ), shown
