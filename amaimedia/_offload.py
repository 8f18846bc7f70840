"""Blocking work from async code: the one place the async client leaves the event loop.

`scripts/unasync.py` turns `await run_in_thread(f, x)` (and `run_shielded`) into
`run_inline(f, x)`, and `claim_in_thread` into `claim_inline`, for the sync client, which
simply calls them.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import threading
from collections.abc import Callable
from typing import TypeVar

__all__ = ["claim_in_thread", "claim_inline", "run_in_thread", "run_inline", "run_shielded"]

_T = TypeVar("_T")


async def run_in_thread(function: Callable[..., _T], *args: object) -> _T:
    """Run blocking I/O (the spend journal's SQLite file) in a worker thread."""
    return await asyncio.to_thread(function, *args)


async def run_shielded(function: Callable[..., _T], *args: object) -> _T:
    """`run_in_thread` for clean-up in an exception handler: a cancellation does not stop it.

    Cancelled while it waits, the work still finishes in its thread, and the caller sees
    the `CancelledError`.
    """
    return await asyncio.shield(run_in_thread(function, *args))


def run_inline(function: Callable[..., _T], *args: object) -> _T:
    """The sync twin of `run_in_thread`: call `function` here and now."""
    return function(*args)


async def claim_in_thread(
    take: Callable[..., _T], undo: Callable[[_T], None], *args: object
) -> _T:
    """Take a journal claim in a worker thread (`take(*args)`), and never strand it.

    A caller cancelled while the claim is being taken cannot be told it holds it: when
    the thread finishes anyway, `undo(result)` runs (in a thread too) to give back what
    it took, so that the entry stays free for a replay.
    """
    loop = asyncio.get_running_loop()
    context = contextvars.copy_context()
    future = loop.run_in_executor(None, functools.partial(context.run, take, *args))
    try:
        return await asyncio.shield(future)
    except BaseException:

        def give_back(done: asyncio.Future[_T]) -> None:
            if not done.cancelled() and done.exception() is None:
                threading.Thread(target=undo, args=(done.result(),), daemon=True).start()

        future.add_done_callback(give_back)
        raise


def claim_inline(take: Callable[..., _T], undo: Callable[[_T], None], *args: object) -> _T:
    """The sync twin of `claim_in_thread`: take the claim here and now."""
    del undo
    return take(*args)
