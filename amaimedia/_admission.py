"""Admission: the reservation book that keeps concurrent metered blocks from giving work away.

A quote says what the balance covers now; it knows nothing of the blocks already running,
whose spends will take their share of that balance when they end. So a metered block is
admitted only if its quote's `balance_after`, less what the other blocks in flight have
reserved, stays at or above zero; its quoted cost is then reserved until its spend
settles (charged, failed, cancelled, or the block raised).

One more amount is counted against a quote: the charges that settled while it was on its
way. The server may have answered the quote before such a charge or after it, and the
book cannot tell which; counting it may refuse a block a little early, never late. A
charge whose answer came before the quote was sent is in the quote's balance, and is not
counted. This process's book knows both moments on one clock; a journal's book counts,
on its storage's clock, the charges of the quote's time, of the time the admission waited
in the book (its queue, its storage's lock), and of `SETTLED_MARGIN` seconds more (the
admission's way to the database).

The book is one per account and API, shared by every client of the process (threads,
tasks, `with_options` copies, separate clients with the same key), and forgotten by a
forked child, which has no blocks in flight. A journal that can hold a book of its own
(`SharedBook`, in PostgreSQL or an SQLite file) shares it with every process using that
journal; this process's own book is then kept beside it, for `reserved_tokens()` and for
the rare admission the shared book cannot answer (the database is unreachable), which the
local book decides alone, with a warning. While the balance is ample, the shared book is
asked for room for several blocks at once, which the next blocks take their costs out of
without a round trip (`_allotments.py`).
"""

from __future__ import annotations

import bisect
import hashlib
import itertools
import math
import os
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final, Protocol

from ._allotments import Allotments, Share, allotments
from ._exceptions import InsufficientCreditsError
from ._logging import logger

if TYPE_CHECKING:
    import httpx

    from ._auth import ApiKey
    from ._journal import ScopedJournal
    from ._models import Quote
    from ._types import Units

__all__ = [
    "SETTLED_MARGIN",
    "Admission",
    "Decision",
    "ProcessBook",
    "Releases",
    "Reservation",
    "SharedBook",
    "process_book",
]

# Seconds a journal's book adds to the time since a quote was sent, when counting the
# charges that settled meanwhile: the admission's way to the database (a network's one-way
# trip, a thread switch) is not measured, and a charge settled then must count. The time
# it waits in the book's queue and for the scope's lock is measured, and added by the book.
SETTLED_MARGIN: Final = 0.25
# Charges settled within this many seconds of each other are kept as one (see `_Scope`).
_SETTLED_RESOLUTION: Final = 0.01


@dataclass(frozen=True, slots=True)
class Decision:
    """What a book decided for one block.

    Attributes:
        admitted: Whether the block may run; its cost is then reserved.
        reserved: The tokens counted against the quote: reserved by the other blocks in
            flight, and charged while the quote was on its way.
        blocks: How many other blocks in flight hold those reservations.
        reservation: The book's handle of the reservation made, when admitted.
    """

    admitted: bool
    reserved: int
    blocks: int
    reservation: object = None


class SharedBook(Protocol):
    """A reservation book that a journal holds for every process using it.

    Admission is atomic per scope: no two processes may both read what is reserved, both
    decide, then both insert. A reservation stops counting when its process dies, within
    seconds, and never while it lives, however long its block runs.
    """

    def admit(self, scope: str, cost: int, balance_after: int, window: float) -> Decision:
        """Admit a block of `cost` tokens whose quote left `balance_after`, or refuse it.

        Args:
            scope: The account's scope in the journal.
            cost: The tokens to reserve.
            balance_after: The quote's `balance_after`.
            window: Count the charges settled in the last `window` seconds too, as
                measured when `admit` is called: the book adds the time the admission
                waits to reach its storage (its queue, a lock).

        Raises:
            SpendJournalError: The book could not be read or written.
        """

    def release(self, reservation: object, charged: int | None) -> None:
        """End a reservation; `charged` is what its spend charged, `None` if nothing.

        Never blocks (it may be called on an event loop, from `meter.cancel()`): the work
        goes to the book's own thread. Never raises: a reservation that cannot be ended
        now ends with its process.
        """

    def reserved(self, scope: str) -> int:
        """The tokens reserved in `scope` by every live process.

        Raises:
            SpendJournalError: The book could not be read.
        """

    def holds(self, reservation: object) -> bool:
        """Whether a reservation this book made still counts: not released, not closed.

        Never blocks: it reads what this process knows.
        """


class Releases(Protocol):
    """What a reservation is ended through: a shared book, or an allotment of one."""

    def release(self, reservation: object, charged: int | None) -> None:
        """End a reservation; never blocks, never raises (`SharedBook.release`)."""


@dataclass
class _Scope:
    """One account's reservations in this process, and its recent charges."""

    reservations: dict[int, int] = field(default_factory=dict)
    # The sum of `reservations`, kept as they change: admission never adds them up.
    reserved: int = 0
    # The charges as two lists, oldest first from `start` on (the entries before it are
    # forgotten, and cut off now and then): when each settled, by time.monotonic(), and
    # the tokens charged by it and every charge before it. The charges of a quote's
    # window are then one bisection and one subtraction, however many blocks a second
    # settle. The charges settled within `_SETTLED_RESOLUTION` seconds of the first of
    # them share one entry, with the time of the last: a window that starts among them
    # counts them all (refusing a little early, never late), and the lists hold at most
    # one entry per that many seconds of the five minutes kept, however many blocks a
    # second settle.
    settled_at: list[float] = field(default_factory=list)
    charged_through: list[int] = field(default_factory=list)
    start: int = 0
    # What the charges cut off from the lists charged, in all.
    cut: int = 0
    # When the first charge of the last entry settled.
    last_entry_began: float = -math.inf

    def settle(self, when: float, tokens: int) -> None:
        before = self.charged_through[-1] if self.charged_through else self.cut
        if (
            when - self.last_entry_began < _SETTLED_RESOLUTION
            and len(self.settled_at) > self.start
        ):
            self.settled_at[-1] = max(self.settled_at[-1], when)
            self.charged_through[-1] = before + tokens
            return
        self.last_entry_began = when
        self.settled_at.append(when)
        self.charged_through.append(before + tokens)

    def forget_before(self, when: float) -> None:
        self.start = bisect.bisect_left(self.settled_at, when, self.start)
        if self.start > len(self.settled_at) // 2:
            self.cut = self.charged_through[self.start - 1]
            del self.settled_at[: self.start]
            del self.charged_through[: self.start]
            self.start = 0

    def charged_since(self, when: float) -> int:
        first = bisect.bisect_left(self.settled_at, when, self.start)
        if first == len(self.settled_at):
            return 0
        before = self.charged_through[first - 1] if first else self.cut
        return self.charged_through[-1] - before

    @property
    def is_empty(self) -> bool:
        return not self.reservations and self.start == len(self.settled_at)


class ProcessBook:
    """The reservation book of this process: every client's blocks, per account."""

    # Charges are kept for this long at most, the longest a quote's window is expected to
    # be; an older one is counted by no quote that could still be answered.
    _KEEP_SETTLED: Final = 300.0

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._scopes: dict[str, _Scope] = {}
        self._ids = itertools.count(1)

    def admit(self, scope: str, cost: int, balance_after: int, window: float) -> Decision:
        """Admit or refuse a block, as `SharedBook.admit` does, within this process."""
        now = time.monotonic()
        with self._lock:
            book = self._scopes.get(scope)
            if book is None:
                book = self._scopes[scope] = _Scope()
            book.forget_before(now - self._KEEP_SETTLED)
            # A charge settled `window` seconds ago or less counts (the bound included).
            reserved = book.reserved + book.charged_since(now - window)
            blocks = len(book.reservations)
            if balance_after - reserved < 0:
                return Decision(False, reserved, blocks)
            reservation = next(self._ids)
            book.reservations[reservation] = cost
            book.reserved += cost
            return Decision(True, reserved, blocks, reservation)

    def hold(self, scope: str, cost: int) -> int:
        """Record a reservation a shared book made, so that `reserved()` counts it here."""
        with self._lock:
            reservation = next(self._ids)
            book = self._scopes.get(scope)
            if book is None:
                book = self._scopes[scope] = _Scope()
            book.reservations[reservation] = cost
            book.reserved += cost
            return reservation

    def release(self, scope: str, reservation: int, charged: int | None) -> None:
        """End a reservation; a charge is remembered for the quotes on their way."""
        with self._lock:
            book = self._scopes.get(scope)
            if book is None:
                return
            cost = book.reservations.pop(reservation, None)
            if cost is None:
                return
            book.reserved -= cost
            if charged:
                book.settle(time.monotonic(), charged)
            if book.is_empty:
                del self._scopes[scope]

    def reserved(self, scope: str) -> int:
        """The tokens reserved by this process's blocks in flight, for one account."""
        with self._lock:
            book = self._scopes.get(scope)
            return 0 if book is None else book.reserved


_book = ProcessBook()


def process_book() -> ProcessBook:
    """This process's book (a forked child gets a new, empty one)."""
    return _book


def _forget_book() -> None:  # pragma: no cover - runs in a forked child
    # The child runs none of its parent's blocks; their reservations are the parent's.
    global _book
    _book = ProcessBook()


if hasattr(os, "register_at_fork"):  # pragma: no branch - every POSIX system
    os.register_at_fork(after_in_child=_forget_book)


def process_scope(api_key: ApiKey, base_url: httpx.URL) -> str:
    """The account's name in this process's book: a digest of the API and the key.

    It never leaves the process, so it needs no salt; it is a digest so that the key is
    not held by one more object.
    """
    digest = hashlib.sha256(f"{base_url}\0{api_key.reveal()}".encode())
    return digest.hexdigest()


class Reservation:
    """A block's reservation: ended once, by whichever of the block's ends comes first."""

    __slots__ = ("_book", "_ended", "_lock", "_reservation", "_scope", "_shared", "cost")

    def __init__(
        self,
        cost: int,
        scope: str,
        reservation: int,
        shared: tuple[Releases, object] | None = None,
    ) -> None:
        self.cost = cost
        self._book = process_book()
        self._scope = scope
        self._reservation = reservation
        self._shared = shared
        self._ended = False
        self._lock = threading.Lock()

    def release(self, charged: int | None = None) -> None:
        """End the reservation: `charged` tokens were charged for it (`None`: nothing)."""
        with self._lock:
            if self._ended:
                return
            self._ended = True
        self._book.release(self._scope, self._reservation, charged)
        if self._shared is not None:
            book, handle = self._shared
            book.release(handle, charged)


class Admission:
    """One client's way into the book: its account's scope, and its journal's book if any.

    Args:
        scope: The account's scope in the process's book (`process_scope()`).
        journal: The client's journal: once open, a backend that holds a book of its own
            (a `reservation_book()` method returning a `SharedBook`) shares it.
    """

    __slots__ = ("_journal", "_scope")

    def __init__(self, scope: str, journal: ScopedJournal | None = None) -> None:
        self._scope = scope
        self._journal = journal

    def shared_book(self) -> tuple[SharedBook, str] | None:
        """The journal's book and the account's scope in it; `None` for this process's alone.

        Admission through it does I/O: the async client runs it in a thread.
        """
        journal = self._journal
        if journal is None or not journal.is_open:
            return None
        opener = getattr(journal.backend, "reservation_book", None)
        if opener is None:
            return None
        book: SharedBook = opener()
        return book, journal.scope

    def reserved_tokens(self) -> int:
        """The tokens this process's blocks in flight have reserved, for this account."""
        return process_book().reserved(self._scope)

    def admit(
        self,
        tool: str,
        units: Units,
        quote: Quote,
        asked: float,
        shared: tuple[SharedBook, str] | None = None,
    ) -> Reservation:
        """Reserve the quoted cost of a block, or refuse the block.

        Args:
            tool: The block's tool, for the message.
            units: Its units, for the message.
            quote: Its quote, which allowed it.
            asked: When the quote was sent, by `time.monotonic()`.
            shared: What `shared_book()` returned, looked up once per block; `None` for
                this process's book alone.

        Raises:
            InsufficientCreditsError: The balance is committed to the blocks in flight;
                nothing was reserved.
        """
        cost = quote.cost_tokens
        local = process_book()
        if shared is not None:
            book, scope = shared
            pool = allotments(book, scope)

            def window() -> float:
                return time.monotonic() - asked + SETTLED_MARGIN

            try:
                share = pool.admit(cost, quote.balance_after, window)
                decision = (
                    None
                    if share is not None
                    else book.admit(scope, cost, quote.balance_after, window())
                )
            except Exception as exc:
                logger.warning(
                    "the spend journal's reservation book could not be read (%s); the "
                    "block is admitted against this process's blocks in flight only",
                    exc,
                )
            else:
                if share is not None:
                    return self._allotted(tool, units, quote, asked, pool, share)
                assert decision is not None  # the book decided the block alone
                if not decision.admitted:
                    raise committed_error(tool, units, quote, decision)
                held = local.hold(self._scope, cost)
                return Reservation(cost, self._scope, held, (book, decision.reservation))
        # Exactly the charges whose answer came since the quote was sent.
        decision = local.admit(self._scope, cost, quote.balance_after, time.monotonic() - asked)
        if not decision.admitted:
            raise committed_error(tool, units, quote, decision)
        assert isinstance(decision.reservation, int)
        return Reservation(cost, self._scope, decision.reservation)

    def admit_allotted(
        self, tool: str, units: Units, quote: Quote, asked: float, shared: tuple[SharedBook, str]
    ) -> Reservation | None:
        """`admit()` from an allotment that has room (`_allotments.py`), or `None`.

        It never waits for the book, so it may run on an event loop: `None` sends the
        block to `admit()`, in a thread.

        Raises:
            InsufficientCreditsError: The quote does not cover this process's blocks in
                flight; nothing was reserved.
        """
        pool = allotments(*shared)
        share = pool.take(quote.cost_tokens)
        if share is None:
            return None
        return self._allotted(tool, units, quote, asked, pool, share)

    def _allotted(
        self, tool: str, units: Units, quote: Quote, asked: float, pool: Allotments, share: Share
    ) -> Reservation:
        """The reservation of a block whose cost an allotment holds; checked by its quote."""
        # The allotment holds the cost against the other processes; the quote must still
        # cover this process's blocks in flight, and what they charged since it was sent.
        decision = process_book().admit(
            self._scope, share.cost, quote.balance_after, time.monotonic() - asked
        )
        if not decision.admitted:
            pool.release(share, None)
            raise committed_error(tool, units, quote, decision)
        assert isinstance(decision.reservation, int)
        return Reservation(share.cost, self._scope, decision.reservation, (pool, share))


def committed_error(
    tool: str, units: Units, quote: Quote, decision: Decision
) -> InsufficientCreditsError:
    """The refusal of a block whose quote allowed it, but not with the blocks in flight."""
    return InsufficientCreditsError(
        f"the balance does not cover {tool} x{units} once the blocks in flight are paid: "
        f"it costs {quote.cost_tokens} tokens, the quote left {quote.balance_after}, and "
        f"{decision.reserved} are committed to {decision.blocks} block(s) in flight or "
        "charged just now; retry when they end, or top up at amaimedia.com/credits",
        body=quote.model_dump(),
        cost_tokens=quote.cost_tokens,
    )
