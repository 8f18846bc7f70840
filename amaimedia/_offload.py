"""Blocking work from async code: the one place the async client leaves the event loop.

`scripts/unasync.py` turns `await run_in_thread(f, x)` into `run_inline(f, x)` for the
sync client, which simply calls it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TypeVar

__all__ = ["run_in_thread", "run_inline"]

_T = TypeVar("_T")


async def run_in_thread(function: Callable[..., _T], *args: object) -> _T:
    """Run blocking I/O (the spend journal's SQLite file) in a worker thread."""
    return await asyncio.to_thread(function, *args)


def run_inline(function: Callable[..., _T], *args: object) -> _T:
    """The sync twin of `run_in_thread`: call `function` here and now."""
    return function(*args)
