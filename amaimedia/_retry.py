"""The retry rule: which failures are retried, how long to wait, and the log line.

The decisions are small pure functions (`should_retry`, `retry_wait`) that tests call
directly; `RetryPolicy` wires them into tenacity for the sync and async clients.

A client makes a request's first attempt itself, without tenacity: almost every request
succeeds at once, and building a tenacity loop costs more than the rest of the SDK's own
work on a call. Only when that attempt fails in a way worth retrying does the client hand
the request to `RetryPolicy.retry` (or `async_retry`), which imports tenacity and runs
the rest: tenacity counts the failure the client saw as its own first attempt, so the
waits, the attempt numbers and the log lines are those of a loop that made every attempt.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, TypedDict, TypeVar

from ._constants import INITIAL_RETRY_DELAY, MAX_RETRY_DELAY
from ._exceptions import AmaiError, APIConnectionError, APIError
from ._logging import logger

if TYPE_CHECKING:
    import tenacity

    from ._deadline import Deadline

__all__ = ["RETRYABLE_STATUS_CODES", "RetryPolicy", "retry_wait", "should_retry"]

_T = TypeVar("_T")

# 408 and 429 ask the client to come back later; 5xx are failures of the server or edge.
# Retrying is safe on both endpoints: check never charges, spend is idempotent by reference.
RETRYABLE_STATUS_CODES: Final = frozenset({408, 429})


def should_retry(exc: BaseException, *, max_retry_after: float) -> bool:
    """Whether a failed attempt is worth another.

    Retried: connection failures and timeouts, 408, 429 and 5xx, unless the server asked
    for a wait longer than `max_retry_after`, which is raised at once instead. Never
    retried: a connection failure no retry can fix (`retryable` is `False`: a certificate
    that cannot be verified, an unknown host, a spent `total_timeout`), every other
    status, a malformed 2xx body, and anything not from the SDK.
    """
    if isinstance(exc, APIConnectionError):
        return exc.retryable
    if not isinstance(exc, APIError):
        return False
    if exc.status_code not in RETRYABLE_STATUS_CODES and exc.status_code < 500:
        return False
    return exc.retry_after is None or exc.retry_after <= max_retry_after


def retry_wait(exc: BaseException | None, attempt: int, *, jitter: float) -> float:
    """Seconds to wait after failed attempt number `attempt` (1 for the first).

    The server's own `Retry-After` wins when given. Otherwise the wait doubles from
    about 0.5 s up to 8 s, less a random part of up to a quarter (`jitter` in [0, 1)),
    so that many clients failing together do not come back together.
    """
    if isinstance(exc, APIError) and exc.retry_after is not None:
        return exc.retry_after
    delay = min(MAX_RETRY_DELAY, INITIAL_RETRY_DELAY * 2.0 ** (attempt - 1))
    return delay * (1 - 0.25 * jitter)


class _TenacityOptions(TypedDict):
    stop: tenacity.stop.stop_base
    retry: Callable[[tenacity.RetryCallState], bool]
    wait: Callable[[tenacity.RetryCallState], float]
    before_sleep: Callable[[tenacity.RetryCallState], None]
    reraise: bool


@dataclass(frozen=True)
class RetryPolicy:
    """How many times, and for how long, a client retries a request."""

    max_retries: int
    max_retry_after: float

    def retries(self, first_failure: BaseException) -> bool:
        """Whether a request whose first attempt raised `first_failure` is tried again.

        The same decision tenacity makes after an attempt: worth retrying, and attempts
        left. When it is `False`, the caller raises the failure as it is.
        """
        return self.max_retries > 0 and self._retry_exception(first_failure)

    def _retry_exception(self, exc: BaseException) -> bool:
        # should_retry is looked up at call time, so that tests can replace it.
        return should_retry(exc, max_retry_after=self.max_retry_after)

    def _retry(self, state: tenacity.RetryCallState) -> bool:
        exc = _failure(state)
        return exc is not None and self._retry_exception(exc)

    def _options(
        self,
        what: str,
        deadline: Deadline | None,
        on_retry: Callable[[BaseException, float], None] | None,
    ) -> _TenacityOptions:
        import tenacity

        def wait(state: tenacity.RetryCallState) -> float:
            exc = _failure(state)
            seconds = retry_wait(exc, state.attempt_number, jitter=random.random())
            if deadline is not None and not deadline.allows(seconds):
                # Waiting would end past the call's deadline: give up now, not after it.
                last = exc if isinstance(exc, AmaiError) else None
                raise deadline.spent(last) from exc
            return seconds

        def log(state: tenacity.RetryCallState) -> None:
            exc = _failure(state)
            seconds = state.next_action.sleep if state.next_action else 0.0
            logger.info(
                "Retrying %s in %.2f s (attempt %d of %d) after: %s",
                what,
                seconds,
                state.attempt_number + 1,
                self.max_retries + 1,
                exc,
            )
            if on_retry is not None and exc is not None:
                on_retry(exc, seconds)

        return {
            "stop": tenacity.stop_after_attempt(self.max_retries + 1),
            "retry": self._retry,
            "wait": wait,
            "before_sleep": log,
            # The caller sees the SDK's own exception, never tenacity's RetryError.
            "reraise": True,
        }

    def retry(
        self,
        attempt: Callable[[], _T],
        first_failure: BaseException,
        *,
        sleep: Callable[[float], None],
        what: str,
        deadline: Deadline | None = None,
        on_retry: Callable[[BaseException, float], None] | None = None,
    ) -> _T:
        """Retry a sync request whose first attempt failed with `first_failure`.

        Args:
            attempt: Makes one more attempt: returns the result, or raises.
            first_failure: What the client's own first attempt raised.
            sleep: Waits between attempts.
            what: Names the request in log lines (`POST /api/v1/tools/check`).
            deadline: The call's `total_timeout`, if it has one: a wait that would
                end past it raises `APITimeoutError` instead of starting.
            on_retry: Told of each failed attempt, and the wait before the next one,
                before the wait.

        Returns:
            The result of the first attempt that succeeds.

        Raises:
            AmaiError: The last failure, once no retry is left or worth making.
        """
        import tenacity

        retrying = tenacity.Retrying(sleep=sleep, **self._options(what, deadline, on_retry))
        return retrying(_after(first_failure, attempt))

    async def async_retry(
        self,
        attempt: Callable[[], Awaitable[_T]],
        first_failure: BaseException,
        *,
        sleep: Callable[[float], Awaitable[None]],
        what: str,
        deadline: Deadline | None = None,
        on_retry: Callable[[BaseException, float], None] | None = None,
    ) -> _T:
        """`retry` for an async request; `attempt` and `sleep` are awaited."""
        import tenacity

        following = _after(first_failure, attempt)

        async def attempts() -> _T:
            return await following()

        retrying = tenacity.AsyncRetrying(sleep=sleep, **self._options(what, deadline, on_retry))
        return await retrying(attempts)


def _after(first_failure: BaseException, attempt: Callable[[], _T]) -> Callable[[], _T]:
    """`attempt`, except that its first call raises `first_failure` instead.

    That first call is tenacity's attempt 1: the one the client already made.
    """
    made = [first_failure]

    def call() -> _T:
        if made:
            raise made.pop()
        return attempt()

    return call


def _failure(state: tenacity.RetryCallState) -> BaseException | None:
    """What the attempt raised, or `None` if it returned."""
    return state.outcome.exception() if state.outcome else None
