"""Type aliases and the "not given" sentinel shared by the whole package."""

from __future__ import annotations

import os
import ssl
from typing import Final, Literal, TypeAlias, final

import httpx

ToolName: TypeAlias = Literal[
    "chat",
    "image",
    "voice_clone",
    "dub",
    "music",
    "sfx",
    "speech2text",
    "translate",
]
"""The tools documented by the API. Any other string is sent as-is, since the API may
add tools before the SDK knows of them."""

ErrorCode: TypeAlias = Literal[
    "auth_required",
    "insufficient_credits",
    "forbidden",
    "rate_limited",
]
"""The stable error strings documented by the API."""

Units: TypeAlias = int | float
"""An amount of work: a positive, finite int or float."""

TimeoutTypes: TypeAlias = float | httpx.Timeout | None
"""A timeout in seconds, an `httpx.Timeout` for finer control, or `None` for no timeout."""


VerifyTypes: TypeAlias = "bool | str | os.PathLike[str] | ssl.SSLContext"
"""What `verify=` takes: `True`, `False`, a CA file or directory, or an `ssl.SSLContext`."""


@final
class NotGiven:
    """The type of [`NOT_GIVEN`][amaimedia.NOT_GIVEN], for arguments where `None` has a meaning.

    `client.with_options(timeout=None)` turns the timeout off, while leaving `timeout`
    out keeps the client's current one: the default value of such an argument is
    `NOT_GIVEN`, never `None`.
    """

    _instance: NotGiven | None = None

    def __new__(cls) -> NotGiven:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __bool__(self) -> Literal[False]:
        return False

    def __repr__(self) -> str:
        return "NOT_GIVEN"

    def __reduce__(self) -> str:
        return "NOT_GIVEN"


NOT_GIVEN: Final = NotGiven()
"""Sentinel for an argument that was not given (see [`NotGiven`][amaimedia.NotGiven])."""


# Reached through `with_options()` defaults before any name of the package is used.
NotGiven.__module__ = "amaimedia"
