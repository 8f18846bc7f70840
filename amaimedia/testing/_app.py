"""The fake API's HTTP semantics, as one function from request to answer.

`handle` takes a request as plain values (method, target, headers, body bytes) and
returns what to do: an answer, a cut connection, and how long to wait first. The
in-process transports and the loopback server both call it, and only it, so the two
ways of reaching the fake cannot answer differently.
"""

from __future__ import annotations

import json
import math
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import urlsplit

from amaimedia import _json
from amaimedia._constants import CHECK_PATH, SPEND_PATH

from ._faults import Endpoint, Fault, FaultQueues
from ._ledger import Account, Ledger

__all__ = ["Outcome", "RecordedRequest", "Reply", "handle", "json_reply", "new_request_id"]

_ROUTES: Final[dict[str, Endpoint]] = {CHECK_PATH: "check", SPEND_PATH: "spend"}
# Request headers that carry credentials: recorded without their value, so that the fake
# never holds a key, as it holds only the digest of the keys it issues.
_CREDENTIALS: Final = frozenset({"authorization", "proxy-authorization"})
_REDACTED: Final = "[redacted]"
_NOT_JSON: Final = object()
_JSON: Final = "application/json"


@dataclass(frozen=True)
class RecordedRequest:
    """One request the fake received, as `FakeAmaiServer.requests` lists it.

    The key is never kept: the value of an `authorization` header is recorded as
    `"Bearer [redacted]"` (`"[redacted]"` if it is not a bearer credential), and so is
    `proxy-authorization`. Two records are equal when their request and answer are:
    `headers` and `content` are not compared.

    Attributes:
        method: The HTTP method, such as `"POST"`.
        path: The path requested, such as `"/api/v1/tools/spend"`.
        endpoint: `"check"` or `"spend"`, or `None` for any other path.
        body: The parsed JSON body, or `None` when the body was not JSON.
        status: The status answered, or `None` when the connection was cut unanswered.
        request_id: The `x-request-id` of the answer, or `None` when there was none.
        headers: The request's headers as `(name, value)` pairs, in the order received,
            names in lower case, credentials redacted; `dict(record.headers)` reads
            one by name.
        content: The body as received, byte for byte.
    """

    method: str
    path: str
    endpoint: Endpoint | None
    body: Any
    status: int | None
    request_id: str | None
    headers: tuple[tuple[str, str], ...] = field(default=(), compare=False, repr=False)
    content: bytes = field(default=b"", compare=False, repr=False)


@dataclass(frozen=True)
class Reply:
    """An answer to send: status, headers (lower-case names) and body bytes."""

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes


@dataclass(frozen=True)
class Outcome:
    """What a transport does with one request.

    Attributes:
        reply: The answer to send, or `None` to cut the connection without one.
        delay: Seconds to wait before sending the answer (or cutting).
    """

    reply: Reply | None
    delay: float = 0.0


class _InvalidRequest(Exception):
    """A body the API would refuse with 400 `invalid_request`; the message says why."""


def handle(
    ledger: Ledger,
    faults: FaultQueues,
    log: list[RecordedRequest],
    *,
    method: str,
    target: str,
    headers: Iterable[tuple[str, str]],
    body: bytes,
) -> Outcome:
    """Answer one request, charging `ledger` and recording it in `log`.

    The caller holds the lock that guards all three. A queued fault for the endpoint is
    used up first: it replaces the answer, cuts the connection before or after the
    request is processed, or delays the answer.
    """
    headers = tuple(headers)  # read twice: to authenticate, and to record
    path = urlsplit(target).path
    endpoint = _ROUTES.get(path)
    document = _decode(body)
    request_id = new_request_id()
    fault: Fault | None = None
    reply: Reply | None
    if endpoint is None:
        reply = json_reply(404, {"ok": False, "error": "not_found"}, request_id)
    else:
        fault = faults.pop(endpoint)
        if fault is not None and fault.status is not None:
            reply = Reply(fault.status, (*fault.headers, ("x-request-id", request_id)), fault.body)
        elif fault is not None and fault.drop:
            reply = None
        else:
            reply = _answer(ledger, endpoint, method, headers, document, request_id)
            if fault is not None and fault.drop_after_commit:
                reply = None
    log.append(
        RecordedRequest(
            method=method,
            path=path,
            endpoint=endpoint,
            body=None if document is _NOT_JSON else document,
            status=None if reply is None else reply.status,
            request_id=None if reply is None else request_id,
            headers=_recorded(headers),
            content=body,
        )
    )
    return Outcome(reply, delay=0.0 if fault is None else fault.delay)


def _recorded(headers: Iterable[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    """The headers as `RecordedRequest.headers` keeps them: names lower-cased, no secret."""
    recorded = []
    for name, value in headers:
        lowered = name.lower()
        recorded.append((lowered, _redact(value) if lowered in _CREDENTIALS else value))
    return tuple(recorded)


def _redact(credential: str) -> str:
    # The scheme says how the key was sent, which a test may check; the rest is the secret.
    scheme, space, _ = credential.partition(" ")
    if space and scheme.lower() == "bearer":
        return f"{scheme} {_REDACTED}"
    return _REDACTED


def _answer(
    ledger: Ledger,
    endpoint: Endpoint,
    method: str,
    headers: Iterable[tuple[str, str]],
    document: object,
    request_id: str,
) -> Reply:
    if method != "POST":
        reply = json_reply(405, {"ok": False, "error": "method_not_allowed"}, request_id)
        return Reply(reply.status, (*reply.headers, ("allow", "POST")), reply.body)
    account = _authenticate(ledger, headers)
    if account is None:
        return json_reply(401, {"ok": False, "error": "auth_required"}, request_id)
    if account.suspended:
        return json_reply(403, {"ok": False, "error": "forbidden"}, request_id)
    try:
        tool, units, reference = _fields(endpoint, document, ledger)
    except _InvalidRequest as exc:
        error = {"ok": False, "error": "invalid_request", "message": str(exc)}
        return json_reply(400, error, request_id)
    if reference is None:
        return json_reply(200, ledger.quote(account, tool, units), request_id)
    status, answer = ledger.spend(account, tool, units, reference)
    return json_reply(status, answer, request_id)


def _authenticate(ledger: Ledger, headers: Iterable[tuple[str, str]]) -> Account | None:
    """The account of a valid bearer key; `None` for a missing, malformed or revoked one."""
    values = [value for name, value in headers if name.lower() == "authorization"]
    if len(values) != 1:
        return None
    scheme, _, token = values[0].partition(" ")
    if scheme.lower() != "bearer" or not token or any(c.isspace() for c in token):
        return None
    account = ledger.lookup(token)
    if account is None or account.revoked:
        return None
    return account


def _fields(
    endpoint: Endpoint, document: object, ledger: Ledger
) -> tuple[str, int | float, str | None]:
    """`(tool, units, reference)` from a request body; reference is `None` for a check."""
    if document is _NOT_JSON:
        raise _InvalidRequest("the body is not valid JSON")
    if not isinstance(document, dict):
        raise _InvalidRequest("the body must be a JSON object")
    tool = _required(document, "tool")
    if not isinstance(tool, str):
        raise _InvalidRequest("tool must be a string")
    if tool not in ledger.prices:
        known = ", ".join(ledger.prices)
        raise _InvalidRequest(f"unknown tool {tool[:80]!r}; known tools: {known}")
    units = _required(document, "units")
    if isinstance(units, bool) or not isinstance(units, int | float) or not _positive(units):
        raise _InvalidRequest("units must be a positive, finite number")
    if endpoint == "check":
        return tool, units, None
    reference = _required(document, "reference")
    if not isinstance(reference, str) or not reference:
        raise _InvalidRequest("reference must be a non-empty string")
    return tool, units, reference


def _required(document: dict[str, Any], name: str) -> object:
    if name not in document:
        raise _InvalidRequest(f"{name} is required")
    return document[name]


def _positive(units: int | float) -> bool:
    # An int is always finite (and math.isfinite would overflow on a huge one).
    return units > 0 if isinstance(units, int) else math.isfinite(units) and units > 0


def _decode(body: bytes) -> object:
    """The parsed JSON body, or `_NOT_JSON`. `NaN` and `Infinity` are not JSON."""
    try:
        return _json.loads(body, parse_constant=_refuse_constant)
    except ValueError:  # not JSON, or nested too deep to decode safely
        return _NOT_JSON


def _refuse_constant(name: str) -> object:
    raise ValueError(f"{name} is not valid JSON")


def new_request_id() -> str:
    """A fresh `x-request-id`, such as `req_fake_3f9a0c2b7d1e4a65`."""
    return f"req_fake_{secrets.token_hex(8)}"


def json_reply(status: int, document: dict[str, Any], request_id: str | None = None) -> Reply:
    """A JSON answer with the API's headers (a fresh request id unless one is given)."""
    body = json.dumps(document, separators=(",", ":")).encode("utf-8")
    request_id = request_id or new_request_id()
    return Reply(status, (("content-type", _JSON), ("x-request-id", request_id)), body)
