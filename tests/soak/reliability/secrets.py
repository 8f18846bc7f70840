"""The planted-secret check: no piece of any API key in anything the SDK let out.

Keys are searched for by every 12-character window of their secret part, so a key that
was sliced, partly masked or wrapped in other text is caught as surely as a whole one.
"""

from __future__ import annotations

import logging
import re
import traceback
from collections.abc import Iterable, Iterator
from typing import Final

from amaimedia._auth import KEY_PREFIX

__all__ = ["SecretScanner", "exception_texts", "record_texts"]

_WINDOW: Final = 12
_TOKEN: Final = re.compile(rf"[A-Za-z0-9_\-]{{{_WINDOW},}}")


class SecretScanner:
    """Finds any 12-character piece of the keys' secret parts in a text."""

    def __init__(self, keys: Iterable[str]) -> None:
        self._windows: set[str] = set()
        for key in keys:
            # What the safe hint shows (`amai_live_…WXYZ`) is no secret; the rest is.
            secret = key.removeprefix(KEY_PREFIX)[:-4]
            assert len(secret) >= _WINDOW, "a planted key must be long enough to look for"
            self._windows.update(secret[n : n + _WINDOW] for n in range(len(secret) - 11))

    def leaks(self, text: str) -> bool:
        for token in _TOKEN.findall(text):
            for n in range(len(token) - _WINDOW + 1):
                if token[n : n + _WINDOW] in self._windows:
                    return True
        return False

    def leaking(self, texts: Iterable[tuple[str, str]]) -> list[str]:
        """The `where` of every `(where, text)` whose text holds a piece of a key."""
        return [where for where, text in texts if self.leaks(text)]


def exception_texts(exc: BaseException, *, with_locals: bool = False) -> Iterator[tuple[str, str]]:
    """Everything an exception shows: str, repr, args, attributes, body, the traceback
    with its chained causes, and (with `with_locals`) every frame's locals, as
    `traceback` would print them with `capture_locals=True`."""
    name = type(exc).__name__
    yield f"str({name})", str(exc)
    yield f"repr({name})", repr(exc)
    yield f"{name}.args", repr(exc.args)
    yield f"vars({name})", repr(vars(exc))
    yield f"{name}.body", repr(getattr(exc, "body", None))
    yield f"traceback of {name}", "".join(traceback.format_exception(exc))
    if with_locals:
        captured = traceback.TracebackException.from_exception(exc, capture_locals=True)
        yield f"traceback with locals of {name}", "".join(captured.format())
    cause = exc.__cause__ or exc.__context__
    if cause is not None:
        yield from ((f"{where} (cause of {name})", text) for where, text in exception_texts(cause))


def record_texts(records: Iterable[logging.LogRecord]) -> Iterator[tuple[str, str]]:
    """Each log record as a handler would write it, and its raw arguments."""
    formatter = logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s")
    for record in records:
        where = f"log record {record.name}:{record.lineno}"
        yield where, formatter.format(record)
        yield f"args of {where}", repr(record.args)
