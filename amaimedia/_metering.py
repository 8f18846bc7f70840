"""What the sync and async metered blocks share: every step that does no network I/O."""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeAlias

import httpx

from ._exceptions import (
    AmaiError,
    InsufficientCreditsError,
    SpendFailedError,
    SpendJournalError,
)
from ._logging import logger
from ._meter import Meter, PendingSpend
from ._models import Charge, Quote, SpendRequest
from ._references import new_reference
from ._types import Units

if TYPE_CHECKING:
    from ._journal import SpendJournal

__all__ = [
    "ReferenceArgument",
    "decorator_reference",
    "entry_spend_failed",
    "fixed_reference",
    "insufficient_quote",
    "journal_add",
    "journal_done",
    "journal_failed",
    "journal_scope",
    "log_charge",
    "require_function",
    "spend_failed",
]

ReferenceArgument: TypeAlias = "str | Callable[..., str] | None"


def fixed_reference(tool: str, units: Units, reference: ReferenceArgument) -> str:
    """The block's reference, validated with its tool and units before any request."""
    if callable(reference):
        raise TypeError(
            "a reference callable derives references from a decorated function's "
            "arguments; in a with-block pass the reference itself (a str)"
        )
    return SpendRequest.from_arguments(
        tool=tool, units=units, reference=new_reference() if reference is None else reference
    ).reference


def check_reference_argument(reference: ReferenceArgument) -> None:
    """Refuse, when `metered()` is called, a reference of a type it can never use."""
    if reference is not None and not isinstance(reference, str) and not callable(reference):
        raise TypeError(
            "reference must be a str, a callable that returns one, or None; "
            f"got {type(reference).__name__}"
        )


def decorator_reference(reference: ReferenceArgument) -> Callable[..., str] | None:
    """The decorator's way to a reference: derived per call, or generated per call."""
    if isinstance(reference, str):
        raise TypeError(
            f"a decorated function runs many times, and with the fixed reference "
            f"{reference!r} every call after the first would be free: pass a callable that "
            "derives the reference from the call's arguments, or leave it out"
        )
    return reference


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


def log_charge(meter: Meter, charge: Charge) -> None:
    """One DEBUG line per metered block that was charged."""
    logger.debug(
        "metered %s x%s charged %d tokens (reference=%s)",
        meter.tool,
        meter.units,
        charge.charged,
        meter.reference,
    )


def journal_add(journal: SpendJournal, scope: str, meter: Meter) -> int | None:
    """Commit the block's spend as pending; `None` if that failed.

    A journal that cannot be written does not stop the spend: sending it is the best
    chance the charge has. The failure is logged, and a `SpendFailedError` raised later
    says the spend was not journaled.
    """
    try:
        return journal.add(scope, meter.tool, meter.units, meter.reference)
    except SpendJournalError as exc:
        logger.warning("the spend %s is sent without a journal entry: %s", meter.reference, exc)
        return None


def journal_done(journal: SpendJournal, entry: int, charge: Charge) -> None:
    """Mark an entry done and release it.

    A failure to write is logged, not raised: the server has the charge, and a later
    replay of the entry would charge nothing.
    """
    try:
        journal.mark_done(entry, charge.charged)
    except SpendJournalError as exc:
        logger.warning("the spend %s was charged but stays pending: %s", charge.reference, exc)
    finally:
        journal.release(entry)


def journal_failed(journal: SpendJournal, entry: int, error: AmaiError) -> None:
    """Record a failed attempt on an entry, which stays pending, and release it."""
    try:
        journal.mark_failed(entry, error)
    except SpendJournalError as exc:
        logger.warning("could not record the failure of a pending spend: %s", exc)
    finally:
        journal.release(entry)


def entry_spend_failed(spend: PendingSpend, error: AmaiError) -> None:
    """Report a replayed spend that failed again; it stays pending."""
    logger.warning(
        "the pending spend %s x%s (reference=%s) failed again and stays in the journal: %s",
        spend.tool,
        spend.units,
        spend.reference,
        error,
    )


def journal_scope(api_key: str, base_url: httpx.URL) -> str:
    """Which account and API an entry belongs to: a hash, never the key itself.

    The URL is taken as requests use it, so `https://api.amaimedia.com/` and
    `https://api.amaimedia.com` are one API.
    """
    root = str(base_url).rstrip("/")
    return hashlib.sha256(f"{root}\n{api_key}".encode()).hexdigest()[:32]
