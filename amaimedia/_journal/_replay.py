"""What a replay of the journal sends, skips and reports: the age rules and `ReplayReport`.

The API does not say how long the server remembers a reference. A spend sent again after
the server forgot its reference would be charged a second time, so a replay leaves
entries older than `max_age` (7 days unless told otherwise) alone and reports them as
stale: they are never sent, and never deleted. Entries younger than `older_than` are
skipped too: they most likely belong to a block that is still running.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone
from typing import Final

from amaimedia._constants import DEFAULT_MAX_AGE
from amaimedia._models import Charge

from ._protocol import PendingSpend, RefusedSpend

__all__ = ["DEFAULT_MAX_AGE", "ReplayReport", "ReplayRules", "Seconds"]

Seconds = float | timedelta


class ReplayReport(list[Charge]):
    """What `replay_pending()` did: the charges it made, and what it left pending.

    It is the list of the `Charge`s of the spends that went through (as in 0.1), with
    the rest as attributes.

    Attributes:
        failed: Spends sent again that failed again; they stay pending with their error.
        stale: Spends older than `max_age`, not sent (the server may have forgotten their
            reference): settle them by hand, or replay them with a larger `max_age`.
        held: Spends another worker is sending right now, skipped.
        young: Spends younger than `older_than`, skipped: a block may still be running.
        refused: Pending rows that were not sent because the SDK cannot trust or read
            them: changed by someone without the key (their authentication code does not
            match), written by amaimedia 0.1 before rows were authenticated (until
            adopted), or malformed. Each is logged as a warning, and its `reason` says
            what to do; the row stays in the journal, with the reason as its `last_error`.
    """

    failed: list[PendingSpend]
    stale: list[PendingSpend]
    held: list[PendingSpend]
    young: list[PendingSpend]
    refused: list[RefusedSpend]

    def __init__(self) -> None:
        super().__init__()
        self.failed = []
        self.stale = []
        self.held = []
        self.young = []
        self.refused = []

    @property
    def charged(self) -> list[Charge]:
        """The charges made, as a plain list."""
        return list(self)

    @property
    def left_pending(self) -> int:
        """How many of the entries seen are still pending after the replay."""
        seen = (self.failed, self.stale, self.held, self.young, self.refused)
        return sum(len(spends) for spends in seen)

    def __repr__(self) -> str:
        return (
            f"ReplayReport(charged={len(self)}, failed={len(self.failed)}, "
            f"stale={len(self.stale)}, held={len(self.held)}, young={len(self.young)}, "
            f"refused={len(self.refused)})"
        )


class ReplayRules:
    """The age rules of one replay, checked before the journal is read.

    Args:
        max_age: Entries older than this are stale, reported and not sent; `None` sends
            every entry, however old (only when you know the server still remembers
            their references). Seconds, or a `timedelta`.
        older_than: Entries younger than this are skipped. Seconds, or a `timedelta`.

    Raises:
        TypeError: A value is neither a number of seconds nor a `timedelta`.
        ValueError: A value is negative, not finite, or `older_than` exceeds `max_age`.
    """

    __slots__ = ("max_age", "older_than")

    def __init__(
        self, max_age: Seconds | None = DEFAULT_MAX_AGE, older_than: Seconds = 0.0
    ) -> None:
        self.max_age = None if max_age is None else _duration("max_age", max_age)
        self.older_than = _duration("older_than", older_than)
        if self.max_age is not None and self.older_than > self.max_age:
            raise ValueError(
                f"older_than ({self.older_than}) exceeds max_age ({self.max_age}): "
                "no entry could be sent"
            )

    def sort(self, spend: PendingSpend, report: ReplayReport, now: datetime) -> bool:
        """Whether to send `spend`; if not, it is put in its place in `report`."""
        age = now - spend.created_at
        if age < self.older_than:
            report.young.append(spend)
            return False
        if self.max_age is not None and age > self.max_age:
            report.stale.append(spend)
            return False
        return True

    @staticmethod
    def now() -> datetime:
        """The time the ages of one replay are measured at (UTC)."""
        return datetime.now(timezone.utc)


def _duration(name: str, value: object) -> timedelta:
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    else:
        raise TypeError(
            f"{name} must be a number of seconds or a timedelta, got {type(value).__name__}"
        )
    if not math.isfinite(seconds) or not 0 <= seconds <= _LONGEST:
        raise ValueError(
            f"{name} must be a number of seconds from 0 to {_LONGEST:.0f}; got {value!r}"
        )
    return timedelta(seconds=seconds)


# A century: longer than any journal lives, and far inside what a timedelta can hold.
_LONGEST: Final = 100 * 365.25 * 86400
