"""Fork safety: which process a pool belongs to, and what a child does with the parent's.

A forked child (`os.fork`, `multiprocessing`'s `fork` start method, a pre-forking server
such as `gunicorn --preload`) inherits the parent's pools with their open keep-alive
sockets. Two processes writing requests to one socket read each other's answers, and a
wrong answer can parse as a right one. So every pool the SDK makes remembers the fork
`generation()` it was made in; in a child the number has moved on, and the pool opens
fresh connections there.

What the child inherited it never touches: closing a TLS connection, or shutting a socket
down, would end the parent's connection too. `abandon()` keeps those objects referenced
for the life of the process, so that they are not even garbage-collected there (which
would warn, and close the descriptors under objects the child still holds).

A lock held by another thread at the moment of the fork stays held in the child, where
that thread does not exist: the pools' locks are `ForkSafeLock`s, which a child gets back
free.
"""

from __future__ import annotations

import os
import threading
import weakref

__all__ = ["ForkSafeLock", "abandon", "generation"]

_generation = 0
_inherited: list[object] = []


class ForkSafeLock:
    """A `threading.Lock` that a forked child gets back unheld, whoever held it."""

    __slots__ = ("__weakref__", "_lock")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        _locks.add(self)

    def __enter__(self) -> bool:
        return self._lock.acquire()

    def __exit__(self, *exc_info: object) -> None:
        self._lock.release()

    def renew(self) -> None:  # pragma: no cover - runs in a forked child
        """A fresh, unheld lock: for the child, which is one thread when it starts."""
        self._lock = threading.Lock()


_locks: weakref.WeakSet[ForkSafeLock] = weakref.WeakSet()


def generation() -> int:
    """How many forks stand between the first process and this one."""
    return _generation


def abandon(inherited: object) -> None:
    """Keep something inherited from the parent alive here, and never use it again."""
    _inherited.append(inherited)


def _forked() -> None:  # pragma: no cover - runs in a forked child
    global _generation
    _generation += 1
    for lock in list(_locks):
        lock.renew()


if hasattr(os, "register_at_fork"):  # pragma: no branch - every POSIX system
    os.register_at_fork(after_in_child=_forked)
