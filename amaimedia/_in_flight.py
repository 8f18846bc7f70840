"""The attempts a connection pool has on the wire, so that closing it can wait for them.

Closing a pool under a request cuts it: a spend the server may already have charged would
end in a bare `RuntimeError` from httpx, with no reference to replay it by. So a client
that owns its pool closes it in three steps: it refuses new attempts (each raises
`APIConnectionError`, which carries a spend's reference like any other failure), waits
for the attempts already sent to end (each is bounded by the client's timeout, and so is
the wait), then closes the pool. An attempt that fails while the pool is closing is not
retried. Copies made by `with_options` share their original's pool, and so its
`InFlight`.

A sync client closed on a thread whose own attempt is in flight (a signal handler's
`close()`) does not wait for that one, which cannot end while the handler runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import weakref
from collections.abc import Callable
from types import TracebackType
from typing import Final

import httpx

from ._exceptions import APIConnectionError
from ._logging import logger
from ._tracebacks import forget_frames_holding

__all__ = ["InFlight"]

_UNKNOWN: Final = (
    "an earlier attempt of the call may have reached the server: a spend sent again with "
    "its reference never charges twice"
)


class InFlight:
    """Counts a pool's attempts in flight, and lets closing the pool wait for them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        # Attempts by thread: a sync close() does not wait for its own thread's.
        self._attempts: dict[int, int] = {}
        self._closing = False
        # Wake-ups of the async closers waiting for the pool to be idle.
        self._waiters: list[Callable[[], None]] = []
        _all.add(self)

    def attempt(self, request: httpx.Request, pool: httpx.Client | httpx.AsyncClient) -> Attempt:
        """A context manager around one attempt at sending `request` on `pool`.

        Entering it raises `APIConnectionError` when the pool is closing; a `RuntimeError`
        that leaves it once `pool` is closed (httpx's "the client has been closed", as
        when the owner of a pool of the caller's closed it) becomes one too.
        """
        return Attempt(self, request, pool)

    def begin(self, request: httpx.Request) -> None:
        """Count an attempt about to be sent; see `attempt()`.

        Raises:
            APIConnectionError: The pool is closing; nothing was counted or sent.
        """
        with self._lock:
            if self._closing:
                raise APIConnectionError(
                    f"{request.method} {request.url.path} was not sent: the client was "
                    f"closed while the call was in flight ({_UNKNOWN})",
                    retryable=False,
                )
            thread = threading.get_ident()
            self._attempts[thread] = self._attempts.get(thread, 0) + 1

    def end(self) -> None:
        """Count an attempt begun on this thread as ended."""
        with self._lock:
            thread = threading.get_ident()
            left = self._attempts.get(thread, 0) - 1
            if left > 0:
                self._attempts[thread] = left
            else:
                self._attempts.pop(thread, None)
            if self._attempts:
                return
            self._idle.notify_all()
            waiters, self._waiters = self._waiters, []
        for wake in waiters:
            wake()

    def close(self, timeout: httpx.Timeout) -> None:
        """Refuse new attempts, then wait for the other threads' attempts to end.

        Args:
            timeout: The pool's timeout: no wait is longer than one attempt can take.
        """
        thread = threading.get_ident()
        with self._lock:
            self._closing = True
            if not self._others(thread):
                return
            _log_wait(self._others(thread))
            if not self._idle.wait_for(lambda: not self._others(thread), _bound(timeout)):
                _log_cut(self._others(thread), timeout)

    async def aclose(self, timeout: httpx.Timeout) -> None:
        """`close()` for an async client: wait, without blocking the loop, for every attempt.

        Cancelled while it waits, it stops waiting (and the client closes its pool).
        """
        loop = asyncio.get_running_loop()
        idle: asyncio.Future[None] = loop.create_future()

        def wake() -> None:
            # The loop that waited may have ended (closed while this close() waited).
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_settle, idle)

        with self._lock:
            self._closing = True
            if not self._attempts:
                return
            _log_wait(sum(self._attempts.values()))
            self._waiters.append(wake)
        try:
            await asyncio.wait_for(idle, _bound(timeout))
        except asyncio.TimeoutError:
            with self._lock:
                _log_cut(sum(self._attempts.values()), timeout)
        finally:
            with self._lock:
                if wake in self._waiters:
                    self._waiters.remove(wake)

    def _others(self, thread: int) -> int:
        return sum(count for owner, count in self._attempts.items() if owner != thread)

    def _forget(self) -> None:  # pragma: no cover - runs in a forked child
        # The parent's threads, and their attempts, do not exist in the child; a lock one
        # of them held at the fork stays held there.
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._attempts = {}
        self._waiters = []


class Attempt:
    """One attempt counted by an `InFlight`: see `InFlight.attempt()`."""

    __slots__ = ("_in_flight", "_pool", "_request")

    def __init__(
        self, in_flight: InFlight, request: httpx.Request, pool: httpx.Client | httpx.AsyncClient
    ) -> None:
        self._in_flight = in_flight
        self._request = request
        self._pool = pool

    def __enter__(self) -> None:
        self._in_flight.begin(self._request)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._in_flight.end()
        if isinstance(exc, RuntimeError) and self._pool.is_closed:
            raise _closed_under(exc, self._request) from exc


def _closed_under(exc: RuntimeError, request: httpx.Request) -> APIConnectionError:
    scheme, _, key = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer":
        forget_frames_holding(exc, (key,), "the API key")
    return APIConnectionError(
        f"{request.method} {request.url.path} was not sent: its connection pool was closed "
        f"while the call was in flight ({_UNKNOWN})",
        retryable=False,
    )


def _bound(timeout: httpx.Timeout) -> float | None:
    """The longest one attempt can take under `timeout`: every phase's limit, summed."""
    limits = (timeout.connect, timeout.write, timeout.read, timeout.pool)
    finite = [limit for limit in limits if limit is not None]
    return sum(finite) if len(finite) == len(limits) else None


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _log_wait(count: int) -> None:
    logger.info("closing: waiting for %d request(s) in flight to end", count)


def _log_cut(count: int, timeout: httpx.Timeout) -> None:
    logger.warning(
        "closing the connection pool with %d request(s) still in flight after the longest "
        "an attempt can take (timeout=%s): they end with APIConnectionError, and a metered "
        "block's spend stays pending in its journal",
        count,
        timeout,
    )


_all: weakref.WeakSet[InFlight] = weakref.WeakSet()


def _forget_all() -> None:  # pragma: no cover - runs in a forked child
    for in_flight in list(_all):
        in_flight._forget()  # noqa: SLF001 - this module's own class


if hasattr(os, "register_at_fork"):  # pragma: no branch - every POSIX system
    os.register_at_fork(after_in_child=_forget_all)
