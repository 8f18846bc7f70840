"""The thread of a reservation book: its requests, run in order, on its own connection.

A book's `release()` may be called on an event loop (`meter.cancel()`) or from a block's
`__exit__`, and must never wait for the database: so each book hands its requests to one
thread of its own, which owns the book's connection. Admissions are waited for, releases
are not.

A book no longer used is stopped by its finalizer, which may run in any thread, in the
middle of anything (a garbage collection): so stopping takes no lock and waits for
nothing, it only queues the end (`queue.SimpleQueue` is made to be safe there). At
interpreter exit the threads still running are stopped and waited for a moment, so that
their connections are closed before the interpreter goes.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import queue
import threading
import weakref
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, Final, TypeVar

from amaimedia._logging import logger

__all__ = ["BookThread"]

_T = TypeVar("_T")
# How long interpreter exit waits for each book's thread to close its connection.
_EXIT_WAIT_S: Final = 2.0


class BookThread:
    """One thread that runs a book's requests in order.

    It holds no reference to its book (only to what it is given), so that a book no longer
    used is collected, and its thread stopped.

    Args:
        name: The thread's name.
        on_stop: Run in the thread as it ends: closes the connection.
        on_idle: Run in the thread after `idle_after()` seconds without a request
            (`None`: wait for requests only).
        idle_after: How long to wait for a request before `on_idle`, asked before each wait.
    """

    def __init__(
        self,
        name: str,
        on_stop: Callable[[], None],
        on_idle: Callable[[], None] | None = None,
        idle_after: Callable[[], float | None] = lambda: None,
    ) -> None:
        self._name = name
        self._on_stop = on_stop
        self._on_idle = on_idle
        self._idle_after = idle_after
        self._requests: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._started = threading.Lock()
        self._pid = os.getpid()
        _running.add(self)

    def ask(self, call: Callable[..., _T], *arguments: Any) -> _T:
        """Run `call` in the thread and wait for its result (or its exception)."""
        done: Future[_T] = Future()

        def request() -> None:
            try:
                done.set_result(call(*arguments))
            except BaseException as exc:
                done.set_exception(exc)

        self._send(request)
        return done.result()

    def tell(self, call: Callable[..., object], *arguments: Any) -> None:
        """Run `call` in the thread without waiting; its failures are logged only."""

        def request() -> None:
            try:
                call(*arguments)
            except Exception as exc:  # the reservation then ends with this process
                logger.debug("the reservation book could not end a reservation: %s", exc)

        with contextlib.suppress(RuntimeError):  # interpreter exit: no new thread
            self._send(request)

    def _send(self, request: Callable[[], None]) -> None:
        with self._started:
            if self._thread is None or not self._thread.is_alive():
                # A daemon thread, so that it never holds up an exit; `_stop_all` closes
                # its connection then.
                self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._thread.start()
        self._requests.put(request)

    def stop(self) -> None:
        """Queue the thread's end: no lock, no wait (a finalizer may call it anywhere)."""
        if os.getpid() == self._pid:  # a forked child: the parent's thread is not here
            self._requests.put(None)

    def join(self, timeout: float) -> None:
        """Wait for the thread to end, at most `timeout` seconds."""
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def _run(self) -> None:
        while True:
            try:
                request = self._requests.get(timeout=self._idle_after())
            except queue.Empty:
                if self._on_idle is not None:  # pragma: no branch - a timeout needs one
                    self._on_idle()
                continue
            if request is None:
                self._on_stop()
                return
            request()


_running: weakref.WeakSet[BookThread] = weakref.WeakSet()


def _stop_all() -> None:
    pid = os.getpid()
    threads = [thread for thread in list(_running) if thread._pid == pid]  # noqa: SLF001
    for thread in threads:
        thread.stop()
    for thread in threads:
        thread.join(_EXIT_WAIT_S)


atexit.register(_stop_all)
