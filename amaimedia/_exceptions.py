"""Everything the SDK raises.

```
AmaiError                          base of everything the SDK raises
├── APIError                       the server answered with an error
│   ├── AuthenticationError        401 auth_required
│   ├── InsufficientCreditsError   402 insufficient_credits
│   ├── ForbiddenError             403 forbidden
│   ├── RateLimitError             429 rate_limited
│   └── ServerError                5xx
├── APIConnectionError             no usable answer: DNS, refused, reset, TLS
│   └── APITimeoutError            no answer in time, or the total_timeout spent
├── APIResponseValidationError     a 2xx whose body is not the documented shape
├── SpendFailedError               a metered block's work succeeded, its spend did not
└── SpendJournalError              the spend journal cannot be opened or written
```

Arguments that can never be valid (`units=0`, an empty tool name) are not sent at all:
they raise the builtin `ValueError` or `TypeError` before any request, as Python does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final, TypedDict

import httpx

from ._printable import printable

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = [
    "APIConnectionError",
    "APIError",
    "APIResponseValidationError",
    "APITimeoutError",
    "AmaiError",
    "AuthenticationError",
    "ForbiddenError",
    "InsufficientCreditsError",
    "RateLimitError",
    "ServerError",
    "SpendFailedError",
    "SpendJournalError",
]

# What a notebook's table of an error shows, in this order, for the attributes an error
# has and knows. An allowlist, so that `response` (whose request carries the API key in
# its Authorization header) can never be shown.
_HTML_FIELDS: Final = (
    "status_code",
    "error",
    "message",
    "cost_tokens",
    "balance",
    "retry_after",
    "request_id",
    "tool",
    "units",
    "reference",
    "journaled",
    "body",
)


class AmaiError(Exception):
    """Base class of every exception the SDK raises.

    Catch this to handle any failure of the SDK in one place.

    Attributes:
        message: A human-readable description of what went wrong.
        reference: For an error from `spend()`: the reference that was sent. The
            outcome of a failed spend may be unclear (the connection broke after the
            server charged); replaying it with this reference charges exactly once.
            `None` for other errors.
    """

    message: str
    reference: str | None = None

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message + self._context()

    def _context(self) -> str:
        """` (request_id=…, reference=…)`: what a log line needs to trace the call."""
        pairs = (("request_id", getattr(self, "request_id", None)), ("reference", self.reference))
        # The request id is a header of the server's: shown escaped, kept as it came.
        shown = [f"{name}={printable(value)}" for name, value in pairs if value]
        return f" ({', '.join(shown)})" if shown else ""

    def _repr_html_(self) -> str:
        """What the error knows, as a small HTML table for notebooks; never its response."""
        from ._html import html_table

        known = ((name, getattr(self, name, None)) for name in _HTML_FIELDS)
        return html_table(type(self).__name__, [(n, v) for n, v in known if v is not None])

    def __reduce__(self) -> tuple[Any, ...]:
        # Rebuilt from the message and attributes, so that errors cross process
        # boundaries (multiprocessing, concurrent.futures). The httpx response stays
        # behind: its request carries the Authorization header. So does a cause that is
        # not the SDK's own (an httpx error holds its request too): it travels as a
        # plain Exception with its type and message, so the chain still reads the same.
        state: dict[str, Any] = dict(self.__dict__)
        if "response" in state:
            state["response"] = None
        cause = self.__cause__
        if isinstance(cause, AmaiError):
            state["__cause__"] = cause
        elif cause is not None:
            kind = type(cause)
            state["__cause__"] = Exception(f"{kind.__module__}.{kind.__qualname__}: {cause}")
        return (_rebuild, (type(self), self.message), state)


def _rebuild(cls: type[AmaiError], message: str) -> AmaiError:
    error = cls.__new__(cls)
    AmaiError.__init__(error, message)
    return error


class _AnswerDetails(TypedDict, total=False):
    """What an error made from an HTTP answer carries besides its status."""

    body: object
    request_id: str | None
    response: httpx.Response | None


class _ErrorDetails(_AnswerDetails, total=False):
    """What an `APIError` carries besides its status."""

    error: str | None
    retry_after: float | None


class APIError(AmaiError):
    """The server answered with an error status.

    `str(error)` gives one log line with the status, the stable error string and the
    request id, which is everything a support ticket needs. Text from the server is
    shown with its control characters escaped, as `repr()` escapes them, so that it can
    neither break the line nor drive a terminal; `body`, `error` and `request_id` keep
    what the server sent, except the request's own key, shown as `[API key]` wherever
    the server echoed it (only `response` holds the answer as it came).

    Attributes:
        status_code: The HTTP status of the answer.
        error: The stable error string from the body (`"insufficient_credits"`), or
            `None` when the body carried none (an HTML error page from the edge).
        body: The parsed JSON body, or its text when it was not JSON.
        request_id: The `cf-ray` or `x-request-id` header of the answer, if present.
        response: The `httpx.Response` itself, when there was one.
        retry_after: How long the server asked to wait before trying again, in seconds
            (`Retry-After` or `retry-after-ms`), or `None` if it did not say.
    """

    status_code: int
    error: str | None
    body: object
    request_id: str | None
    response: httpx.Response | None
    retry_after: float | None

    def __init__(
        self, message: str, *, status_code: int, **details: Unpack[_ErrorDetails]
    ) -> None:
        super().__init__(message)
        _keep_answer(self, status_code, details)
        self.error = details.get("error")
        self.retry_after = details.get("retry_after")

    def __str__(self) -> str:
        label = printable(self.error) if self.error else _reason_phrase(self.status_code)
        return f"{self.status_code} {label}: {self.message}{self._context()}"

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(status_code={self.status_code}, error={self.error!r}, "
            f"request_id={self.request_id!r})"
        )


class AuthenticationError(APIError):
    """401 `auth_required`: the API key is missing, malformed or revoked.

    Retrying cannot help: check `AMAI_API_KEY`, or create a new key if it was revoked.
    """


class InsufficientCreditsError(APIError):
    """402 `insufficient_credits`: the balance does not cover the cost.

    Attributes:
        cost_tokens: What the call would have cost, in tokens, when the server said.
        balance: The balance at the time, in tokens, when the server said.
    """

    cost_tokens: int | None
    balance: int | None

    def __init__(
        self,
        message: str,
        *,
        status_code: int = 402,
        cost_tokens: int | None = None,
        balance: int | None = None,
        **details: Unpack[_ErrorDetails],
    ) -> None:
        details.setdefault("error", "insufficient_credits")
        super().__init__(message, status_code=status_code, **details)
        self.cost_tokens = cost_tokens
        self.balance = balance


class ForbiddenError(APIError):
    """403 `forbidden`: CSRF mismatch, a blocked region, or a suspended account."""


class RateLimitError(APIError):
    """429 `rate_limited`: too many requests.

    The SDK retries these by itself; this is raised once the retries are used up, or at
    once when the server asks for a longer wait than the client's `max_retry_after`.
    `retry_after` tells how long the server asked to wait, in seconds, or is `None`.
    """


class ServerError(APIError):
    """A 5xx answer: the server or the edge in front of it failed. Retried by the SDK."""


class APIConnectionError(AmaiError):
    """No usable answer arrived: DNS failure, connection refused or reset, a broken answer.

    The request may or may not have reached the server. Both endpoints are safe to
    repeat (check never charges, and spend is idempotent by its reference), which is
    why the SDK retries these, except the failures no retry can fix: a certificate that
    cannot be verified, a host name that does not exist, a closed event loop. Those are
    raised at once, with a message that says what to change.

    Attributes:
        retryable: `False` for a failure that no retry can fix; the SDK did not retry it.
    """

    retryable: bool

    def __init__(self, message: str, *, retryable: bool = True) -> None:
        super().__init__(message)
        self.retryable = retryable


class APITimeoutError(APIConnectionError):
    """No answer arrived within the client's timeout, or the call's `total_timeout` ran out.

    An answer's body, too, must be whole within the `read` timeout of its headers (and
    before the `total_timeout`): one that a server drips a byte at a time ends here.

    A call whose `total_timeout` is spent is not retried (`retryable` is `False`).
    """


class APIResponseValidationError(AmaiError):
    """A successful (2xx) answer whose body is not the documented shape.

    Not retried: the server did answer, and for a spend it may well have charged. Keep
    the reference and replay the spend later; it will not charge twice.

    Attributes:
        status_code: The HTTP status of the answer.
        body: The parsed JSON body, or its text when it was not JSON.
        request_id: The `cf-ray` or `x-request-id` header of the answer, if present.
        response: The `httpx.Response` itself.
    """

    status_code: int
    body: object
    request_id: str | None
    response: httpx.Response | None

    def __init__(
        self, message: str, *, status_code: int, **details: Unpack[_AnswerDetails]
    ) -> None:
        super().__init__(message)
        _keep_answer(self, status_code, details)

    def __str__(self) -> str:
        return f"{self.status_code}: {self.message}{self._context()}"


class SpendFailedError(AmaiError):
    """The work in a metered block succeeded, but its spend did not go through.

    The work is done and may not be paid for yet: replay the spend, which charges
    exactly once however many times it is sent.

    ```python
    except SpendFailedError as e:
        client.spend(e.tool, e.units, reference=e.reference)
    ```

    `__cause__` is the error that ended the spend: an `InsufficientCreditsError` when
    the balance fell since the quote, an `APIConnectionError` when the retries ran
    out, and so on.

    Attributes:
        tool: The tool that did the work.
        units: The units that were to be charged.
        reference: The idempotency key of the spend; replaying with it is always safe.
        journaled: Whether the spend stays pending in the client's spend journal, where
            `replay_pending()` will send it again.
    """

    tool: str
    units: int | float
    reference: str
    journaled: bool

    def __init__(
        self, *, tool: str, units: int | float, reference: str, cause: AmaiError, journaled: bool
    ) -> None:
        replay = f"client.spend({tool!r}, {units!r}, reference={reference!r})"
        where = " It stays pending in the spend journal." if journaled else ""
        super().__init__(
            f"the work in metered({tool!r}, units={units!r}) succeeded but its spend "
            f"failed: {cause}.{where} Replay it with {replay}, which charges exactly once"
        )
        self.tool = tool
        self.units = units
        self.reference = reference
        self.journaled = journaled

    def __str__(self) -> str:
        # The message already names the reference, and the cause its request id.
        return self.message


class SpendJournalError(AmaiError):
    """The spend journal cannot be opened, read or written.

    Raised when a client is built with a `spend_journal` that is corrupt, not a spend
    journal, or in a place the process cannot write: the journal is never silently
    turned off.
    """


def _keep_answer(
    error: APIError | APIResponseValidationError, status_code: int, details: _AnswerDetails
) -> None:
    """Store on `error` what it knows of the answer it was made from."""
    error.status_code = status_code
    error.body = details.get("body")
    error.request_id = details.get("request_id")
    error.response = details.get("response")


def _reason_phrase(status_code: int) -> str:
    return httpx.codes.get_reason_phrase(status_code) or "error"


# Raised to callers who may not have used a name of the package yet (it loads with the
# first call, not with the client): the classes take their public path here, so that a
# traceback shows `amaimedia.APIError` whichever way the error came.
for _name in __all__:
    globals()[_name].__module__ = "amaimedia"
del _name
