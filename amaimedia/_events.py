"""`Hooks` and the events they receive: watching the calls without OpenTelemetry.

A client built with `hooks=Hooks(on_charge=...)` calls each hook, in the calling thread
(or on the event loop, for the async client), at one point of every `check()` and
`spend()`, metered blocks and replays included:

- `on_request`, before each attempt is sent;
- `on_response`, when an attempt ended: answered, or failed without an answer;
- `on_retry`, before the client waits to try again;
- `on_charge`, once a spend went through.

An event tells what the call is about (tool, units, reference), never the key or a
header. A hook that raises is logged as a warning and ignored: it never breaks a call,
and never a charge.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, TypeAlias

from ._types import Units

__all__ = [
    "ChargeEvent",
    "Hooks",
    "Operation",
    "RequestEvent",
    "ResponseEvent",
    "RetryEvent",
]

Operation: TypeAlias = Literal["check", "spend"]


@dataclass(frozen=True, slots=True)
class RequestEvent:
    """An attempt about to be sent (`Hooks.on_request`).

    Attributes:
        operation: `"check"` or `"spend"`.
        tool: The tool of the call.
        units: Its units.
        reference: The spend's reference; `None` for a check.
        attempt: 1 for the first attempt, 2 for the first retry, and so on.
    """

    operation: Operation
    tool: str
    units: Units
    reference: str | None
    attempt: int


@dataclass(frozen=True, slots=True)
class ResponseEvent:
    """An attempt that ended (`Hooks.on_response`).

    Attributes:
        operation: `"check"` or `"spend"`.
        tool: The tool of the call.
        units: Its units.
        reference: The spend's reference; `None` for a check.
        attempt: Which attempt it was (1 for the first).
        status_code: The answer's HTTP status; `None` when no answer came (a connection
            error, a timeout).
        request_id: The server's id of the request, when it sent one.
        error: What the attempt raised (the SDK's exception), or `None` if it succeeded.
        elapsed: How long the attempt took, in seconds.
    """

    operation: Operation
    tool: str
    units: Units
    reference: str | None
    attempt: int
    status_code: int | None
    request_id: str | None
    error: BaseException | None
    elapsed: float


@dataclass(frozen=True, slots=True)
class RetryEvent:
    """A failed attempt that will be tried again (`Hooks.on_retry`).

    Attributes:
        operation: `"check"` or `"spend"`.
        tool: The tool of the call.
        units: Its units.
        reference: The spend's reference (every retry sends the same); `None` for a
            check.
        attempt: The attempt that failed (1 for the first).
        wait: The seconds the client waits before the next one.
        error: Why the attempt failed.
    """

    operation: Operation
    tool: str
    units: Units
    reference: str | None
    attempt: int
    wait: float
    error: BaseException


@dataclass(frozen=True, slots=True)
class ChargeEvent:
    """A spend that went through (`Hooks.on_charge`).

    Attributes:
        tool: The tool charged for.
        units: The units charged for.
        reference: The spend's reference.
        charged: The tokens charged (a replayed reference reports the original charge).
        balance_after: The balance after the charge, in tokens.
        request_id: The server's id of the request, when it sent one.
        attempts: How many attempts the spend took.
    """

    tool: str
    units: Units
    reference: str
    charged: int
    balance_after: int
    request_id: str | None
    attempts: int


@dataclass(frozen=True, slots=True)
class Hooks:
    """Callbacks a client calls as its requests go: pass as `AmaiClient(hooks=Hooks(...))`.

    Each is called with one event, synchronously; keep it quick (an async client runs it
    on its event loop), and make it a plain function, not an `async def` one. One that
    raises is logged as a warning and ignored.

    Attributes:
        on_request: Before each attempt is sent.
        on_response: When an attempt ended, answered or not.
        on_retry: Before the client waits to retry a failed attempt.
        on_charge: Once a spend went through.

    Raises:
        TypeError: A hook is not callable, or is a coroutine function.
    """

    on_request: Callable[[RequestEvent], object] | None = None
    on_response: Callable[[ResponseEvent], object] | None = None
    on_retry: Callable[[RetryEvent], object] | None = None
    on_charge: Callable[[ChargeEvent], object] | None = None

    def __post_init__(self) -> None:
        for name in ("on_request", "on_response", "on_retry", "on_charge"):
            hook = getattr(self, name)
            if hook is not None and not callable(hook):
                raise TypeError(f"Hooks({name}=...) must be callable, got {type(hook).__name__}")
            # Called without being awaited, an `async def` hook would never run: only a
            # RuntimeWarning, at garbage collection, would tell.
            if inspect.iscoroutinefunction(hook):
                raise TypeError(
                    f"Hooks({name}=...) must be a plain function, called synchronously; "
                    "got a coroutine function, whose body would never run"
                )
