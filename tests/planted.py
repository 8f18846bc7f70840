"""A planted API key, and the checks that it never shows where a caller or a log could see it.

Shared by the in-process security tests (`tests/client/test_security.py`) and the ones over
a real socket (`tests/wire/test_security.py`).
"""

from __future__ import annotations

import traceback
from collections.abc import Callable
from typing import Any

import pytest

from amaimedia import AmaiError
from tests.conftest import Harness

# Module constants, never test-function locals: a local holding the secret would show up
# in the captured frames of every traceback and hide a real leak behind a false one.
SECRET = "amai_live_PLANTEDsecret0123456789XYZW"
# The part of the secret that the safe hint (`amai_live_…XYZW`) never shows: finding it
# anywhere also catches a partly masked or sliced key.
SECRET_CORE = "PLANTEDsecret0123456789"


def assert_secret_absent(text: str, where: str) -> None:
    assert SECRET not in text, f"the API key leaks in {where}"
    assert SECRET_CORE not in text, f"part of the API key leaks in {where}"


def leaking_frames(exc: BaseException) -> list[str]:
    """Every frame local, in `exc` and its causes, whose repr holds the secret."""
    found = []
    pending = [traceback.TracebackException.from_exception(exc, capture_locals=True)]
    seen: set[int] = set()
    while pending:
        te = pending.pop()
        if id(te) in seen:
            continue
        seen.add(id(te))
        for frame in te.stack:
            for name, value in (frame.locals or {}).items():
                if SECRET_CORE in value:
                    found.append(f"{frame.filename}:{frame.lineno} in {frame.name}: {name}")
        pending.extend(t for t in (te.__cause__, te.__context__) if t is not None)
    return found


def assert_exception_is_clean(exc: BaseException) -> None:
    name = type(exc).__name__
    assert_secret_absent(str(exc), f"str({name})")
    assert_secret_absent(repr(exc), f"repr({name})")
    assert_secret_absent(repr(exc.args), f"{name}.args")
    assert_secret_absent(repr(vars(exc)), f"vars({name})")
    assert_secret_absent(repr(getattr(exc, "body", None)), f"{name}.body")
    assert_secret_absent("".join(traceback.format_exception(exc)), f"traceback of {name}")
    captured = traceback.TracebackException.from_exception(exc, capture_locals=True)
    assert leaking_frames(exc) == [], f"frame locals of {name} hold the API key"
    assert_secret_absent("".join(captured.format()), f"traceback with locals of {name}")


def call(harness: Harness, method: Callable[[], Any]) -> BaseException:
    """Run a call that must fail, and return what it raised.

    Takes a callable: the sync client's call must happen inside `pytest.raises`.
    """
    with pytest.raises(AmaiError) as info:
        harness.run(method())
    return info.value
