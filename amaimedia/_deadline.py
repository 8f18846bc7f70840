"""`Deadline`: a call's `total_timeout`, every attempt and every wait between them included.

The client's `timeout` bounds each phase of one attempt (connecting, each read); with
retries and the waits between them, a call can take many times that. `total_timeout`
bounds the whole call. Before each attempt the time left is checked and every phase of
the attempt's timeout is cut to it; before each wait, a wait that would end past the
deadline is not started. Either way the call raises `APITimeoutError` at once.
"""

from __future__ import annotations

import time

import httpx

from ._exceptions import AmaiError, APITimeoutError

__all__ = ["Deadline"]


class Deadline:
    """When a call must be over; made when the call starts.

    Args:
        seconds: The call's `total_timeout`.
    """

    __slots__ = ("_ends", "_seconds", "attempts")

    def __init__(self, seconds: float) -> None:
        self._seconds = seconds
        self._ends = time.monotonic() + seconds
        self.attempts = 0

    def left(self) -> float:
        """Seconds until the deadline (0 or less once it passed)."""
        return self._ends - time.monotonic()

    def start_attempt(self, request: httpx.Request, timeout: httpx.Timeout) -> None:
        """Cut every phase of the attempt's timeout to the time left.

        Raises:
            APITimeoutError: No time is left.
        """
        request.extensions["timeout"] = self.attempt_timeout(timeout)

    def attempt_timeout(self, timeout: httpx.Timeout) -> dict[str, float | None]:
        """`start_attempt()`, for a request not built yet: the attempt's phases, cut.

        Returns:
            Each phase's limit, as an `httpx.Request`'s `timeout` extension holds them.

        Raises:
            APITimeoutError: No time is left.
        """
        left = self.left()
        if left <= 0:
            raise self.spent(None)
        self.attempts += 1
        return {
            phase: left if limit is None else min(limit, left)
            for phase, limit in timeout.as_dict().items()
        }

    def allows(self, wait: float) -> bool:
        """Whether a wait of `wait` seconds ends before the deadline."""
        return wait < self.left()

    def spent(self, last_failure: AmaiError | None) -> APITimeoutError:
        """The error for a call whose deadline has come (or would come during a wait)."""
        tried = f"after {self.attempts} attempt{'s' if self.attempts != 1 else ''}"
        last = "" if last_failure is None else f"; the last failed with: {last_failure}"
        return APITimeoutError(
            f"the call's total_timeout of {self._seconds:g} s is spent {tried}{last}",
            retryable=False,
        )
