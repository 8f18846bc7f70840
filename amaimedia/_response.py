"""From an HTTP answer to a model or an exception: the one place errors are mapped.

The stable error string decides first; the status code second. The mapping never lets a
`JSONDecodeError`, `KeyError` or pydantic `ValidationError` from a server body escape, and
every string of the server's that a message quotes goes through `printable()`.

The body has been read by then, within the SDK's bounds (`_answer.py`); an answer refused
unread (too large, encoded twice over) still maps by its status, to the same classes, with
`body=None` and a message that says why it was not read (`error_from_response(unread=)`).

A server, or a proxy on the way, may quote the request in its answer, API key included.
Everything an error holds that is made from the answer (its message, and so `str()` and
the journal's `last_error`; its `error`, `body` and `request_id`, and so `repr()` and the
notebook table) has `[API key]` where the request's own key was: the strings of a JSON
body, names included, or the text of any other. Only `response` keeps the answer as it
came; its request carries the key anyway, which is why no error ever shows it.
"""

from __future__ import annotations

import socket
import ssl
import time
from datetime import timezone
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any, Final, TypeVar, overload

import httpx
from pydantic_core import ValidationError  # pydantic's own, without its model machinery

from . import _json
from ._constants import MAX_RETRY_AFTER_HEADER
from ._exceptions import (
    APIConnectionError,
    APIError,
    APIResponseValidationError,
    APITimeoutError,
    AuthenticationError,
    ForbiddenError,
    InsufficientCreditsError,
    RateLimitError,
    ServerError,
    _ErrorDetails,
)
from ._printable import printable
from ._tracebacks import forget_frames_holding

if TYPE_CHECKING:
    from pydantic import BaseModel

    from ._auth import ApiKey
    from ._transports._direct import DirectAnswer

__all__ = [
    "REQUEST_ID_HEADERS",
    "connection_error",
    "dead_loop_error",
    "error_from_response",
    "parse_response",
    "parse_retry_after",
    "parse_success",
    "request_id_in",
    "request_id_of",
    "request_id_of_answer",
    "unread_answer_error",
]

_T = TypeVar("_T", bound="BaseModel")

_BY_ERROR_STRING: Final[dict[str, type[APIError]]] = {
    "auth_required": AuthenticationError,
    "insufficient_credits": InsufficientCreditsError,
    "forbidden": ForbiddenError,
    "rate_limited": RateLimitError,
}
# For answers without a known error string, such as an HTML page from the edge: the
# documented statuses still mean what the API doc says they mean.
_BY_STATUS: Final[dict[int, type[APIError]]] = {
    401: AuthenticationError,
    402: InsufficientCreditsError,
    403: ForbiddenError,
    429: RateLimitError,
}
_DESCRIPTIONS: Final[dict[type[APIError], str]] = {
    AuthenticationError: "the API key is missing, malformed or revoked",
    InsufficientCreditsError: "the balance does not cover the cost",
    ForbiddenError: "refused: CSRF mismatch, blocked region or suspended account",
    RateLimitError: "too many requests",
    ServerError: "the server failed to answer the request",
    APIError: "the server refused the request",
}
# The headers of an answer's request id: the first one present and not empty is the id.
REQUEST_ID_HEADERS: Final = ("cf-ray", "x-request-id")
_MAX_ERRORS_SHOWN: Final = 3
# getaddrinfo's answers for a name that does not exist (NXDOMAIN), as opposed to a
# resolver that failed for now (EAI_AGAIN), which a retry may well get past.
_UNKNOWN_HOST: Final = frozenset(
    code for code in (socket.EAI_NONAME, getattr(socket, "EAI_NODATA", None)) if code is not None
)
_MAX_CAUSES: Final = 8
# What stands in for an echoed key: the command's output shows it so too (_cli/_console.py).
_KEY_SHOWN: Final = "[API key]"
_KEY_SHOWN_BYTES: Final = _KEY_SHOWN.encode()


def request_id_of(response: httpx.Response) -> str | None:
    """The id a support ticket needs: `cf-ray`, else `x-request-id`, else `None`."""
    return request_id_in(response.headers)


def request_id_of_answer(answer: httpx.Response | DirectAnswer) -> str | None:
    """`request_id_of()` an answer of either path, `[API key]` where it echoes the key.

    The direct path's is read from aiohttp's headers.
    """
    if isinstance(answer, httpx.Response):
        request_id = request_id_of(answer)
        return None if request_id is None else _blank(request_id, _sent_key(answer))
    request_id = answer.request_id
    return None if request_id is None else _blank(request_id, answer.sent_key())


def request_id_in(headers: httpx.Headers) -> str | None:
    """`request_id_of()` an answer, from its headers alone."""
    for name in REQUEST_ID_HEADERS:
        value: str | None = headers.get(name)
        if value:
            return value
    return None


def parse_retry_after(headers: httpx.Headers, *, now: float | None = None) -> float | None:
    """Seconds the server asked to wait: `retry-after-ms`, else `Retry-After`.

    `Retry-After` may be a number of seconds or an HTTP date. Anything unreadable or
    negative counts as not given, and so does a wait longer than a day
    (`MAX_RETRY_AFTER_HEADER`): no server means `Retry-After: 1e308`, which cannot even be
    slept, so the client falls back to its own backoff.
    """
    milliseconds = headers.get("retry-after-ms")
    if milliseconds is not None:
        seconds = _finite_non_negative(milliseconds)
        if seconds is not None:
            return _sane(seconds / 1000)
    value = headers.get("retry-after")
    if value is None:
        return None
    seconds = _finite_non_negative(value)
    if seconds is not None:
        return _sane(seconds)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # the zoneless asctime form of an HTTP date is GMT too
        when = when.replace(tzinfo=timezone.utc)
    return _sane(max(0.0, when.timestamp() - (time.time() if now is None else now)))


def _finite_non_negative(text: str) -> float | None:
    try:
        number = float(text)
    except ValueError:
        return None
    return number if number >= 0 and number != float("inf") else None


def _sane(seconds: float) -> float | None:
    return seconds if seconds <= MAX_RETRY_AFTER_HEADER else None


def _decode_body(response: httpx.Response) -> object:
    """The parsed JSON body, or the text when it is not JSON (an HTML error page)."""
    try:
        return _json.loads(response.content)
    except ValueError:  # not JSON, or nested too deep to decode safely
        pass
    try:
        # httpx decodes leniently: an unknown charset or broken bytes do not raise...
        return response.text
    except UnicodeError:
        # ...except for utf-16 and utf-32 without a byte order mark.
        return response.content.decode("utf-8", errors="replace")


def error_from_response(
    response: httpx.Response, body: object = None, *, unread: str | None = None
) -> APIError:
    """Build the typed exception for an error answer (any status).

    Args:
        response: The answer.
        body: Its parsed body, when the caller has parsed it already.
        unread: Why the body was not read (`"too large: …"`), for an answer refused
            unread: it then maps by its status and headers alone, with `body=None`.
    """
    if unread is None and body is None:
        body = _decode_body(response)
    key = _sent_key(response)
    if key is not None:
        # Before anything is read from it: every field the message quotes is blanked then.
        body = _without_key(body, key)
    from ._models import ErrorBody  # loaded with the first call's models: no cost here

    details = ErrorBody.model_validate(body) if isinstance(body, dict) else ErrorBody()
    status = response.status_code
    cls = _BY_ERROR_STRING.get(details.error or "")
    if cls is None:
        cls = ServerError if status >= 500 else _BY_STATUS.get(status, APIError)
    message = printable(details.message) if details.message else _DESCRIPTIONS[cls]
    if 300 <= status < 400:
        # repr() escapes its control characters as printable() would.
        location = response.headers.get("location", "(no location)")
        message = (
            f"unexpected redirect to {location!r}; redirects are not followed, check base_url"
        )
    if unread is not None:
        message += f"; the answer is {unread}, so its body was not read"
    elif not isinstance(body, dict | list) and not 300 <= status < 400:
        # JSON too deep to decode is kept as text too: it is JSON, so the message says so.
        too_deep = (
            isinstance(body, str) and body.lstrip()[:1] in ("[", "{") and _json.too_deep(body)
        )
        shape = "nests too deep to read" if too_deep else "is not JSON"
        message += f" (the answer {shape})"
    retry_after = parse_retry_after(response.headers)
    if cls is InsufficientCreditsError:
        if details.cost_tokens is not None and details.balance is not None:
            message += f": the call costs {details.cost_tokens} tokens, "
            message += f"the balance is {details.balance}"
        message += "; top up at amaimedia.com/credits"
    if cls is RateLimitError and retry_after is not None:
        message += f"; the server asked to wait {retry_after:g} s"
    common: _ErrorDetails = {
        "error": _blank(details.error, key),
        "body": body,
        "request_id": _blank(request_id_of(response), key),
        "response": response,
        "retry_after": retry_after,
    }
    # The headers it quotes (a redirect's location) may echo the key too.
    message = _blank(message, key)
    if cls is InsufficientCreditsError:
        return InsufficientCreditsError(
            message,
            status_code=status,
            cost_tokens=details.cost_tokens,
            balance=details.balance,
            **common,
        )
    return cls(message, status_code=status, **common)


def parse_response(
    response: httpx.Response,
    model: type[_T],
    context: dict[str, Any] | None = None,
    *,
    key: ApiKey | None = None,
) -> _T:
    """Turn a 2xx answer into `model`, and any other answer into its exception.

    A `Quote` or `Charge` gets the answer's request id (`request_id_of()`). Where the body
    or the request id echoes `key` (the request's API key), the model holds `[API key]`.

    Raises:
        APIError: The status is not 2xx, or a 2xx body says `"ok": false`.
        APIResponseValidationError: A 2xx body is not the documented shape.
    """
    if not response.is_success:
        raise error_from_response(response)
    content, request_id = blank_echoes(response.content, request_id_of(response), key)
    # The request id goes in through the context, which Quote and Charge read it from.
    context = {**(context or {}), "request_id": request_id}
    try:
        result = model.model_validate_json(content, context=context)
    except ValidationError as exc:
        body = _decode_body(response)
        if isinstance(body, dict) and body.get("ok") is False:
            raise error_from_response(response, body) from None
        raise _invalid_answer_error(response, model, exc, body) from None
    if getattr(result, "ok", True) is False:
        raise error_from_response(response)
    return result


def parse_success(
    content: bytes,
    request_id: str | None,
    model: type[_T],
    context: dict[str, Any] | None = None,
    *,
    key: ApiKey | None = None,
) -> _T | None:
    """`parse_response()` of a 2xx answer, from its body and request id alone: no response.

    For the direct path (`_transports/_direct.py`), which builds an `httpx.Response` only
    for an answer that raises.

    Returns:
        The model, with the request id, as `parse_response()` returns it; `None` when the
        body is not the documented shape or says `"ok": false`: `parse_response()` of the
        whole answer then raises what it raises for it.
    """
    content, request_id = blank_echoes(content, request_id, key)
    context = {**(context or {}), "request_id": request_id}
    try:
        result = model.model_validate_json(content, context=context)
    except ValidationError:
        return None
    if getattr(result, "ok", True) is False:
        return None
    return result


def blank_echoes(
    content: bytes, request_id: str | None, api_key: ApiKey | None
) -> tuple[bytes, str | None]:
    """A 2xx answer's body and request id, `[API key]` wherever they echo `api_key`.

    A server or a proxy that quotes the request in a successful answer would otherwise put
    the key in the model's fields (its repr, a log line, a notebook table). The body is
    searched as bytes, raw and as JSON escapes it; an answer that holds no key costs a
    substring search or two.
    """
    if api_key is None:
        return content, request_id
    key = api_key.reveal()  # a local of this frame only, which never raises
    request_id = _blank(request_id, key)
    secret = key.encode()
    if secret in content:
        content = content.replace(secret, _KEY_SHOWN_BYTES)
    if '"' in key or "\\" in key:  # a key is printable ASCII: JSON escapes only these
        escaped = key.replace("\\", "\\\\").replace('"', '\\"').encode()
        content = content.replace(escaped, _KEY_SHOWN_BYTES)
    return content, request_id


def _invalid_answer_error(
    response: httpx.Response, model: type[BaseModel], exc: ValidationError, body: object
) -> APIResponseValidationError:
    # Built here, not in parse_response(): the key would be a local of the frame that
    # raises, and error trackers show those.
    key = _sent_key(response)
    return APIResponseValidationError(
        _blank(
            f"the answer to {response.request.url.path} is not a valid "
            f"{model.__name__}: {printable(_summarize(exc))}",
            key,
        ),
        status_code=response.status_code,
        body=body if key is None else _without_key(body, key),
        request_id=_blank(request_id_of(response), key),
        response=response,
    )


def unread_answer_error(
    response: httpx.Response, unread: str
) -> APIError | APIResponseValidationError:
    """The error for an answer whose body the SDK refused to read, and says why.

    A 2xx is an `APIResponseValidationError` (not retried: a spend may have charged); any
    other status maps as its status and headers say (a 5xx is still a `ServerError`, and
    retried; a 429 keeps its `Retry-After`), with `body=None`.

    Args:
        response: The answer, its body unread.
        unread: What is wrong with it, as a clause: `"too large: 209,715,200 bytes, …"`.
    """
    if not response.is_success:
        return error_from_response(response, unread=unread)
    key = _sent_key(response)
    return APIResponseValidationError(
        # `unread` may quote a header of the answer (its Content-Encoding).
        _blank(f"the answer to {response.request.url.path} is {unread}, so it was not read", key),
        status_code=response.status_code,
        body=None,
        request_id=_blank(request_id_of(response), key),
        response=response,
    )


def _sent_key(response: httpx.Response) -> str | None:
    """The API key of the request `response` answers, or `None` (a response built bare)."""
    try:
        request = response.request
    except RuntimeError:
        return None
    return _key_of(request)


def _key_of(request: httpx.Request) -> str | None:
    scheme, _, key = request.headers.get("authorization", "").partition(" ")
    return key if scheme.lower() == "bearer" and key else None


@overload
def _blank(text: str, key: str | None) -> str: ...
@overload
def _blank(text: str | None, key: str | None) -> str | None: ...
def _blank(text: str | None, key: str | None) -> str | None:
    """`text` with `[API key]` for each occurrence of `key`."""
    if text is None or key is None:
        return text
    return text.replace(key, _KEY_SHOWN)


def _without_key(body: object, key: str) -> object:
    """A decoded body with `[API key]` for `key` in each of its strings, names included.

    Walked with a list of its containers, not by recursion: a body nested as deep as
    the decoder takes (`_json.MAX_DEPTH`) must not cost the stack its caller has left.
    """
    if not isinstance(body, dict | list):
        return _blank(body, key) if isinstance(body, str) else body
    copy: dict[object, object] | list[object] = {} if isinstance(body, dict) else []
    pending: list[tuple[dict[Any, Any] | list[Any], dict[object, object] | list[object]]]
    pending = [(body, copy)]
    while pending:
        source, target = pending.pop()
        for name, item in source.items() if isinstance(source, dict) else enumerate(source):
            value: object = item
            if isinstance(item, dict | list):
                inner: dict[object, object] | list[object] = {} if isinstance(item, dict) else []
                pending.append((item, inner))  # filled later, in its place already
                value = inner
            elif isinstance(item, str):
                value = _blank(item, key)
            if isinstance(target, dict):
                target[_blank(name, key) if isinstance(name, str) else name] = value
            else:
                target.append(value)
    return copy


def _summarize(exc: ValidationError) -> str:
    errors = exc.errors(include_url=False, include_input=False, include_context=False)
    parts = []
    for error in errors[:_MAX_ERRORS_SHOWN]:
        where = ".".join(str(part) for part in error["loc"]) or "body"
        parts.append(f"{where}: {error['msg']}")
    if len(errors) > _MAX_ERRORS_SHOWN:
        parts.append(f"and {len(errors) - _MAX_ERRORS_SHOWN} more")
    return "; ".join(parts)


def connection_error(exc: httpx.RequestError, request: httpx.Request) -> APIConnectionError:
    """Wrap a transport failure of `request` in the SDK's own exception.

    A failure that no retry can fix is marked so (`retryable=False`) and its message says
    what to change: a certificate that cannot be verified (a private or TLS-inspecting
    CA), a host name that does not exist, a URL or proxy scheme the pool cannot speak.
    """
    _forget_key(exc, request)
    where = f"{request.method} {request.url}"
    # httpx and aiohttp quote some of what the peer sent in their messages.
    text = _blank(printable(str(exc)), _key_of(request))
    detail = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    if isinstance(exc, httpx.TimeoutException):
        return APITimeoutError(f"no answer to {where} within the timeout ({detail})")
    host = request.url.host
    for cause in _causes(exc):
        if isinstance(cause, ssl.SSLCertVerificationError):
            reason = cause.verify_message or cause.reason or str(cause)
            return APIConnectionError(
                f"TLS: the certificate of {host} could not be verified ({reason}), so "
                f"nothing was sent to {where}. If a private or TLS-inspecting CA signs "
                "it, point SSL_CERT_FILE (or SSL_CERT_DIR) at that CA's certificate, or "
                "pass verify='/path/to/ca.pem' (or an ssl.SSLContext) to the client",
                retryable=False,
            )
        if isinstance(cause, socket.gaierror) and cause.errno in _UNKNOWN_HOST:
            return APIConnectionError(
                f"DNS: the host name {host} does not exist ({cause.strerror}), so nothing "
                f"was sent to {where}; check base_url (or AMAI_BASE_URL)",
                retryable=False,
            )
    if isinstance(exc, httpx.UnsupportedProtocol):
        return APIConnectionError(f"cannot send {where} ({detail})", retryable=False)
    return APIConnectionError(f"no usable answer to {where} ({detail})")


def dead_loop_error(exc: RuntimeError, request: httpx.Request) -> APIConnectionError:
    """The error for a caller's pool used from an event loop its connections do not know.

    Raised as it is for any other `RuntimeError`, which is not the SDK's to explain.
    """
    if "loop" not in str(exc):
        raise exc
    _forget_key(exc, request)
    said = _blank(str(exc), _key_of(request))
    return APIConnectionError(
        f"the http_client's connections belong to an event loop that has ended or is "
        f"another one ({said}), so this loop cannot use them. Create the "
        "httpx.AsyncClient inside the loop that uses it, one per loop, or leave "
        "http_client out: the client's own pool follows the running event loop",
        retryable=False,
    )


def _forget_key(exc: BaseException, request: httpx.Request) -> None:
    """Cut the frames that hold `request`'s API key out of `exc`'s tracebacks.

    `exc` is a failure of the exchange, about to be chained to one of the SDK's exceptions.
    """
    key = _key_of(request)
    if key is not None:
        forget_frames_holding(exc, (key,), "the API key")


def _causes(exc: BaseException) -> list[BaseException]:
    """`exc`'s causes, nearest first, as httpx and httpcore chain them (a few deep)."""
    found: list[BaseException] = []
    cause = exc.__cause__ or exc.__context__
    while cause is not None and len(found) < _MAX_CAUSES and cause not in found:
        found.append(cause)
        cause = cause.__cause__ or cause.__context__
    return found
