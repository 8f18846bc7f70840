"""Admission: concurrent metered blocks never give work away.

A block reserves its quoted cost until its spend settles, and is refused with
`InsufficientCreditsError`, before its work, when the balance is committed to the blocks
in flight. The issue's scenario (50 blocks at once, funds for 10) runs over real loopback
HTTP on `FakeAmaiServer.serve()`, on both clients and both async transports; the rest runs
in process, one body for both clients through the `harness` fixture.
"""

from __future__ import annotations

import asyncio
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import pytest

import amaimedia._admission as admission_module
from amaimedia import (
    AmaiClient,
    AsyncAmaiClient,
    InsufficientCreditsError,
    Meter,
    SpendFailedError,
)
from amaimedia._admission import ProcessBook, Reservation, process_book
from amaimedia.testing import FakeAmaiServer
from tests.conftest import Harness

PRICE = FakeAmaiServer.DEFAULT_PRICES["chat"]
BLOCKS = 50
FUNDS_FOR = 10
# No test waits this long unless something is broken: a gate that never opens.
GATE_SECONDS = 60.0


# --- the scenario: 50 blocks at once, funds for 10 ------------------------------


@dataclass
class Outcome:
    """What 50 concurrent blocks came to."""

    worked: int = 0
    charged: list[Meter] = field(default_factory=list)
    refused: list[InsufficientCreditsError] = field(default_factory=list)
    spend_failed: list[SpendFailedError] = field(default_factory=list)
    other: list[BaseException] = field(default_factory=list)


def run_threads(client: AmaiClient) -> Outcome:
    """50 blocks on 50 threads; no work ends before every block was admitted or refused.

    The gate makes the race of the issue certain: every quote is answered before any
    spend, so every quote sees the whole balance.
    """
    outcome = Outcome()
    gate = threading.Condition()
    decided = 0

    def decide() -> None:
        nonlocal decided
        with gate:
            decided += 1
            gate.notify_all()

    def block() -> None:
        entered = False
        try:
            with client.metered("chat") as meter:
                entered = True
                decide()
                with gate:
                    outcome.worked += 1
                    assert gate.wait_for(lambda: decided == BLOCKS, GATE_SECONDS)
            outcome.charged.append(meter)
        except InsufficientCreditsError as exc:
            outcome.refused.append(exc)
        except SpendFailedError as exc:
            outcome.spend_failed.append(exc)
        except BaseException as exc:
            outcome.other.append(exc)
        finally:
            if not entered:
                decide()

    with ThreadPoolExecutor(max_workers=BLOCKS) as pool:
        for future in [pool.submit(block) for _ in range(BLOCKS)]:
            future.result()
    return outcome


async def run_tasks(client: AsyncAmaiClient) -> Outcome:
    """50 blocks as 50 tasks, with the gate of `run_threads`."""
    outcome = Outcome()
    everyone = asyncio.Event()
    decided = 0

    def decide() -> None:
        nonlocal decided
        decided += 1
        if decided == BLOCKS:
            everyone.set()

    async def block() -> None:
        entered = False
        try:
            async with client.metered("chat") as meter:
                entered = True
                decide()
                outcome.worked += 1
                await asyncio.wait_for(everyone.wait(), GATE_SECONDS)
            outcome.charged.append(meter)
        except InsufficientCreditsError as exc:
            outcome.refused.append(exc)
        except SpendFailedError as exc:
            outcome.spend_failed.append(exc)
        except BaseException as exc:
            outcome.other.append(exc)
        finally:
            if not entered:
                decide()

    await asyncio.gather(*(block() for _ in range(BLOCKS)))
    return outcome


def scenario(kind: str, *, admission: bool) -> tuple[Outcome, FakeAmaiServer, str, int]:
    """Run the 50 blocks with funds for 10; the outcome, the fake, the key, and what is
    left reserved once everything settled."""
    fake = FakeAmaiServer()
    key = fake.create_key(balance=FUNDS_FOR * PRICE)
    with fake.serve() as base_url:
        if kind == "threads":
            with AmaiClient(api_key=key, base_url=base_url, admission=admission) as client:
                outcome = run_threads(client)
                left = client.reserved_tokens()
        else:

            async def main() -> tuple[Outcome, int]:
                async with AsyncAmaiClient(
                    api_key=key, base_url=base_url, transport=kind, admission=admission
                ) as aclient:
                    return await run_tasks(aclient), aclient.reserved_tokens()

            outcome, left = asyncio.run(main())
    return outcome, fake, key, left


KINDS = [
    pytest.param("threads", id="AmaiClient-threads"),
    pytest.param("httpx", id="AsyncAmaiClient-tasks-httpx"),
    pytest.param("aiohttp", id="AsyncAmaiClient-tasks-aiohttp"),
]


@pytest.mark.parametrize("kind", KINDS)
def test_fifty_blocks_with_funds_for_ten_give_no_work_away(kind: str) -> None:
    outcome, fake, key, left = scenario(kind, admission=True)

    assert outcome.other == []
    assert outcome.spend_failed == []
    # The book may refuse a little early, never late.
    assert FUNDS_FOR - 2 <= len(outcome.charged) <= FUNDS_FOR
    # Every block that was not charged was refused before its work ran.
    assert outcome.worked == len(outcome.charged)
    assert len(outcome.refused) == BLOCKS - len(outcome.charged)
    assert all(meter.state == "charged" for meter in outcome.charged)
    # The fake's ledger holds exactly the blocks charged, and nothing else.
    assert sorted(spend.reference for spend in fake.spends) == sorted(
        meter.reference for meter in outcome.charged
    )
    assert sum(spend.charged for spend in fake.spends) == PRICE * len(outcome.charged)
    assert fake.balance(key) == PRICE * (FUNDS_FOR - len(outcome.charged))
    checks = [r for r in fake.requests if r.path == "/api/v1/tools/check"]
    assert len(checks) == BLOCKS
    assert left == 0


@pytest.mark.parametrize("kind", KINDS)
def test_without_admission_the_same_blocks_give_the_work_away(kind: str) -> None:
    outcome, fake, key, left = scenario(kind, admission=False)

    # The contrast: every quote allowed its block, every work ran, 10 were paid for.
    assert outcome.other == []
    assert outcome.refused == []
    assert outcome.worked == BLOCKS
    assert len(outcome.charged) == FUNDS_FOR
    assert len(outcome.spend_failed) == BLOCKS - FUNDS_FOR
    assert all(
        isinstance(failure.__cause__, InsufficientCreditsError) for failure in outcome.spend_failed
    )
    assert len(fake.spends) == FUNDS_FOR
    assert fake.balance(key) == 0
    assert left == 0


# --- in process, both clients ------------------------------------------------------------


def fake_client(harness: Harness, fake: FakeAmaiServer, key: str, **options: Any) -> Any:
    """A client of `harness`'s kind on `fake`, in process."""
    transport = fake.async_transport() if harness.is_async else fake.transport()
    return harness.client(
        http_client=harness.http_client(transport=transport),
        api_key=key,
        base_url=FakeAmaiServer.BASE_URL,
        **options,
    )


def enter(harness: Harness, block: Any) -> Meter:
    if harness.is_async:
        return harness.run(block.__aenter__())  # type: ignore[no-any-return]
    return block.__enter__()  # type: ignore[no-any-return]


def leave(harness: Harness, block: Any, exc: BaseException | None = None) -> None:
    args = (None, None, None) if exc is None else (type(exc), exc, exc.__traceback__)
    if harness.is_async:
        harness.run(block.__aexit__(*args))
    else:
        block.__exit__(*args)


def spends_sent(fake: FakeAmaiServer) -> int:
    return sum(r.path == "/api/v1/tools/spend" for r in fake.requests)


def test_a_refusal_names_what_is_reserved_and_by_how_many_blocks(harness: Harness) -> None:
    fake = FakeAmaiServer()
    key = fake.create_key(balance=2 * PRICE)
    client = fake_client(harness, fake, key)
    first, second = client.metered("chat"), client.metered("chat")
    enter(harness, first)
    enter(harness, second)
    assert client.reserved_tokens() == 2 * PRICE

    with pytest.raises(InsufficientCreditsError) as info:
        enter(harness, client.metered("chat"))
    message = str(info.value)
    assert f"{2 * PRICE} are committed to 2 block(s) in flight" in message
    assert f"it costs {PRICE} tokens, the quote left {PRICE}" in message
    assert info.value.cost_tokens == PRICE
    # Refused like a refusing quote: nothing was sent after the check.
    assert spends_sent(fake) == 0

    leave(harness, second)
    leave(harness, first)
    assert fake.balance(key) == 0
    assert client.reserved_tokens() == 0


def test_blocks_one_after_another_spend_the_balance_to_the_last_token(harness: Harness) -> None:
    # Each block's charge was answered before the next block's quote was sent: the quote's
    # balance holds it, and counting it again (as a charge "just settled") refused the
    # last block with funds for it.
    fake = FakeAmaiServer()
    key = fake.create_key(balance=3 * PRICE)
    client = fake_client(harness, fake, key)

    meters = []
    for _ in range(3):
        block = client.metered("chat")
        meters.append(enter(harness, block))
        leave(harness, block)

    assert [meter.state for meter in meters] == ["charged"] * 3
    assert fake.balance(key) == 0
    with pytest.raises(InsufficientCreditsError, match="allowed=false"):
        enter(harness, client.metered("chat"))


def test_a_block_that_raised_releases_its_reservation(harness: Harness) -> None:
    fake = FakeAmaiServer()
    key = fake.create_key(balance=PRICE)
    client = fake_client(harness, fake, key)
    block = client.metered("chat")
    enter(harness, block)
    assert client.reserved_tokens() == PRICE
    with pytest.raises(InsufficientCreditsError):
        enter(harness, client.metered("chat"))

    leave(harness, block, RuntimeError("the work failed"))
    assert client.reserved_tokens() == 0
    assert fake.spends == []
    # Released for real: the funds are there for the next block.
    meter = enter(harness, again := client.metered("chat"))
    leave(harness, again)
    assert meter.state == "charged"
    assert client.reserved_tokens() == 0


def test_cancel_releases_at_once_inside_the_block(harness: Harness) -> None:
    fake = FakeAmaiServer()
    key = fake.create_key(balance=PRICE)
    client = fake_client(harness, fake, key)
    cancelled = client.metered("chat")
    meter = enter(harness, cancelled)
    assert client.reserved_tokens() == PRICE

    meter.cancel()
    assert client.reserved_tokens() == 0
    # While the cancelled block is still open, another takes the funds it gave back.
    other = client.metered("chat")
    other_meter = enter(harness, other)
    assert client.reserved_tokens() == PRICE
    leave(harness, other)
    leave(harness, cancelled)

    assert (meter.state, other_meter.state) == ("cancelled", "charged")
    assert [spend.reference for spend in fake.spends] == [other_meter.reference]
    assert client.reserved_tokens() == 0


def test_a_block_whose_spend_failed_releases_its_reservation(harness: Harness) -> None:
    fake = FakeAmaiServer()
    key = fake.create_key(balance=PRICE)
    client = fake_client(harness, fake, key, max_retries=0)
    fake.fail_next("spend", status=500)
    block = client.metered("chat")
    enter(harness, block)
    with pytest.raises(SpendFailedError):
        leave(harness, block)
    assert client.reserved_tokens() == 0

    # Nothing was charged, so nothing is counted against the next quote either.
    meter = enter(harness, again := client.metered("chat"))
    leave(harness, again)
    assert meter.state == "charged"
    assert fake.balance(key) == 0
    assert client.reserved_tokens() == 0


def test_meter_units_change_what_is_spent_not_what_was_reserved(harness: Harness) -> None:
    fake = FakeAmaiServer()
    key = fake.create_key(balance=4 * PRICE)
    client = fake_client(harness, fake, key)
    grown = client.metered("chat", units=1)
    meter = enter(harness, grown)
    meter.units = 3
    assert client.reserved_tokens() == PRICE  # the quote's cost, not the new units'

    # Judged against the reservation (PRICE), not against what will be spent (3 * PRICE).
    other = client.metered("chat", units=1)
    enter(harness, other)
    assert client.reserved_tokens() == 2 * PRICE
    leave(harness, grown)
    leave(harness, other)

    assert [spend.charged for spend in fake.spends] == [3 * PRICE, PRICE]
    assert fake.balance(key) == 0
    assert client.reserved_tokens() == 0


def test_units_raised_past_the_quote_can_still_fail_another_block(harness: Harness) -> None:
    # The risk the docs name: the book reserves what was quoted; a block that bills more
    # takes funds another admitted block counted on.
    fake = FakeAmaiServer()
    key = fake.create_key(balance=3 * PRICE)
    client = fake_client(harness, fake, key)
    grown, other = client.metered("chat"), client.metered("chat")
    enter(harness, grown).units = 3
    enter(harness, other)
    leave(harness, grown)
    with pytest.raises(SpendFailedError):
        leave(harness, other)
    assert client.reserved_tokens() == 0


def test_copies_and_clients_of_one_key_share_the_book(harness: Harness) -> None:
    fake = FakeAmaiServer()
    key = fake.create_key(balance=PRICE)
    stranger = fake.create_key(balance=PRICE)
    client = fake_client(harness, fake, key)
    block = client.metered("chat")
    enter(harness, block)

    copy = client.with_options(max_retries=0)
    twin = fake_client(harness, fake, key)
    other = fake_client(harness, fake, stranger)
    assert copy.reserved_tokens() == twin.reserved_tokens() == PRICE
    assert other.reserved_tokens() == 0
    # Shared for admission too: the copy and the twin are refused, the other key is not.
    for sharer in (copy, twin):
        with pytest.raises(InsufficientCreditsError, match="committed to 1 block"):
            enter(harness, sharer.metered("chat"))
    strangers = other.metered("chat")
    enter(harness, strangers)
    leave(harness, strangers)
    leave(harness, block)

    assert fake.balance(key) == fake.balance(stranger) == 0
    assert client.reserved_tokens() == copy.reserved_tokens() == other.reserved_tokens() == 0


def test_admission_off_admits_what_the_quote_allows(harness: Harness) -> None:
    fake = FakeAmaiServer()
    key = fake.create_key(balance=PRICE)
    client = fake_client(harness, fake, key)
    block = client.metered("chat")
    enter(harness, block)

    for unbooked in (
        client.with_options(admission=False),
        fake_client(harness, fake, key, admission=False),
    ):
        assert unbooked.reserved_tokens() == 0
        meter = enter(harness, free := unbooked.metered("chat"))
        assert meter.quote.allowed
        free_meter = meter
        meter.cancel()
        leave(harness, free)
        assert free_meter.state == "cancelled"
    # And a copy may turn it back on.
    back = client.with_options(admission=False).with_options(admission=True)
    with pytest.raises(InsufficientCreditsError, match="committed"):
        enter(harness, back.metered("chat"))
    leave(harness, block)
    assert client.reserved_tokens() == 0


@pytest.mark.parametrize("value", ["yes", 1, None])
def test_admission_must_be_a_bool(harness: Harness, value: object) -> None:
    with pytest.raises(TypeError, match="admission must be True or False"):
        harness.client(admission=value)
    with pytest.raises(TypeError, match="admission must be True or False"):
        harness.client().with_options(admission=value)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_a_forked_child_starts_with_an_empty_book(harness: Harness) -> None:
    fake = FakeAmaiServer()
    key = fake.create_key(balance=PRICE)
    client = fake_client(harness, fake, key)
    block = client.metered("chat")
    enter(harness, block)
    assert client.reserved_tokens() == PRICE

    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        try:
            os.write(writer, str(client.reserved_tokens()).encode())
        finally:
            os._exit(0)
    os.close(writer)
    with os.fdopen(reader, "rb") as pipe:
        seen = pipe.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0

    assert seen == b"0"
    assert client.reserved_tokens() == PRICE  # the parent's block still holds its own
    leave(harness, block)
    assert client.reserved_tokens() == 0


def test_a_task_cancelled_during_admission_leaves_nothing_reserved() -> None:
    fake = FakeAmaiServer()
    key = fake.create_key(balance=PRICE)
    fake.fail_next("check", delay=GATE_SECONDS)
    worked = []

    async def main() -> None:
        async with fake.async_client(key) as aclient:

            async def block() -> None:
                async with aclient.metered("chat"):
                    worked.append(1)

            task = asyncio.create_task(block())
            while not fake.requests:  # the quote is on its way
                await asyncio.sleep(0)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert aclient.reserved_tokens() == 0
            # Nothing held back: the next block gets the funds.
            await block()
            assert aclient.reserved_tokens() == 0

    asyncio.run(main())
    assert worked == [1]
    assert fake.balance(key) == 0


def test_a_task_cancelled_in_its_work_releases_its_reservation() -> None:
    fake = FakeAmaiServer()
    key = fake.create_key(balance=PRICE)

    async def main() -> None:
        async with fake.async_client(key) as aclient:
            started = asyncio.Event()

            async def block() -> None:
                async with aclient.metered("chat"):
                    started.set()
                    await asyncio.Event().wait()  # never set: the task is cancelled here

            task = asyncio.create_task(block())
            await started.wait()
            assert aclient.reserved_tokens() == PRICE
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert aclient.reserved_tokens() == 0

    asyncio.run(main())
    assert fake.spends == []


# --- ProcessBook, alone -----------------------------------------------------------------


class Clock:
    """`time.monotonic()` as the book reads it, moved by hand."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(admission_module, "time", clock)
    return clock


def test_the_book_admits_down_to_zero_and_refuses_below(clock: Clock) -> None:
    book = ProcessBook()
    first = book.admit("acct", 5, balance_after=10, window=1.0)
    second = book.admit("acct", 5, balance_after=10, window=1.0)
    assert (first.admitted, first.reserved, first.blocks) == (True, 0, 0)
    assert (second.admitted, second.reserved, second.blocks) == (True, 5, 1)
    refused = book.admit("acct", 5, balance_after=9, window=1.0)
    assert (refused.admitted, refused.reserved, refused.blocks) == (False, 10, 2)
    assert refused.reservation is None
    assert book.reserved("acct") == 10  # a refusal reserves nothing
    # Another account has a book of its own.
    assert book.admit("other", 5, balance_after=0, window=1.0).admitted
    assert book.reserved("other") == 5


def test_a_release_ends_a_reservation_once(clock: Clock) -> None:
    book = ProcessBook()
    decision = book.admit("acct", 5, balance_after=5, window=1.0)
    assert isinstance(decision.reservation, int)
    book.release("acct", decision.reservation, None)
    book.release("acct", decision.reservation, 5)  # already ended: not remembered
    assert book.reserved("acct") == 0
    assert book.admit("acct", 5, balance_after=0, window=1.0).admitted


def test_a_charge_settled_within_the_window_counts(clock: Clock) -> None:
    book = ProcessBook()
    decision = book.admit("acct", 5, balance_after=10, window=1.0)
    assert isinstance(decision.reservation, int)
    book.release("acct", decision.reservation, 5)
    assert book.reserved("acct") == 0  # no longer reserved...

    clock.now += 1.0  # ...but a quote of the last second may not have seen the charge
    counted = book.admit("acct", 5, balance_after=4, window=1.0)
    assert (counted.admitted, counted.reserved, counted.blocks) == (False, 5, 0)
    assert book.admit("acct", 5, balance_after=5, window=1.0).admitted


def test_a_charge_settled_before_the_window_does_not_count(clock: Clock) -> None:
    book = ProcessBook()
    decision = book.admit("acct", 5, balance_after=10, window=1.0)
    assert isinstance(decision.reservation, int)
    book.release("acct", decision.reservation, 5)

    clock.now += 1.5
    outside = book.admit("acct", 5, balance_after=0, window=1.0)
    assert (outside.admitted, outside.reserved) == (True, 0)
    assert isinstance(outside.reservation, int)
    book.release("acct", outside.reservation, None)
    # A longer quote's window reaches back further, and counts it.
    assert not book.admit("acct", 5, balance_after=0, window=2.0).admitted


def test_nothing_charged_is_never_counted(clock: Clock) -> None:
    book = ProcessBook()
    for charged in (None, 0):
        decision = book.admit("acct", 5, balance_after=5, window=1.0)
        assert isinstance(decision.reservation, int)
        book.release("acct", decision.reservation, charged)
    assert book.admit("acct", 5, balance_after=0, window=1.0).reserved == 0


def test_old_charges_are_forgotten_whatever_the_window(clock: Clock) -> None:
    book = ProcessBook()
    decision = book.admit("acct", 5, balance_after=5, window=1.0)
    assert isinstance(decision.reservation, int)
    book.release("acct", decision.reservation, 5)
    keep = ProcessBook._KEEP_SETTLED
    clock.now += keep + 1
    assert book.admit("acct", 5, balance_after=0, window=10 * keep).reserved == 0


def test_a_reservation_is_released_by_its_first_end_only() -> None:
    book = process_book()
    decision = book.admit("test-reservation", 5, balance_after=5, window=1.0)
    assert isinstance(decision.reservation, int)
    reservation = Reservation(5, "test-reservation", decision.reservation)
    reservation.release(None)  # cancel()
    reservation.release(5)  # the block's exit: too late to count as a charge
    assert book.reserved("test-reservation") == 0
    last = book.admit("test-reservation", 5, balance_after=0, window=1.0)
    assert (last.admitted, last.reserved) == (True, 0)
    assert isinstance(last.reservation, int)
    book.release("test-reservation", last.reservation, None)


def test_the_window_counts_exactly_its_charges_among_many(clock: Clock) -> None:
    book = ProcessBook()
    start = clock.now

    def charge(tokens: int) -> None:
        decision = book.admit("acct", tokens, balance_after=10**9, window=0.0)
        assert isinstance(decision.reservation, int)
        book.release("acct", decision.reservation, tokens)

    for second in range(10):  # 1, 2, ... 10 tokens, one charge a second
        clock.now = start + second
        charge(second + 1)

    def counted(window: float) -> int:
        decision = book.admit("acct", 1, balance_after=10**9, window=window)
        assert isinstance(decision.reservation, int)
        book.release("acct", decision.reservation, None)
        return decision.reserved

    clock.now = start + 9.5
    assert counted(3.0) == 8 + 9 + 10
    assert counted(100.0) == sum(range(1, 11))
    # Six of them are forgotten, the rest still count, and a new one adds to them.
    keep = ProcessBook._KEEP_SETTLED
    clock.now = start + keep + 5.5
    assert counted(10 * keep) == 7 + 8 + 9 + 10
    charge(100)
    assert counted(10 * keep) == 7 + 8 + 9 + 10 + 100
    assert counted(1.0) == 100
    clock.now += 2 * keep
    assert counted(10 * keep) == 0


def test_many_charges_a_second_keep_the_book_small(clock: Clock) -> None:
    # 100,000 blocks settling within ten seconds: one entry per hundredth of a second.
    book = ProcessBook()
    start = clock.now
    for index in range(100_000):
        clock.now = start + index * 1e-4
        decision = book.admit("acct", 1, balance_after=10**9, window=0.0)
        assert isinstance(decision.reservation, int)
        book.release("acct", decision.reservation, 1)
    scope = book._scopes["acct"]
    assert len(scope.settled_at) - scope.start <= 1_001
    # Every charge still counts for a window that reaches back over them all.
    assert book.admit("acct", 1, balance_after=10**9, window=60.0).reserved == 100_000


def test_charges_kept_as_one_are_counted_early_never_late(clock: Clock) -> None:
    book = ProcessBook()
    start = clock.now
    settled: list[float] = []
    for index in range(200):  # a charge of 1 token every 3 ms, for 0.6 s
        clock.now = start + index * 0.003
        decision = book.admit("acct", 1, balance_after=10**9, window=0.0)
        assert isinstance(decision.reservation, int)
        book.release("acct", decision.reservation, 1)
        settled.append(clock.now)
    clock.now = start + 1.0
    resolution = admission_module._SETTLED_RESOLUTION
    for window in (0.05, 0.1, 0.2345, 0.4, 0.7, 0.9999, 1.0):
        decision = book.admit("acct", 1, balance_after=10**9, window=window)
        assert isinstance(decision.reservation, int)
        book.release("acct", decision.reservation, None)
        since = clock.now - window
        exact = sum(1 for when in settled if when >= since)
        at_most = sum(1 for when in settled if when >= since - resolution)
        assert exact <= decision.reserved <= at_most, window
