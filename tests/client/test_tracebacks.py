"""Transport failures lose the frames that hold the API key, and only those.

Over a real socket (a write that stalls while httpcore holds the raw headers) in
`tests/wire/test_security.py`; here the rules, on failures raised through frames built
to hold the key.
"""

from __future__ import annotations

import sys
import traceback
from typing import Literal, TypeVar

import httpx
import pytest

from amaimedia._response import connection_error, dead_loop_error
from amaimedia._tracebacks import forget_frames_holding
from tests.planted import SECRET, assert_exception_is_clean, leaking_frames

URL = "https://api.amaimedia.com/api/v1/tools/check"
ANOTHER_KEY = "amai_live_someone_elses_key_0000"
KEY = "the API key"
_E = TypeVar("_E", bound=BaseException)


def signed_request() -> httpx.Request:
    return httpx.Request("POST", URL, headers={"Authorization": f"Bearer {SECRET}"})


def names(exc: BaseException) -> list[str]:
    return [frame.name for frame in traceback.extract_tb(exc.__traceback__)]


def notes(exc: BaseException) -> list[str]:
    return list(getattr(exc, "__notes__", []))


def raised(failure: _E, key: Literal["planted", "another"]) -> _E:
    """`failure`, raised through `outer` -> `writing` -> `inner` and caught here; only
    `writing` holds a key in its locals, the raw headers of a request signed with it."""

    def inner() -> None:
        raise failure

    def writing(headers: list[tuple[bytes, bytes]]) -> None:
        inner()

    def outer() -> None:
        writing(_raw_headers(key))

    try:
        outer()
    except type(failure) as exc:
        return exc
    raise AssertionError("outer() returned")


def _raw_headers(key: str) -> list[tuple[bytes, bytes]]:
    # The key comes from module constants, never from a local of the frames above.
    secret = SECRET if key == "planted" else ANOTHER_KEY
    return [(b"authorization", f"Bearer {secret}".encode())]


def test_only_the_frames_that_hold_the_key_are_cut() -> None:
    exc = raised(httpx.WriteTimeout("timed out"), "planted")
    assert leaking_frames(exc) != [], "the frame built to hold the key must hold it"

    assert forget_frames_holding(exc, [SECRET], KEY) == 1
    assert names(exc) == ["raised", "outer", "inner"]
    assert leaking_frames(exc) == []
    if sys.version_info >= (3, 11):
        assert notes(exc) == [
            "amaimedia: 1 frame(s) whose local variables held the API key are left out "
            "of this traceback"
        ]


def test_a_failure_that_holds_no_key_keeps_its_whole_traceback() -> None:
    exc = raised(httpx.WriteTimeout("timed out"), "another")
    assert forget_frames_holding(exc, [SECRET], KEY) == 0
    assert names(exc) == ["raised", "outer", "writing", "inner"]
    assert notes(exc) == []


def test_the_first_frame_can_be_cut_too() -> None:
    def holding_first(authorization: str) -> Exception:
        try:
            raise httpx.ReadError("reset")
        except httpx.ReadError as exc:
            return exc

    exc = holding_first(f"Bearer {SECRET}")
    assert forget_frames_holding(exc, [SECRET], KEY) == 1
    assert exc.__traceback__ is None


def test_causes_and_contexts_are_cut_through_the_whole_chain() -> None:
    below = raised(OSError(32, "Broken pipe"), "planted")
    middle = raised(httpx.WriteError("broken pipe"), "planted")
    middle.__context__ = below
    top = httpx.WriteError("mapped")
    top.__cause__ = middle

    assert forget_frames_holding(top, [SECRET], KEY) == 2
    assert leaking_frames(top) == []
    assert [names(middle), names(below)] == [["raised", "outer", "inner"]] * 2


def test_a_chain_that_loops_back_ends() -> None:
    first = raised(httpx.WriteError("one"), "planted")
    second = raised(httpx.WriteError("two"), "planted")
    first.__context__, second.__context__ = second, first
    assert forget_frames_holding(first, [SECRET], KEY) == 2


def test_a_local_that_cannot_be_shown_counts_as_holding_the_key() -> None:
    class Unprintable:
        def __repr__(self) -> str:
            raise RuntimeError("no repr")

    def with_unprintable(value: Unprintable) -> Exception:
        try:
            raise httpx.WriteError("broken pipe")
        except httpx.WriteError as exc:
            return exc

    exc = with_unprintable(Unprintable())
    assert forget_frames_holding(exc, [SECRET], KEY) == 1


def test_connection_errors_cut_the_frames_that_hold_the_requests_key() -> None:
    failure = raised(httpx.WriteTimeout("timed out"), "planted")
    wrapped = connection_error(failure, signed_request())
    wrapped.__cause__ = failure
    assert names(failure) == ["raised", "outer", "inner"]
    assert_exception_is_clean(wrapped)


def test_a_request_without_a_bearer_key_loses_no_frames() -> None:
    failure = raised(httpx.WriteTimeout("timed out"), "planted")
    connection_error(failure, httpx.Request("POST", URL))
    assert names(failure) == ["raised", "outer", "writing", "inner"]


def test_dead_loop_errors_cut_them_too() -> None:
    failure = raised(RuntimeError("Event loop is closed"), "planted")
    wrapped = dead_loop_error(failure, signed_request())
    wrapped.__cause__ = failure
    assert_exception_is_clean(wrapped)


@pytest.mark.parametrize("scheme", ["Basic", "bearer"])
def test_only_a_bearer_credential_is_looked_for(scheme: str) -> None:
    failure = raised(httpx.WriteTimeout("timed out"), "planted")
    request = httpx.Request("POST", URL, headers={"Authorization": f"{scheme} {SECRET}"})
    connection_error(failure, request)
    cut = scheme == "bearer"  # the scheme is case-insensitive (RFC 9110)
    assert ("writing" in names(failure)) is not cut


def test_any_of_several_secrets_is_looked_for_and_empty_ones_never() -> None:
    exc = raised(httpx.WriteTimeout("timed out"), "planted")
    assert forget_frames_holding(exc, ["", ""], KEY) == 0  # "" is in every text
    assert names(exc) == ["raised", "outer", "writing", "inner"]
    assert forget_frames_holding(exc, ["not-in-any-frame", SECRET[-20:]], KEY) == 1
    assert names(exc) == ["raised", "outer", "inner"]
