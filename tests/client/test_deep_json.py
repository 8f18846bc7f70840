"""JSON nested too deep is refused before `json.loads` recurses into it.

On Python 3.10 and 3.11 the decoder's C recursion shares the interpreter's limit, so a
document nested 100,000 levels deep decodes with no stack left: a garbage collection in that
moment runs finalizers that fail with `RecursionError`, reported as unraisable exceptions
(seen as a flaky failure of the journal's malformed-row test). The probe below recreates
that moment on purpose: a collection after every allocation, each running a little Python.
"""

from __future__ import annotations

import gc
import json
import sys
from collections.abc import Callable, Iterator
from datetime import datetime, timezone

import httpx
import pytest

from amaimedia import _json
from amaimedia._journal._protocol import UnreadableEntry, read_entry
from amaimedia._response import (  # pyright: ignore[reportPrivateUsage]
    _decode_body,
    error_from_response,
)
from amaimedia.testing._app import _decode  # pyright: ignore[reportPrivateUsage]

DEEP = "[" * 100_000 + "]" * 100_000


def _descend(levels: int) -> int:
    return 0 if levels == 0 else 1 + _descend(levels - 1)


@pytest.fixture
def starved() -> Iterator[list[str]]:
    """What failed for want of stack while the garbage collector ran (empty is good)."""
    failures: list[str] = []

    def probe(phase: str, info: dict[str, int]) -> None:
        try:
            _descend(25)
        except RecursionError:
            failures.append(f"gc {phase}: RecursionError")

    def unraisable(event: sys.UnraisableHookArgs) -> None:
        failures.append(f"unraisable: {event.exc_type.__name__}")

    threshold = gc.get_threshold()
    hook = sys.unraisablehook
    gc.callbacks.append(probe)
    sys.unraisablehook = unraisable
    gc.set_threshold(1)
    try:
        yield failures
    finally:
        gc.set_threshold(*threshold)
        gc.callbacks.remove(probe)
        sys.unraisablehook = hook


def _journal_units(text: str) -> object:
    row = (1, "chat", text, "job-1", "t", 0, None, None, None)
    entry = read_entry(row, lambda _: datetime.now(timezone.utc))
    assert isinstance(entry, UnreadableEntry)
    return entry.problem


def _error_body(text: str) -> object:
    return _decode_body(httpx.Response(402, content=text.encode()))


def _fake_server_body(text: str) -> object:
    return _decode(text.encode())


@pytest.mark.parametrize(
    "decode",
    [_journal_units, _error_body, _fake_server_body],
    ids=["journal row", "error body", "fake server request"],
)
def test_a_deep_document_never_runs_the_stack_dry(
    decode: Callable[[str], object], starved: list[str]
) -> None:
    decode(DEEP)
    assert starved == []


def test_a_journal_row_nested_too_deep_says_so() -> None:
    problem = "ValueError: 'JSON nested deeper than 200 levels is not decoded'"
    assert _journal_units(DEEP) == problem


def test_an_error_body_nested_too_deep_is_kept_as_text() -> None:
    assert _error_body(DEEP) == DEEP


@pytest.mark.parametrize(
    ("body", "said"),
    [
        pytest.param(DEEP, "(the answer nests too deep to read)", id="deep JSON"),
        pytest.param("<html>[[[" + "{" * 300 + "</html>", "(the answer is not JSON)", id="a page"),
    ],
)
def test_an_error_says_what_its_unread_body_is(body: str, said: str) -> None:
    error = error_from_response(httpx.Response(502, content=body.encode()))
    assert said in str(error)
    assert error.body == body


def test_documents_up_to_the_limit_decode() -> None:
    at_limit = "[" * _json.MAX_DEPTH + "]" * _json.MAX_DEPTH
    assert _json.loads(at_limit) == _json.loads(at_limit.encode())
    with pytest.raises(ValueError, match="nested deeper than 200 levels"):
        _json.loads("[" + at_limit + "]")
    with pytest.raises(ValueError, match="nested deeper than 200 levels"):
        _json.loads(b"{" + b'"a":' + at_limit.encode() + b"}")


@pytest.mark.parametrize(
    "text",
    [
        '{"note": "' + "[" * 500 + '"}',
        '["\\"' + "{" * 500 + '"]',
        '["\\\\", "' + "[" * 500 + '"]',
        '[["' + "[" * 300 + '"], ["' + "{" * 300 + '"]]',
    ],
    ids=["in a string", "after an escaped quote", "after an escaped backslash", "two strings"],
)
def test_brackets_inside_strings_do_not_count(text: str) -> None:
    assert _json.loads(text) == json.loads(text)


def test_shallow_but_wide_documents_decode() -> None:
    wide = "[" + ",".join(["[[1]]"] * 10_000) + "]"
    assert len(_json.loads(wide)) == 10_000


def test_text_that_is_not_json_still_fails_as_json() -> None:
    with pytest.raises(ValueError, match="Expecting value"):
        _json.loads("not json")
    with pytest.raises(ValueError, match="Infinity"):
        _decode_constant("[Infinity]")


def _decode_constant(text: str) -> object:
    def refuse(name: str) -> object:
        raise ValueError(f"{name} is not JSON")

    return _json.loads(text, parse_constant=refuse)
