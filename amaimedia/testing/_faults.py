"""Programmable faults: what the fake does instead of (or besides) answering normally."""

from __future__ import annotations

import json
import math
import re
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, Final, Literal, TypeAlias

__all__ = ["ENDPOINTS", "Endpoint", "Fault", "FaultQueues", "default_error", "make_fault"]

Endpoint: TypeAlias = Literal["check", "spend"]
ENDPOINTS: Final[tuple[Endpoint, ...]] = ("check", "spend")

# Headers a fault cannot set: the fake writes them itself (framing, its own request id), or
# another argument of `fail_next` gives them. Each says what to do instead.
_OWN_HEADERS: Final[Mapping[str, str]] = {
    "content-type": "give content_type instead",
    "retry-after": "give retry_after instead",
    "content-length": "the fake sets it from the body",
    "transfer-encoding": "the fake always sends a Content-Length",
    "connection": "the fake manages its connections itself",
    "x-request-id": "the fake gives every answer a fresh one",
}
# An HTTP header name: one or more token characters (RFC 9110, section 5.6.2).
_HEADER_NAME: Final = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")

_ERROR_STRINGS: Final[Mapping[int, str]] = {
    400: "invalid_request",
    401: "auth_required",
    402: "insufficient_credits",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    429: "rate_limited",
}


def default_error(status: int) -> str:
    """The error string the fake puts in a JSON error body for `status`.

    The API's documented strings for its statuses, `server_error` for any 5xx, and the
    reason phrase in snake case for the rest (`409` gives `conflict`).
    """
    if status in _ERROR_STRINGS:
        return _ERROR_STRINGS[status]
    if status >= 500:
        return "server_error"
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        return "error"
    return re.sub(r"[^a-z0-9]+", "_", phrase.lower()).strip("_")


@dataclass(frozen=True)
class Fault:
    """One queued fault, validated and with its answer (if any) already built.

    Attributes:
        status: The status to answer with instead of processing, or `None`.
        body: The body of that answer.
        headers: The headers of that answer: content type, `Retry-After`, then any extra
            ones, names in lower case.
        delay: Seconds to hold the answer (or the cut) back.
        drop: Cut the connection before processing anything.
        drop_after_commit: Process the request, then cut the connection unanswered.
    """

    status: int | None = None
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()
    delay: float = 0.0
    drop: bool = False
    drop_after_commit: bool = False


def make_fault(
    *,
    status: int | None,
    body: bytes | str | Mapping[str, Any] | None,
    content_type: str | None,
    retry_after: float | str | None,
    headers: Mapping[str, str] | None,
    delay: float,
    drop: bool,
    drop_after_commit: bool,
) -> Fault:
    """Validate the arguments of `FakeAmaiServer.fail_next` into a `Fault`.

    Raises:
        TypeError: An argument has the wrong type.
        ValueError: An argument is impossible, or the combination is.
    """
    if isinstance(delay, bool) or not isinstance(delay, int | float):
        raise TypeError(f"delay must be a number of seconds, got {type(delay).__name__}")
    if not math.isfinite(delay) or delay < 0:
        raise ValueError(f"delay must be a finite number of seconds, 0 or more, got {delay!r}")
    if drop and drop_after_commit:
        raise ValueError("choose one of drop (before processing) and drop_after_commit")
    answer_given = [
        name
        for name, value in (
            ("status", status),
            ("body", body),
            ("content_type", content_type),
            ("retry_after", retry_after),
            ("headers", headers),
        )
        if value is not None
    ]
    if (drop or drop_after_commit) and answer_given:
        raise ValueError(
            f"a dropped connection sends no answer, so {answer_given[0]} cannot be given"
        )
    if status is None:
        if answer_given:
            raise ValueError(f"{answer_given[0]} needs a status")
        if not (drop or drop_after_commit or delay):
            raise ValueError("give a status, drop=True, drop_after_commit=True or a delay")
        return Fault(delay=float(delay), drop=drop, drop_after_commit=drop_after_commit)
    return Fault(
        status=_checked_status(status, has_body=body is not None),
        body=_body_bytes(status, body),
        headers=_headers(content_type, retry_after) + _extra_headers(headers),
        delay=float(delay),
    )


def _checked_status(status: object, *, has_body: bool) -> int:
    if isinstance(status, bool) or not isinstance(status, int):
        raise TypeError(f"status must be an int, got {type(status).__name__}")
    if not 200 <= status <= 599:
        raise ValueError(f"status must be between 200 and 599, got {status}")
    if status < 300 and not has_body:
        raise ValueError(f"a {status} fault needs a body: the default body is an error")
    return status


def _body_bytes(status: int, body: bytes | str | Mapping[str, Any] | None) -> bytes:
    if body is None:
        body = {"ok": False, "error": default_error(status)}
    if isinstance(body, bytes):
        return body
    if isinstance(body, str):
        return body.encode("utf-8")
    if isinstance(body, Mapping):
        try:
            return json.dumps(dict(body), separators=(",", ":")).encode("utf-8")
        except (TypeError, ValueError) as exc:
            raise TypeError(f"body is not JSON-serialisable: {exc}") from None
    raise TypeError(f"body must be bytes, str or a mapping, got {type(body).__name__}")


def _headers(
    content_type: str | None, retry_after: float | str | None
) -> tuple[tuple[str, str], ...]:
    content_type = "application/json" if content_type is None else content_type
    headers = [("content-type", _header_value("content_type", content_type))]
    if retry_after is None:
        return tuple(headers)
    if isinstance(retry_after, str):
        value = _header_value("retry_after", retry_after)
    elif isinstance(retry_after, bool) or not isinstance(retry_after, int | float):
        raise TypeError(
            f"retry_after must be seconds or a header value, got {type(retry_after).__name__}"
        )
    elif not math.isfinite(retry_after) or retry_after < 0:
        raise ValueError("retry_after must be a finite number of seconds, 0 or more")
    else:
        value = str(int(retry_after)) if retry_after == int(retry_after) else repr(retry_after)
    headers.append(("retry-after", value))
    return tuple(headers)


def _extra_headers(headers: object) -> tuple[tuple[str, str], ...]:
    if headers is None:
        return ()
    if not isinstance(headers, Mapping):
        kind = type(headers).__name__
        raise TypeError(f"headers must be a mapping of names to values, got {kind}")
    extra: dict[str, str] = {}
    for name, value in headers.items():
        if not isinstance(name, str):
            raise TypeError(f"header names must be str, got {type(name).__name__}")
        if not _HEADER_NAME.fullmatch(name):
            raise ValueError(f"{name!r} is not a header name")
        lowered = name.lower()
        if lowered in _OWN_HEADERS:
            raise ValueError(f"headers cannot set {lowered}: {_OWN_HEADERS[lowered]}")
        if lowered in extra:
            raise ValueError(f"headers gives {lowered} twice")
        extra[lowered] = _header_value(f"the {lowered} header", value)
    return tuple(extra.items())


def _header_value(name: str, value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, got {type(value).__name__}")
    if not value or not value.isascii() or not value.isprintable():
        raise ValueError(f"{name} must be a non-empty header value of printable ASCII")
    return value


class FaultQueues:
    """One first-in, first-out queue of faults per endpoint."""

    def __init__(self) -> None:
        self._queues: dict[str, deque[Fault]] = {endpoint: deque() for endpoint in ENDPOINTS}

    def push(self, endpoint: str, fault: Fault, times: int) -> None:
        """Queue `times` copies of `fault` for `endpoint`.

        Raises:
            ValueError: `endpoint` is not `"check"` or `"spend"`, or `times` below 1.
            TypeError: `times` is not an int.
        """
        if endpoint not in self._queues:
            raise ValueError(f"endpoint must be 'check' or 'spend', got {endpoint!r}")
        if isinstance(times, bool) or not isinstance(times, int):
            raise TypeError(f"times must be an int, got {type(times).__name__}")
        if times < 1:
            raise ValueError(f"times must be 1 or more, got {times}")
        self._queues[endpoint].extend([fault] * times)

    def pop(self, endpoint: str) -> Fault | None:
        """The next fault for `endpoint`, used up, or `None` when none is queued."""
        queue = self._queues[endpoint]
        return queue.popleft() if queue else None

    def clear(self) -> None:
        """Forget every queued fault."""
        for queue in self._queues.values():
            queue.clear()
