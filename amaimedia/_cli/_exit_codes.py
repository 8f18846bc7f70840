"""The command's exit statuses: one per class of failure, so that scripts can branch."""

from __future__ import annotations

import ssl
from enum import IntEnum
from typing import Final

from amaimedia import (
    AmaiError,
    APIConnectionError,
    AuthenticationError,
    ForbiddenError,
    InsufficientCreditsError,
    RateLimitError,
)
from amaimedia._constants import ENV_API_KEY

__all__ = ["ExitCode", "exit_code_for", "is_tls_failure"]


class ExitCode(IntEnum):
    """The exit status of `amaimedia`, each with the meaning that `--help` lists.

    `ExitCode.AUTH.meaning` is the line of the help text; the members are:
    `OK` 0, `ERROR` 1, `USAGE` 2, `AUTH` 3, `INSUFFICIENT_CREDITS` 4, `FORBIDDEN` 5,
    `RATE_LIMITED` 6, `CONNECTION` 7, `TLS` 8, `PENDING` 9, `JOURNAL` 10,
    `INTERRUPTED` 130.
    """

    meaning: str

    def __new__(cls, value: int, meaning: str) -> ExitCode:
        member = int.__new__(cls, value)
        member._value_ = value
        member.meaning = meaning
        return member

    OK = 0, "ok (check: the balance covers the cost)"
    ERROR = 1, "other error: 5xx, unexpected answer, port in use"
    USAGE = 2, "bad arguments or settings (such as --units 0); nothing was sent"
    AUTH = 3, f"no API key, or the key was refused (401); see {ENV_API_KEY}"
    INSUFFICIENT_CREDITS = 4, "insufficient credits (402), or check: not allowed"
    FORBIDDEN = 5, "forbidden (403): suspended account or blocked region"
    RATE_LIMITED = 6, "rate limited (429), after the retries"
    CONNECTION = 7, "no answer: connection refused or reset, or timeout"
    TLS = 8, "TLS: the server's certificate could not be verified (see SSL_CERT_FILE)"
    PENDING = 9, "replay: spends are left pending (failed again, stale, held or too young)"
    JOURNAL = 10, "replay: the spend journal cannot be opened or read, or needs psycopg"
    INTERRUPTED = 130, "interrupted (Ctrl-C; replay --watch: a second signal mid-round)"


# Most specific first: the first class that matches decides the exit status.
_EXIT_BY_ERROR: Final[tuple[tuple[type[AmaiError], ExitCode], ...]] = (
    (AuthenticationError, ExitCode.AUTH),
    (InsufficientCreditsError, ExitCode.INSUFFICIENT_CREDITS),
    (ForbiddenError, ExitCode.FORBIDDEN),
    (RateLimitError, ExitCode.RATE_LIMITED),
    (APIConnectionError, ExitCode.CONNECTION),
)


def exit_code_for(error: AmaiError) -> ExitCode:
    """The exit status for a call that raised `error`."""
    if is_tls_failure(error):
        return ExitCode.TLS
    for error_class, code in _EXIT_BY_ERROR:
        if isinstance(error, error_class):
            return code
    return ExitCode.ERROR


def is_tls_failure(error: BaseException) -> bool:
    """Whether `error` came from a certificate that could not be verified."""
    seen: list[BaseException] = []
    cause: BaseException | None = error
    while cause is not None and cause not in seen:
        if isinstance(cause, ssl.SSLCertVerificationError):
            return True
        seen.append(cause)
        cause = cause.__cause__ or cause.__context__
    return False
