"""Allotments: while the balance is ample, one reservation in a shared book serves many blocks.

The shared book here is an in-memory model of one (`ModelBook`): atomic admission over a
store that several "processes" (one `ModelBook` each, as each process has its own book
object) share, charges settled counted for a quote's window. The account is a model server
(`Account`): a quote is the balance less the cost, a spend takes the charge out of the
balance, and fails if the balance is short of it. The real books (PostgreSQL, SQLite) run
the same path in `tests/wire/test_fleet_admission.py` and in the journal-backed tests at
the end of this file.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

import amaimedia._allotments as allotments_module
from amaimedia import AmaiClient, InsufficientCreditsError, Quote, SQLiteSpendJournal
from amaimedia._admission import Admission, Decision, Reservation
from amaimedia._allotments import HEADROOM, LARGEST, SMALLEST
from amaimedia.testing import FakeAmaiServer

SCOPE = "acct"
# No test waits this long unless something is broken.
DEADLINE = 10.0


@dataclass
class Store:
    """What every process's book reads and writes: the live rows and the settled charges."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    live: dict[int, int] = field(default_factory=dict)
    settled: list[tuple[float, int]] = field(default_factory=list)
    ids: Iterator[int] = field(default_factory=lambda: iter(range(1, 1 << 62)))


class ModelBook:
    """A `SharedBook` over a `Store`: one per model process."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.asked: list[int] = []  # the tokens of each admission asked for
        self.mine: set[int] = set()

    def admit(self, scope: str, cost: int, balance_after: int, window: float) -> Decision:
        store = self.store
        with store.lock:
            self.asked.append(cost)
            since = time.monotonic() - window
            recent = sum(tokens for when, tokens in store.settled if when >= since)
            reserved = sum(store.live.values()) + recent
            if balance_after - reserved < 0:
                return Decision(False, reserved, len(store.live))
            row = next(store.ids)
            store.live[row] = cost
            self.mine.add(row)
            return Decision(True, reserved, len(store.live) - 1, row)

    def release(self, reservation: object, charged: int | None) -> None:
        assert isinstance(reservation, int)
        with self.store.lock:
            if self.store.live.pop(reservation, None) is not None and charged:
                self.store.settled.append((time.monotonic(), charged))
            self.mine.discard(reservation)

    def reserved(self, scope: str) -> int:
        with self.store.lock:
            return sum(self.store.live.values())

    def holds(self, reservation: object) -> bool:
        return reservation in self.mine

    def close(self) -> None:
        """As a journal's `close()`: this process's rows stop counting."""
        with self.store.lock:
            for row in self.mine:
                self.store.live.pop(row, None)
            self.mine.clear()


class Account:
    """The model server: quotes against the balance, spends that fail when it is short."""

    def __init__(self, balance: int) -> None:
        self.balance = balance
        self.lock = threading.Lock()
        self.charged = 0
        self.short: list[int] = []  # spends the balance could not pay: work given away

    def quote(self, cost: int) -> tuple[Quote, float]:
        with self.lock:
            asked = time.monotonic()
            after = self.balance - cost
        quote = Quote(ok=True, allowed=after >= 0, cost_tokens=cost, balance_after=after)
        return quote, asked

    def spend(self, tokens: int) -> None:
        with self.lock:
            if tokens > self.balance:
                self.short.append(tokens)
                return
            self.balance -= tokens
            self.charged += tokens


def block(
    admission: Admission, book: ModelBook, account: Account, cost: int
) -> Reservation | None:
    """A block's admission, as `metered()` runs it; `None` when refused (before the work)."""
    quote, asked = account.quote(cost)
    if not quote.allowed:
        return None
    try:
        return admission.admit("chat", 1, quote, asked, (book, SCOPE))
    except InsufficientCreditsError:
        return None


def finish(reservation: Reservation, account: Account, charge: int) -> None:
    """A block's end: its spend, then its reservation's release."""
    account.spend(charge)
    reservation.release(charge or None)


def wait_until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + DEADLINE
    while not condition():
        assert time.monotonic() < deadline, "the condition did not come true in time"
        time.sleep(0.01)


@pytest.fixture
def admission() -> Admission:
    # Its own account in this process's book: tests do not count each other's blocks.
    return Admission(f"scope-{random.getrandbits(64)}")


def test_blocks_of_an_ample_balance_ask_the_book_once_per_allotment(
    admission: Admission,
) -> None:
    book, account = ModelBook(Store()), Account(1_000_000)
    for _ in range(300):
        reservation = block(admission, book, account, 5)
        assert reservation is not None
        finish(reservation, account, 5)
    # 4, 8, 16, 32, then 64 blocks' worth each: 8 asks serve 316 blocks.
    sizes = [SMALLEST * 2**n for n in range(5)] + [LARGEST] * 3
    assert book.asked == [5 * size for size in sizes]
    assert account.charged == 1500
    assert account.short == []


def test_an_idle_allotment_ends_and_its_charges_count_then(admission: Admission) -> None:
    store = Store()
    book, account = ModelBook(store), Account(1_000_000)
    for _ in range(3):
        reservation = block(admission, book, account, 5)
        assert reservation is not None
        finish(reservation, account, 5)
    assert book.reserved(SCOPE) == 5 * SMALLEST  # the allotment, still open
    wait_until(lambda: book.reserved(SCOPE) == 0)
    # One settled row for the allotment: the three charges, counted for the quotes on
    # their way as the three blocks' own rows would have been.
    assert [tokens for _, tokens in store.settled] == [15]


def test_an_allotment_with_blocks_in_flight_is_kept(admission: Admission) -> None:
    book, account = ModelBook(Store()), Account(1_000_000)
    first = block(admission, book, account, 5)
    assert first is not None
    time.sleep(3 * allotments_module.IDLE_S)  # longer than an idle allotment lives
    second = block(admission, book, account, 5)
    assert second is not None
    assert book.asked == [5 * SMALLEST]  # the second block took from the same one
    finish(first, account, 5)
    finish(second, account, 5)
    wait_until(lambda: book.reserved(SCOPE) == 0)


def test_near_the_end_of_the_balance_blocks_are_decided_one_by_one(
    admission: Admission,
) -> None:
    # Funds for 10 blocks: not even the smallest allotment leaves its headroom.
    book, account = ModelBook(Store()), Account(50)
    held = [block(admission, book, account, 5) for _ in range(12)]
    admitted = [reservation for reservation in held if reservation is not None]
    assert len(admitted) == 10
    # One ask for an allotment (refused), then one admission per block.
    assert book.asked == [5 * SMALLEST] + [5] * 12
    for reservation in admitted:
        finish(reservation, account, 5)
    assert account.short == []
    assert account.balance == 0


def test_a_smaller_allotment_is_asked_for_when_the_next_does_not_fit(
    admission: Admission,
) -> None:
    book, account = ModelBook(Store()), Account(5 * (SMALLEST + 6 * (1 + HEADROOM)))
    for _ in range(SMALLEST + 1):
        reservation = block(admission, book, account, 5)
        assert reservation is not None
        finish(reservation, account, 5)
    # The next allotment, 8 blocks' worth, would need 8 * (1 + HEADROOM) blocks free, and
    # 6 * (1 + HEADROOM) are; the first allotment's charges, settled just now, count once
    # more (the quote may not show them yet), so 5 fit: 5 are asked for, and given.
    assert book.asked == [5 * SMALLEST, 5 * 2 * SMALLEST, 5 * 5]
    assert book.reserved(SCOPE) == 5 * 5


def test_a_closed_book_drops_its_allotments(admission: Admission) -> None:
    book, account = ModelBook(Store()), Account(1_000_000)
    reservation = block(admission, book, account, 5)
    assert reservation is not None
    finish(reservation, account, 5)
    book.close()  # then used again, as a journal reconnects after close()
    reservation = block(admission, book, account, 5)
    assert reservation is not None
    # A second allotment (of the next size), not the dropped one.
    assert book.asked == [5 * SMALLEST, 5 * 2 * SMALLEST]
    finish(reservation, account, 5)


class BookWithoutHolds:
    """A shared book of a backend written before `holds()`: it decides every block."""

    def __init__(self, store: Store) -> None:
        self._book = ModelBook(store)
        self.asked = self._book.asked
        self.admit = self._book.admit
        self.release = self._book.release
        self.reserved = self._book.reserved


def test_a_book_without_holds_decides_every_block(admission: Admission) -> None:
    book, account = BookWithoutHolds(Store()), Account(1_000_000)
    for _ in range(3):
        quote, asked = account.quote(5)
        reservation = admission.admit("chat", 1, quote, asked, (book, SCOPE))
        finish(reservation, account, 5)
    assert book.asked == [5, 5, 5]


def test_a_block_that_charged_past_its_quote_ends_the_allotment(admission: Admission) -> None:
    store = Store()
    book, account = ModelBook(store), Account(1_000_000)
    reservation = block(admission, book, account, 5)
    assert reservation is not None
    finish(reservation, account, 5 * SMALLEST + 1)  # its units grew in the block
    # The allotment took no more blocks and ended with its last one.
    assert book.reserved(SCOPE) == 0
    assert [tokens for _, tokens in store.settled] == [5 * SMALLEST + 1]


def test_a_block_the_quote_does_not_cover_with_its_neighbours_is_refused(
    admission: Admission,
) -> None:
    # The allotment has room, but this process's blocks in flight take the balance the
    # new quote shows (spent elsewhere meanwhile): refused, and its share given back.
    book, account = ModelBook(Store()), Account(1_000_000)
    first = block(admission, book, account, 5)
    assert first is not None
    account.balance = 8  # another app of the account spent the rest
    quote, asked = account.quote(5)
    with pytest.raises(InsufficientCreditsError, match="5 are committed to 1 block"):
        admission.admit("chat", 1, quote, asked, (book, SCOPE))
    first.release(None)
    wait_until(lambda: book.reserved(SCOPE) == 0)


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5])
def test_processes_sharing_a_book_never_give_work_away(seed: int) -> None:
    """Three model processes, eight threads each, random costs and charges, funds that run
    out: no spend ever finds the balance short."""
    rng = random.Random(seed)
    store = Store()
    account = Account(rng.randrange(300, 3000))
    processes = [(Admission(f"scope-{seed}-{n}"), ModelBook(store)) for n in range(3)]
    refused = 0
    lock = threading.Lock()

    def worker(admission: Admission, book: ModelBook, seed: int) -> None:
        nonlocal refused
        rng = random.Random(seed)
        for _ in range(200):
            cost = rng.randrange(1, 9)
            reservation = block(admission, book, account, cost)
            if reservation is None:
                with lock:
                    refused += 1
                continue
            time.sleep(rng.random() / 2000)
            charge = rng.choice([cost, cost, cost, cost - 1, 0])
            finish(reservation, account, charge)

    with ThreadPoolExecutor(max_workers=24) as pool:
        futures = [
            pool.submit(worker, admission, book, rng.getrandbits(32))
            for admission, book in processes
            for _ in range(8)
        ]
        for future in futures:
            future.result()
    assert account.short == []
    assert refused > 0  # the funds ran out: the end of the balance was reached
    wait_until(lambda: not store.live)


# --- through a client, on a real shared book (an SQLite journal) --------------------------


def test_journaled_blocks_share_an_allotment_in_the_files_book(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from amaimedia._journal._sqlite_book import SQLiteReservationBook

    asked: list[int] = []
    admit = SQLiteReservationBook.admit

    def counted(
        self: SQLiteReservationBook, scope: str, cost: int, balance_after: int, window: float
    ) -> Decision:
        asked.append(cost)
        return admit(self, scope, cost, balance_after, window)

    monkeypatch.setattr(SQLiteReservationBook, "admit", counted)
    fake = FakeAmaiServer()
    price = FakeAmaiServer.DEFAULT_PRICES["chat"]
    key = fake.create_key(balance=1000 * price)
    journal = SQLiteSpendJournal(tmp_path / "j.sqlite3")
    http_client = httpx.Client(transport=fake.transport())
    with AmaiClient(api_key=key, http_client=http_client, spend_journal=journal) as client:
        for _ in range(30):
            with client.metered("chat"):
                pass
        assert client.reserved_tokens() == 0
        # 4 + 8 + 16 blocks' worth, then a fourth allotment: 4 asks for 30 blocks.
        assert asked == [price * size for size in (4, 8, 16, 32)]
        assert client._admission is not None
        shared = client._admission.shared_book()
        assert shared is not None
        book, scope = shared
        wait_until(lambda: book.reserved(scope) == 0)
    assert len(fake.spends) == 30
    assert fake.balance(key) == 970 * price


def test_a_journal_no_longer_used_is_not_kept_by_its_allotments(tmp_path: Path) -> None:
    # The process's registry of allotments must not keep a book (its journal, connection
    # and thread) alive: a process that opens journal after journal would keep them all.
    import gc
    import weakref

    fake = FakeAmaiServer()
    key = fake.create_key(balance=1000 * FakeAmaiServer.DEFAULT_PRICES["chat"])
    journal = SQLiteSpendJournal(tmp_path / "j.sqlite3")
    http_client = httpx.Client(transport=fake.transport())
    client = AmaiClient(api_key=key, http_client=http_client, spend_journal=journal)
    with client.metered("chat"):
        pass
    client.close()
    book = weakref.ref(journal.reservation_book())
    del client, journal

    def gone() -> bool:
        gc.collect()
        return book() is None

    # Once its allotment ended (idle), nothing of the SDK's holds the book.
    wait_until(gone)
