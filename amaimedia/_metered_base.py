"""What the sync and async metered blocks share: every step that does no network I/O.

`MeteredArguments` is where `metered()`'s arguments are checked, once, when it is called:
a bad tool, units or reference fails before any request, and a decorator with one fails
at import time rather than at the first call.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeAlias

from ._exceptions import AmaiError, InsufficientCreditsError, SpendFailedError
from ._meter import Meter
from ._models import CheckRequest, Quote, SpendRequest
from ._references import new_reference
from ._types import Units

__all__ = [
    "MeteredArguments",
    "ReferenceArgument",
    "insufficient_quote",
    "require_function",
    "spend_failed",
]

ReferenceArgument: TypeAlias = "str | Callable[..., str] | None"


@dataclass(frozen=True)
class MeteredArguments:
    """The validated arguments of one `metered()` call: what to meter, and how to name it.

    Attributes:
        tool: The tool doing the work.
        units: The expected amount of work.
        reference: A fixed reference, a callable that derives one from a decorated
            function's arguments, or `None` for a fresh one per block.
    """

    tool: str
    units: Units
    reference: ReferenceArgument = None

    @classmethod
    def validate(cls, tool: str, units: Units, reference: ReferenceArgument) -> MeteredArguments:
        """Check every argument before any request.

        Raises:
            ValueError: An argument has an impossible value.
            TypeError: An argument has the wrong type.
        """
        if isinstance(reference, str):
            request: CheckRequest | SpendRequest = SpendRequest.from_arguments(
                tool=tool, units=units, reference=reference
            )
        else:
            if reference is not None and not callable(reference):
                raise TypeError(
                    "reference must be a str, a callable that returns one, or None; "
                    f"got {type(reference).__name__}"
                )
            request = CheckRequest.from_arguments(tool=tool, units=units)
        return cls(request.tool, request.units, reference)

    def block_reference(self) -> str:
        """The reference of a with-block: the one given, or a fresh one.

        Raises:
            TypeError: The reference is a callable, which only a decorator can call.
        """
        if callable(self.reference):
            raise TypeError(
                "a reference callable derives references from a decorated function's "
                "arguments; in a with-block pass the reference itself (a str)"
            )
        return new_reference() if self.reference is None else self.reference

    def per_call(self) -> Callable[..., MeteredArguments]:
        """For the decorator: the arguments of each call's own block.

        Each call gets the reference derived from its arguments (checked then), or a
        fresh one.

        Raises:
            TypeError: The reference is a fixed str: every call after the first would be
                a free replay.
        """
        derive = self.reference
        if isinstance(derive, str):
            raise TypeError(
                f"a decorated function runs many times, and with the fixed reference "
                f"{derive!r} every call after the first would be free: pass a callable that "
                "derives the reference from the call's arguments, or leave it out"
            )
        if derive is None:
            return lambda *args, **kwargs: self

        def for_call(*args: object, **kwargs: object) -> MeteredArguments:
            reference = derive(*args, **kwargs)
            checked = SpendRequest.from_arguments(
                tool=self.tool, units=self.units, reference=reference
            )
            return MeteredArguments(self.tool, self.units, checked.reference)

        return for_call


def insufficient_quote(tool: str, units: Units, quote: Quote) -> InsufficientCreditsError:
    """The error for a quote that says the balance does not cover the work.

    It is the same class as a 402 from the server, so one `except` handles both.
    """
    return InsufficientCreditsError(
        f"the balance does not cover {tool} x{units}: it costs {quote.cost_tokens} tokens "
        "(the check answered allowed=false); top up at amaimedia.com/credits",
        body=quote.model_dump(),
        cost_tokens=quote.cost_tokens,
    )


def require_function(function: object, *, is_async: bool, client: str) -> None:
    """Refuse to decorate what the client cannot meter: the wrong kind of function."""
    if not callable(function):
        raise TypeError(f"metered() decorates a function, got {type(function).__name__}")
    if inspect.iscoroutinefunction(function) != is_async:
        wanted = "coroutine functions (async def)" if is_async else "plain functions (def)"
        other = "AmaiClient" if is_async else "AsyncAmaiClient"
        raise TypeError(
            f"{client}.metered() decorates {wanted}; use {other}.metered() for "
            f"{getattr(function, '__qualname__', function)!r}"
        )


def spend_failed(meter: Meter, cause: AmaiError, *, journaled: bool) -> SpendFailedError:
    """The error raised when a metered block's spend finally failed."""
    return SpendFailedError(
        tool=meter.tool,
        units=meter.units,
        reference=meter.reference,
        cause=cause,
        journaled=journaled,
    )
