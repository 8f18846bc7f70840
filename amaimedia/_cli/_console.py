"""What the command prints: its output, its errors, and `--verbose` log lines."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
from collections.abc import Iterator
from typing import Final

from amaimedia._constants import ENV_API_KEY
from amaimedia._logging import install_stderr_handler, logger, remove_stderr_handler

__all__ = ["PROG", "Console", "blank_keys", "debug_logging"]

PROG: Final = "amaimedia"
_REDACTED: Final = "[API key]"
# Anything shaped like a key, up to the quote, bracket or punctuation around it in a
# message: another account's key, or one typed where an argument goes.
_KEY_SHAPE: Final = re.compile(r"amai_live_[^\s'\"`\\,;:()\[\]{}<>…]+")
# How a record's exception is written when a filter must blank it before the handler does.
_EXCEPTIONS: Final = logging.Formatter()


def blank_keys(text: str, key: str | None = None) -> str:
    """`text` with `key`, and anything shaped like an API key, replaced by `[API key]`."""
    if key:
        text = text.replace(key, _REDACTED)
    return _KEY_SHAPE.sub(_REDACTED, text)


class Console:
    """Writes the command's output with the key blanked out.

    The SDK never puts the key in a message; this guards against a server that echoes
    it back in an error message or an extra field.
    """

    def __init__(self, key: str) -> None:
        self._key = key

    def out(self, text: str) -> None:
        """One line on stdout."""
        print(text.replace(self._key, _REDACTED), flush=True)

    def err(self, text: str, *, label: str = "error") -> None:
        """One `amaimedia: <label>: <text>` line on stderr."""
        self.note(f"{label}: {text}")

    def note(self, text: str) -> None:
        """One `amaimedia: <text>` line on stderr, such as what a long run is doing."""
        print(blank_keys(f"{PROG}: {text}", self._key), file=sys.stderr, flush=True)

    @contextlib.contextmanager
    def key_kept_out_of_logs(self) -> Iterator[None]:
        """Blank the key out of the SDK's log records too, for as long as this lasts.

        For every command that calls the API: the SDK's log lines (`-v`, `AMAI_LOG`, or
        wherever a program that runs the command in-process sends them) quote the errors,
        and so whatever a server echoed.
        """
        with _blanking(_BlankKey(self._key)):
            yield

    @contextlib.contextmanager
    def sdk_warnings(self) -> Iterator[None]:
        """The SDK's warnings as `amaimedia: warning: ...` lines, when nothing else shows them.

        Only when no handler would take them (no `--verbose`, no `AMAI_LOG`, no logging
        set up by a program that runs the command in-process): then they would be printed
        bare, by logging's last resort.
        """
        if logger.hasHandlers():
            yield
            return
        handler = _WarningLines(self)
        logger.addHandler(handler)
        try:
            yield
        finally:
            logger.removeHandler(handler)


class _WarningLines(logging.Handler):
    """Writes the SDK's warnings and errors as the command's own stderr lines."""

    def __init__(self, console: Console) -> None:
        super().__init__(logging.WARNING)
        self._console = console

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._console.err(record.getMessage(), label=record.levelname.lower())
        except Exception:
            self.handleError(record)


class _BlankKey(logging.Filter):
    """Writes a record of the SDK's without the key, or anything shaped like one.

    The whole record: its message once formatted with its arguments, its exception and
    its stack, each turned into the text a handler would write, blanked.
    """

    def __init__(self, key: str | None) -> None:
        super().__init__()
        self._key = key

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
            broken = False
        except Exception:
            # logging would report the broken record with its arguments, quoted raw.
            message = f"{record.msg} (arguments that do not fit it: {record.args!r})"
            broken = True
        blanked = blank_keys(message, self._key)
        if broken or blanked != message:
            record.msg, record.args = blanked, None
        if record.exc_info and record.exc_info[0] is not None:
            record.exc_text = record.exc_text or _EXCEPTIONS.formatException(record.exc_info)
            record.exc_info = None
        if record.exc_text:
            record.exc_text = blank_keys(record.exc_text, self._key)
        if record.stack_info:
            record.stack_info = blank_keys(record.stack_info, self._key)
        return True


@contextlib.contextmanager
def _blanking(blank: _BlankKey) -> Iterator[None]:
    """`blank` on the SDK's logger and on each of its handlers, for as long as this lasts.

    On the logger, it blanks the records before any handler (the program's own, above
    it, included) sees them; on the handlers, the records of the loggers below it, which
    reach those handlers without passing the logger's filters.
    """
    handlers = list(logger.handlers)
    logger.addFilter(blank)
    for handler in handlers:
        handler.addFilter(blank)
    try:
        yield
    finally:
        logger.removeFilter(blank)
        for handler in handlers:
            handler.removeFilter(blank)


def fail(text: str) -> None:
    """An error line for a failure found before there is a key to redact."""
    print(f"{PROG}: error: {text}", file=sys.stderr)


@contextlib.contextmanager
def debug_logging(enabled: bool) -> Iterator[None]:
    """With `--verbose`, the SDK's DEBUG lines go to stderr for this run.

    They go through the SDK's own stderr handler, the one `AMAI_LOG` installs, so that
    with both each line is printed once. From the start, before the command has read a
    key, they are written without the key of `AMAI_API_KEY` or anything shaped like one.
    """
    if not enabled:
        yield
        return
    added = install_stderr_handler()
    level = logger.level
    logger.setLevel(logging.DEBUG)
    try:
        with _blanking(_BlankKey(os.environ.get(ENV_API_KEY))):
            yield
    finally:
        logger.setLevel(level)
        if added is not None:
            remove_stderr_handler(added)
