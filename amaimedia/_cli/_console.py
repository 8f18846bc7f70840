"""What the command prints: its output, its errors, and `--verbose` log lines."""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator
from typing import Final

from amaimedia._logging import install_stderr_handler, logger, remove_stderr_handler

__all__ = ["PROG", "Console", "debug_logging"]

PROG: Final = "amaimedia"
_REDACTED: Final = "[API key]"


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
        print(f"{PROG}: {text}".replace(self._key, _REDACTED), file=sys.stderr, flush=True)

    @contextlib.contextmanager
    def key_kept_out_of_logs(self) -> Iterator[None]:
        """Blank the key out of the SDK's log records too, for as long as this lasts.

        For a command that runs long and lets the SDK log its warnings (which quote the
        errors, and so whatever a server echoed) wherever logging sends them.
        """
        blank = _BlankKey(self._key)
        logger.addFilter(blank)
        try:
            yield
        finally:
            logger.removeFilter(blank)

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
    """A filter of the `amaimedia` logger that writes its records without the key."""

    def __init__(self, key: str) -> None:
        super().__init__()
        self._key = key

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if self._key in message:
            record.msg = message.replace(self._key, _REDACTED)
            record.args = None
        return True


def fail(text: str) -> None:
    """An error line for a failure found before there is a key to redact."""
    print(f"{PROG}: error: {text}", file=sys.stderr)


@contextlib.contextmanager
def debug_logging(enabled: bool) -> Iterator[None]:
    """With `--verbose`, the SDK's DEBUG lines go to stderr for this run.

    They go through the SDK's own stderr handler, the one `AMAI_LOG` installs, so that
    with both each line is printed once.
    """
    if not enabled:
        yield
        return
    added = install_stderr_handler()
    level = logger.level
    logger.setLevel(logging.DEBUG)
    try:
        yield
    finally:
        logger.setLevel(level)
        if added is not None:
            remove_stderr_handler(added)
