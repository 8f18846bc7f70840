"""The `amaimedia` logger, and `AMAI_LOG` to turn it on without writing logging code."""

from __future__ import annotations

import logging
import os
import threading

from ._constants import ENV_LOG, LOGGER_NAME

__all__ = ["configure_from_env", "install_stderr_handler", "logger", "remove_stderr_handler"]

logger = logging.getLogger(LOGGER_NAME)

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO}
_lock = threading.Lock()
_handler: logging.Handler | None = None


def configure_from_env() -> None:
    """Apply `AMAI_LOG=debug|info`: a stderr handler on the `amaimedia` logger.

    Runs when a client is built, and adds its handler only once per process, so that
    building many clients does not print every line many times. It only ever makes the
    logger more talkative: a level already set lower (`--verbose`) stays.
    """
    level = _LEVELS.get(os.environ.get(ENV_LOG, "").strip().lower())
    if level is None:
        return
    install_stderr_handler()
    if logger.level == logging.NOTSET or level < logger.level:
        logger.setLevel(level)


def install_stderr_handler() -> logging.Handler | None:
    """Give the `amaimedia` logger its stderr handler, unless it has it already.

    There is one per process, shared by `AMAI_LOG` and the command's `--verbose`, so that
    no line is printed twice.

    Returns:
        The handler, if this call added it; `None` if it was there before.
    """
    global _handler
    with _lock:
        if _handler is not None:
            return None
        _handler = logging.StreamHandler()
        _handler.setFormatter(
            logging.Formatter("[%(asctime)s %(levelname)s %(name)s] %(message)s")
        )
        logger.addHandler(_handler)
        return _handler


def remove_stderr_handler(handler: logging.Handler) -> None:
    """Take away the stderr handler that `install_stderr_handler()` returned."""
    global _handler
    with _lock:
        if _handler is handler:
            logger.removeHandler(handler)
            _handler = None
