"""Allotments: room in a shared reservation book for several of this process's blocks.

A journal's book (PostgreSQL, an SQLite file) decides each admission in its storage, a
round trip and a transaction that cost more than the rest of a block. While the balance
is ample, this process asks it instead for an allotment: one reservation of several
blocks' worth of tokens, which its next blocks of the same account take their costs out
of without asking the book again. A block's charge is taken out of the allotment for good;
what it reserved and did not charge goes back to it.

Why it refuses no later than one reservation per block would: every other process counts
the whole allotment as reserved from the moment it is made, so the balance it leaves them
is what it would leave had its blocks all been admitted then, with the quote that asked
for it; and the blocks it admits never hold, nor charge, more than it reserved (a block
whose `meter.units` grew past its quote charges more, as it would with a reservation of
its own; the allotment then takes no more blocks). Each block is still checked against
its own quote and this process's other blocks in flight (`ProcessBook`), so a balance spent
elsewhere meanwhile refuses it.

It may refuse a little earlier than one reservation per block, never later: an allotment is
asked for only while the balance, less every reservation in the book, leaves `HEADROOM`
more allotments of its size free; when even the smallest would not fit, blocks are decided
one by one in the book again for `ONE_BY_ONE_S` seconds, as they are near the end of a
balance. An allotment that no block uses ends after `IDLE_S` seconds: its charges count
in the book from then on for the quotes on their way (as each block's charge does when it
ends), and its room goes back to the other processes.

The allotments are one per book and account for the process, kept by `allotments()`; a
forked child starts with none (its parent's are its parent's).
"""

from __future__ import annotations

import math
import os
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from ._admission import SharedBook

__all__ = ["HEADROOM", "IDLE_S", "LARGEST", "ONE_BY_ONE_S", "SMALLEST", "Allotments", "allotments"]

# The first allotment holds this many blocks' worth; each one asked for while the last is
# in use holds twice as many as the last, up to `LARGEST`.
SMALLEST: Final = 4
LARGEST: Final = 64
# An allotment is made only if the balance leaves this many more of its size free.
HEADROOM: Final = 3
# An allotment with no block in flight ends after this many seconds (at most 1.5 times).
IDLE_S: Final = 0.25
# After the book had no room for the smallest allotment, blocks are decided one by one
# for this many seconds.
ONE_BY_ONE_S: Final = 1.0


@dataclass(eq=False, slots=True)
class _Allotment:
    """One reservation in the book, shared by this process's blocks."""

    reservation: object  # the book's handle
    # The tokens not taken by a block in flight nor charged.
    left: int
    blocks: int = 0
    charged: int = 0
    # No block is admitted from it any more; it ends with its last block.
    closed: bool = False
    idle_since: float = 0.0


@dataclass(frozen=True, slots=True)
class Share:
    """A block's part of an allotment: what `Allotments.release` gives back."""

    allotment: _Allotment
    cost: int


class Allotments:
    """This process's allotments of one account in one shared book.

    Args:
        book: The shared book.
        scope: The account's scope in it.
    """

    def __init__(self, book: SharedBook, scope: str) -> None:
        # Weakly: the registry's entry for the book holds this object, and must not keep
        # the book (its journal, connection and thread) alive once nothing else uses it.
        self._book = weakref.ref(book)
        self._scope = scope
        # A book that cannot tell whether a reservation still counts (one of a backend
        # written before `SharedBook.holds`) decides every block itself.
        self._enabled = callable(getattr(book, "holds", None))
        self._lock = threading.Lock()
        self._open: list[_Allotment] = []
        self._size = SMALLEST
        self._one_by_one_until = -math.inf
        # Set while one block asks the book for an allotment: the others wait for it.
        self._asking: threading.Event | None = None

    def take(self, cost: int) -> Share | None:
        """Take `cost` tokens out of an allotment with room for them; never blocks."""
        if not self._enabled:
            return None
        with self._lock:
            share, ended = self._take(cost)
        self._end(ended)
        return share

    def admit(self, cost: int, balance_after: int, window: Callable[[], float]) -> Share | None:
        """Take `cost` out of an allotment, asking the book for one if none has room.

        Args:
            cost: The block's quoted cost.
            balance_after: Its quote's `balance_after`.
            window: The window of the charges the book is to count, asked when the book
                is (`SharedBook.admit`).

        Returns:
            The block's share, or `None`: the book is to decide the block alone.

        Raises:
            SpendJournalError: The book could not be read or written.
        """
        if cost <= 0 or not self._enabled:
            return None
        while True:
            with self._lock:
                share, ended = self._take(cost)
                waiting, asking, size = self._asking, None, self._size
                if (
                    share is None
                    and waiting is None
                    and time.monotonic() >= self._one_by_one_until
                ):
                    self._asking = asking = threading.Event()
            self._end(ended)
            if share is not None:
                return share
            if waiting is not None:
                waiting.wait()
                continue
            if asking is None:  # blocks are decided one by one for now
                return None
            try:
                share = self._ask(cost, balance_after, window, size)
            finally:
                with self._lock:
                    self._asking = None
                asking.set()
            if share is not None:
                _the_reaper.watch(self)
            return share

    def _take(self, cost: int) -> tuple[Share | None, list[_Allotment]]:
        """Under the lock: a share of an open allotment, and the allotments that ended."""
        ended: list[_Allotment] = []
        share = None
        book = self._book()
        for allotment in self._open:
            if allotment.closed:
                continue
            if book is None or not book.holds(allotment.reservation):  # closed, or gone
                allotment.closed = True
                allotment.reservation = None
            elif allotment.left >= cost:
                allotment.left -= cost
                allotment.blocks += 1
                share = Share(allotment, cost)
                break
            else:  # a larger block than it has room for: it takes no more
                allotment.closed = True
        if any(allotment.closed and not allotment.blocks for allotment in self._open):
            kept: list[_Allotment] = []
            for allotment in self._open:
                (ended if allotment.closed and not allotment.blocks else kept).append(allotment)
            self._open = kept
        return share, ended

    def _ask(
        self, cost: int, balance_after: int, window: Callable[[], float], size: int
    ) -> Share | None:
        """Ask the book for an allotment of `size` blocks' worth, smaller if it must be."""
        balance = balance_after + cost  # before this block
        book = self._book()
        if book is None:  # pragma: no cover - the caller holds the book
            return None
        while True:
            tokens = size * cost
            decision = book.admit(self._scope, tokens, balance - (1 + HEADROOM) * tokens, window())
            if decision.admitted:
                allotment = _Allotment(decision.reservation, tokens - cost, blocks=1)
                with self._lock:
                    self._open.append(allotment)
                    self._size = min(LARGEST, 2 * size)
                return Share(allotment, cost)
            # The largest that fits what the book counted, if any is worth asking for.
            fits = (balance - decision.reserved) // ((1 + HEADROOM) * cost)
            if fits < SMALLEST or fits >= size:
                with self._lock:
                    self._size = SMALLEST
                    self._one_by_one_until = time.monotonic() + ONE_BY_ONE_S
                return None
            size = fits

    def release(self, share: object, charged: int | None) -> None:
        """End a block's share: its charge is spent, the rest goes back; never blocks."""
        if not isinstance(share, Share):
            return
        allotment = share.allotment
        spent = charged or 0
        ended: list[_Allotment] = []
        with self._lock:
            allotment.blocks -= 1
            allotment.charged += spent
            allotment.left += share.cost - spent
            if allotment.left < 0:  # charged more than it reserved
                allotment.closed = True
            if not allotment.blocks:
                if allotment.closed:
                    self._open.remove(allotment)
                    ended.append(allotment)
                else:
                    allotment.idle_since = time.monotonic()
        self._end(ended)

    def end_idle(self, before: float) -> bool:
        """End the allotments no block used since `before`; whether any is left."""
        with self._lock:
            ended = [a for a in self._open if not a.blocks and a.idle_since < before]
            if ended:
                self._open = [a for a in self._open if a not in ended]
                self._size = SMALLEST
            left = bool(self._open)
        self._end(ended)
        return left

    def _end(self, ended: list[_Allotment]) -> None:
        if not ended:
            return
        book = self._book()
        if book is None:  # its reservations ended with it
            return
        for allotment in ended:
            if allotment.reservation is not None:
                book.release(allotment.reservation, allotment.charged or None)


class _Reaper:
    """One thread that ends the idle allotments of the process, while any is open."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._watched: set[Allotments] = set()
        self._running = False

    def watch(self, allotments: Allotments) -> None:
        with self._lock:
            self._watched.add(allotments)
            if not self._running:
                self._running = True
                threading.Thread(
                    target=self._run, name="amaimedia-allotments", daemon=True
                ).start()

    def _run(self) -> None:
        while True:
            time.sleep(IDLE_S / 2)
            with self._lock:
                before = time.monotonic() - IDLE_S
                self._watched = {a for a in self._watched if a.end_idle(before)}
                if not self._watched:
                    self._running = False
                    return


_books: weakref.WeakKeyDictionary[SharedBook, dict[str, Allotments]] = weakref.WeakKeyDictionary()
_books_lock = threading.Lock()
_the_reaper = _Reaper()


def allotments(book: SharedBook, scope: str) -> Allotments:
    """This process's allotments of `scope` in `book`."""
    scopes = _books.get(book)
    found = None if scopes is None else scopes.get(scope)
    if found is None:
        with _books_lock:
            scopes = _books.setdefault(book, {})
            found = scopes.setdefault(scope, Allotments(book, scope))
    return found


def _forget() -> None:  # pragma: no cover - runs in a forked child
    global _books, _books_lock, _the_reaper
    _books = weakref.WeakKeyDictionary()
    _books_lock = threading.Lock()
    _the_reaper = _Reaper()


if hasattr(os, "register_at_fork"):  # pragma: no branch - every POSIX system
    os.register_at_fork(after_in_child=_forget)
