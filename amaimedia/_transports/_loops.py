"""`PerLoop`: one async pool per event loop and process, closed when its loop ends.

An asyncio connection is bound to the event loop that opened it, and aiohttp sessions and
asyncio locks are too. A client kept at module level and used from one `asyncio.run()`
after another (a worker running each job in a fresh loop, a test suite with a loop per
test) would reuse a connection whose loop is gone and fail with `RuntimeError: Event loop
is closed`. So the SDK's async transports keep their state per running loop.

The state of a loop is closed on that loop when it ends: `asyncio.run()` (and any runner
that calls `loop.shutdown_asyncgens()`, as pytest-asyncio and uvloop do) closes the open
asynchronous generators first, and each state is watched by one. A loop closed without
that leaves its sockets for the garbage collector; the state is dropped when its loop is
found closed. In a forked child, the parent's states are abandoned (see `_fork.py`).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Generic, TypeVar

from ._fork import ForkSafeLock, abandon, generation

__all__ = ["PerLoop"]

_S = TypeVar("_S")


class PerLoop(Generic[_S]):
    """The state of each running event loop, made on first use and closed with the loop.

    Args:
        prepare: Awaited before a new state is made, for the slow, blocking part of
            making one (loading certificates, importing aiohttp) off the loop.
        create: Makes a new state, without waiting on anything.
        close: Closes a state, on its own loop.
    """

    def __init__(
        self,
        prepare: Callable[[], Awaitable[None]],
        create: Callable[[], _S],
        close: Callable[[_S], Awaitable[None]],
    ) -> None:
        self._prepare = prepare
        self._create = create
        self._close = close
        self._lock = ForkSafeLock()
        self._generation = generation()
        self._states: dict[asyncio.AbstractEventLoop, tuple[_S, AsyncGenerator[None, None]]] = {}
        # The last state looked up, with its loop and process generation: most calls come
        # from the loop of the call before, and find it here without the lock.
        self._last: tuple[asyncio.AbstractEventLoop, int, _S] | None = None

    async def get(self) -> _S:
        """The running loop's state, made now if it has none."""
        loop = asyncio.get_running_loop()
        last = self._last
        if last is not None and last[0] is loop and last[1] == generation():
            return last[2]
        found = self._lookup(loop)
        if found is not None:
            return found
        await self._prepare()
        with self._lock:
            # Another task of this loop may have made it while this one was preparing.
            entry = self._states.get(loop)
            if entry is not None:
                return entry[0]
            state = self._create()
            watcher = self._watch(loop, state)
            self._states[loop] = (state, watcher)
        # Runs to the generator's first `yield` at once, which is when the loop starts to
        # track it for shutdown_asyncgens().
        await watcher.__anext__()
        return state

    def _lookup(self, loop: asyncio.AbstractEventLoop) -> _S | None:
        with self._lock:
            if self._generation != generation():
                abandon(self._states)
                self._states = {}
                self._generation = generation()
            for other in [other for other in self._states if other.is_closed()]:
                # Closed without shutdown_asyncgens(): nothing can close its state now.
                del self._states[other]
                self._last = None
            entry = self._states.get(loop)
            if entry is None:
                return None
            # Under the lock: a state that aclose() took away is never remembered.
            self._last = (loop, self._generation, entry[0])
            return entry[0]

    async def _watch(
        self, loop: asyncio.AbstractEventLoop, state: _S
    ) -> AsyncGenerator[None, None]:
        try:
            yield
        finally:
            with self._lock:
                entry = self._states.get(loop)
                if entry is not None and entry[0] is state:
                    del self._states[loop]
                    self._last = None
            await self._close(state)

    async def aclose(self) -> None:
        """Close the running loop's state, and forget those of loops that have ended.

        The state of a loop still running in another thread is closed there, soon.
        """
        current = asyncio.get_running_loop()
        with self._lock:
            if self._generation != generation():
                abandon(self._states)
                self._states = {}
            entries, self._states = self._states, {}
            self._last = None
        for loop, (_, watcher) in entries.items():
            if loop is current:
                await watcher.aclose()
            elif not loop.is_closed():
                asyncio.run_coroutine_threadsafe(_finish(watcher), loop)


async def _finish(watcher: AsyncGenerator[None, None]) -> None:
    await watcher.aclose()
