"""The `amaimedia` logger, and `AMAI_LOG` to turn it on without writing logging code."""

from __future__ import annotations

import logging
import os
import threading

from ._constants import ENV_LOG, LOGGER_NAME

__all__ = ["configure_from_env", "logger"]

logger = logging.getLogger(LOGGER_NAME)

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO}
_lock = threading.Lock()
_handler: logging.Handler | None = None


def configure_from_env() -> None:
    """Apply `AMAI_LOG=debug|info`: a stderr handler on the `amaimedia` logger.

    Runs when a client is built, and adds its handler only once per process, so that
    building many clients does not print every line many times.
    """
    global _handler
    level = _LEVELS.get(os.environ.get(ENV_LOG, "").strip().lower())
    if level is None:
        return
    with _lock:
        if _handler is None:
            _handler = logging.StreamHandler()
            _handler.setFormatter(
                logging.Formatter("[%(asctime)s %(levelname)s %(name)s] %(message)s")
            )
            logger.addHandler(_handler)
        logger.setLevel(level)
