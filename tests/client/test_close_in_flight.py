"""Closing a client while metered spends are in flight: they end as the SDK's errors, or charged.

Over a real loopback socket: the fake holds each spend's answer back (`delay`), after
charging it, and the client is closed while the blocks wait for it, from another thread
(the sync client) or task (the async one, on both transports). A client that owns its pool
lets the requests in flight end before closing it; an attempt it can no longer make raises
`APIConnectionError` with the spend's reference, which a metered block turns into
`SpendFailedError` and a journal keeps pending, for the replay of the next start. Nowhere
a bare `RuntimeError`, a charge lost or a charge made twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import faulthandler
import logging
import os
import signal
import sys
import threading
import time
import warnings
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from amaimedia import (
    AmaiClient,
    AmaiError,
    APIConnectionError,
    AsyncAmaiClient,
    Meter,
    SpendFailedError,
)
from amaimedia._in_flight import InFlight
from amaimedia.testing import FakeAmaiServer
from tests.planted import assert_exception_is_clean

KINDS = ["sync", "httpx", "aiohttp"]
# How long the fake holds each spend's answer back: the window in which the client is
# closed. Nothing is timed against it; the tests only wait for conditions.
DELAY = 1.0
WAIT = 30.0  # seconds: the bound of every wait for a condition; only a hung test nears it
# An answer the tests that cut spends short hold back: longer than their trigger (an
# interrupt, a cancellation, a signal) takes on a loaded machine. With 2 s, a loaded CI
# machine once delivered the interrupt after the answer, and the block was charged.
HELD = DELAY * 5

Outcome = Meter | BaseException


@dataclass
class Served:
    fake: FakeAmaiServer
    key: str
    base_url: str
    journal: Path

    def client(self, kind: str, **options: Any) -> AmaiClient | AsyncAmaiClient:
        options.setdefault("spend_journal", self.journal)
        if kind == "sync":
            return AmaiClient(self.key, base_url=self.base_url, **options)
        return AsyncAmaiClient(self.key, base_url=self.base_url, transport=kind, **options)

    def spends_arrived(self) -> int:
        return sum(1 for request in self.fake.requests if request.endpoint == "spend")

    def charged(self) -> list[str]:
        return sorted(spend.reference for spend in self.fake.spends)

    def next_start(self) -> AmaiClient:
        """The client of the next start of the worker, on the same journal."""
        return AmaiClient(self.key, base_url=self.base_url, spend_journal=self.journal)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    fake = FakeAmaiServer()
    key = fake.create_key(balance=10_000)
    with fake.serve() as base_url:
        yield Served(fake, key, base_url, tmp_path / "spends.sqlite3")


def wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < deadline, f"never: {what}"
        time.sleep(0.01)


async def await_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < deadline, f"never: {what}"
        await asyncio.sleep(0.01)


def run_blocks(
    served: Served,
    kind: str,
    client: AmaiClient | AsyncAmaiClient,
    count: int,
    close: Callable[[Any], Any],
) -> list[Outcome]:
    """Run `count` metered blocks at once; call `close(client)` once every spend is sent.

    Each block's outcome is its meter, or what it raised. `close` returns an awaitable for
    the async client.
    """
    if kind == "sync":
        assert isinstance(client, AmaiClient)
        return _run_threads(served, client, count, close)
    assert isinstance(client, AsyncAmaiClient)
    return asyncio.run(_run_tasks(served, client, count, close))


def _run_threads(
    served: Served, client: AmaiClient, count: int, close: Callable[[Any], Any]
) -> list[Outcome]:
    outcomes: list[Outcome | None] = [None] * count

    def block(index: int) -> None:
        try:
            with client.metered("chat", reference=f"job-{index}") as meter:
                pass
            outcomes[index] = meter
        except BaseException as exc:
            outcomes[index] = exc

    threads = [threading.Thread(target=block, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    wait_until(lambda: served.spends_arrived() == count, "every spend sent")
    close(client)
    for thread in threads:
        thread.join(WAIT)
        assert not thread.is_alive()
    return [outcome for outcome in outcomes if outcome is not None]


async def _run_tasks(
    served: Served, client: AsyncAmaiClient, count: int, close: Callable[[Any], Any]
) -> list[Outcome]:
    async def block(index: int) -> Outcome:
        try:
            async with client.metered("chat", reference=f"job-{index}") as meter:
                pass
        except BaseException as exc:
            return exc
        return meter

    tasks = [asyncio.create_task(block(i)) for i in range(count)]
    await await_until(lambda: served.spends_arrived() == count, "every spend sent")
    closing = close(client)
    if isinstance(closing, Awaitable):
        with contextlib.suppress(asyncio.TimeoutError):  # a close cut short: see the test
            await closing
    return list(await asyncio.wait_for(asyncio.gather(*tasks), WAIT))


def closer(kind: str) -> Callable[[Any], Any]:
    return (lambda client: client.close()) if kind == "sync" else (lambda c: c.aclose())


# --- the pool the client owns ---------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_close_lets_the_spends_in_flight_end_charged(served: Served, kind: str) -> None:
    served.fake.fail_next("spend", delay=DELAY, times=3)
    client = served.client(kind)
    outcomes = run_blocks(served, kind, client, 3, closer(kind))

    assert [type(outcome) for outcome in outcomes] == [Meter] * 3, outcomes
    assert [meter.state for meter in outcomes if isinstance(meter, Meter)] == ["charged"] * 3
    assert served.charged() == ["job-0", "job-1", "job-2"]
    assert client.is_closed
    # Nothing left for a replay: every spend's answer arrived before the pool closed.
    with served.next_start() as again:
        assert again.pending_spends() == []


@pytest.mark.parametrize("kind", KINDS)
def test_a_spend_that_fails_while_closing_is_not_retried_and_stays_pending(
    served: Served, kind: str
) -> None:
    """The 503 arrives once the client is closing: no new attempt; the next start's
    replay sends it, once."""
    served.fake.fail_next("spend", status=503, delay=DELAY)
    client = served.client(kind, max_retries=2)
    (outcome,) = run_blocks(served, kind, client, 1, closer(kind))

    assert isinstance(outcome, SpendFailedError), outcome
    assert outcome.reference == "job-0"
    assert_exception_is_clean(outcome)
    assert served.spends_arrived() == 1  # not retried on a closing pool
    assert served.charged() == []  # the fake refused it: a 503 charges nothing
    with served.next_start() as again:
        assert [spend.reference for spend in again.pending_spends()] == ["job-0"]
        assert [charge.reference for charge in again.replay_pending()] == ["job-0"]
    assert served.charged() == ["job-0"]


@pytest.mark.parametrize("kind", ["httpx", "aiohttp"])
def test_a_close_cut_short_ends_the_spends_in_flight_as_sdk_errors(
    served: Served, kind: str
) -> None:
    """`aclose()` cancelled while it waits closes the pool under the requests: each
    block raises SpendFailedError with its reference, pending for the replay, which
    charges nothing twice (the fake charged each spend when it arrived)."""
    served.fake.fail_next("spend", delay=HELD, times=2)
    client = served.client(kind)
    outcomes = run_blocks(
        served, kind, client, 2, lambda c: asyncio.wait_for(c.aclose(), DELAY / 10)
    )

    assert [type(outcome) for outcome in outcomes] == [SpendFailedError] * 2, outcomes
    for index, outcome in enumerate(outcomes):
        assert isinstance(outcome, SpendFailedError)
        assert outcome.reference == f"job-{index}"
        assert isinstance(outcome.__cause__, AmaiError)
        assert_exception_is_clean(outcome)
    assert client.is_closed
    assert served.charged() == ["job-0", "job-1"]
    with served.next_start() as again:
        assert sorted(s.reference for s in again.pending_spends()) == ["job-0", "job-1"]
        report = again.replay_pending()
        assert sorted(charge.reference for charge in report) == ["job-0", "job-1"]
    assert served.charged() == ["job-0", "job-1"]  # the replay charged nothing again


@pytest.mark.skipif(not hasattr(signal, "pthread_kill"), reason="POSIX signals")
def test_a_signal_handler_that_closes_the_client_does_not_wait_for_its_own_thread(
    served: Served,
) -> None:
    """The handler interrupts the main thread's own spend: waiting for it would wait
    forever. The pool closes at once; the block raises SpendFailedError."""
    served.fake.fail_next("spend", delay=HELD)
    client = served.client("sync")
    assert isinstance(client, AmaiClient)
    main = threading.get_ident()
    previous = signal.signal(signal.SIGUSR1, lambda signum, frame: client.close())

    def signal_once_sent() -> None:
        wait_until(lambda: served.spends_arrived() == 1, "the spend sent")
        signal.pthread_kill(main, signal.SIGUSR1)

    signaller = threading.Thread(target=signal_once_sent)
    faulthandler.dump_traceback_later(WAIT, exit=True)  # a deadlock ends the run, loudly
    try:
        signaller.start()
        with pytest.raises(SpendFailedError) as info, client.metered("chat", reference="job-0"):
            pass
    finally:
        faulthandler.cancel_dump_traceback_later()
        signal.signal(signal.SIGUSR1, previous)
        signaller.join(WAIT)
    assert info.value.reference == "job-0"
    assert isinstance(info.value.__cause__, APIConnectionError)
    assert client.is_closed
    with served.next_start() as again:
        assert [charge.reference for charge in again.replay_pending()] == ["job-0"]
    assert served.charged() == ["job-0"]


class Interrupted(Exception):
    """What the test's signal handler raises in the middle of close()."""


@pytest.mark.skipif(not hasattr(signal, "pthread_kill"), reason="POSIX signals")
def test_an_interrupt_while_close_waits_closes_the_pool_at_once(served: Served) -> None:
    """Ctrl-C during close(): the wait stops, the pool closes, and the spend in flight on
    another thread ends as SpendFailedError, pending for the replay."""
    served.fake.fail_next("spend", delay=HELD)
    client = served.client("sync")
    assert isinstance(client, AmaiClient)
    main = threading.get_ident()
    waiting = threading.Event()

    class Waiting(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.getMessage().startswith("closing: waiting for"):
                waiting.set()

    def interrupt(signum: int, frame: object) -> None:
        raise Interrupted

    def in_the_wait() -> bool:
        # Signalled any earlier (in a log handler, say), the interrupt could be caught
        # by whatever runs then: only inside the wait itself is it close()'s to raise.
        frame = sys._current_frames().get(main)
        return frame is not None and frame.f_code.co_name == "wait"

    def interrupt_once_waiting() -> None:
        assert waiting.wait(WAIT)
        wait_until(in_the_wait, "close() waiting")
        signal.pthread_kill(main, signal.SIGUSR1)

    handler = Waiting()
    sdk_logger = logging.getLogger("amaimedia")
    level = sdk_logger.level
    sdk_logger.addHandler(handler)
    sdk_logger.setLevel(logging.INFO)
    previous = signal.signal(signal.SIGUSR1, interrupt)
    interrupter = threading.Thread(target=interrupt_once_waiting)
    interrupter.start()
    try:

        def close_interrupted(c: AmaiClient) -> None:
            with pytest.raises(Interrupted):
                c.close()

        (outcome,) = run_blocks(served, "sync", client, 1, close_interrupted)
    finally:
        signal.signal(signal.SIGUSR1, previous)
        sdk_logger.removeHandler(handler)
        sdk_logger.setLevel(level)
        interrupter.join(WAIT)
    assert isinstance(outcome, SpendFailedError), outcome
    assert outcome.reference == "job-0"
    assert client.is_closed
    with served.next_start() as again:
        assert [charge.reference for charge in again.replay_pending()] == ["job-0"]
    assert served.charged() == ["job-0"]


@pytest.mark.parametrize("kind", KINDS)
def test_a_block_still_working_when_the_client_closes_keeps_its_spend_pending(
    served: Served, kind: str
) -> None:
    """The shutdown order in docs/metered.md: blocks that end after close() lose
    nothing with a journal; the next start's replay charges them."""
    client = served.client(kind)

    async def work_async(aclient: AsyncAmaiClient) -> BaseException | None:
        try:
            async with aclient.metered("chat", reference="job-0"):
                await aclient.aclose()
        except BaseException as exc:
            return exc
        return None

    if isinstance(client, AmaiClient):
        with pytest.raises(SpendFailedError) as info, client.metered("chat", reference="job-0"):
            client.close()
        raised: BaseException | None = info.value
    else:
        raised = asyncio.run(work_async(client))
    assert isinstance(raised, SpendFailedError)
    assert raised.reference == "job-0"
    assert served.spends_arrived() == 0
    with served.next_start() as again:
        assert [charge.reference for charge in again.replay_pending()] == ["job-0"]
    assert served.charged() == ["job-0"]


# --- a pool of the caller's -------------------------------------------------------------


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_pool_its_owner_closes_under_a_spend_ends_it_as_an_sdk_error(
    served: Served, kind: str
) -> None:
    """The SDK does not own an `http_client` of the caller's, nor wait for it: closed by
    its owner mid-spend, the block still raises the SDK's error, with its reference."""
    served.fake.fail_next("spend", delay=DELAY)
    if kind == "sync":
        http = httpx.Client()
        client: AmaiClient | AsyncAmaiClient = served.client("sync", http_client=http)
        (outcome,) = run_blocks(served, "sync", client, 1, lambda c: http.close())
    else:

        async def scenario() -> list[Outcome]:
            http = httpx.AsyncClient()
            aclient = AsyncAmaiClient(
                served.key,
                base_url=served.base_url,
                http_client=http,
                spend_journal=served.journal,
            )
            return await _run_tasks(served, aclient, 1, lambda c: http.aclose())

        (outcome,) = asyncio.run(scenario())
    assert isinstance(outcome, SpendFailedError), outcome
    assert outcome.reference == "job-0"
    assert isinstance(outcome.__cause__, AmaiError)
    assert_exception_is_clean(outcome)
    with served.next_start() as again:
        assert [charge.reference for charge in again.replay_pending()] == ["job-0"]
    assert served.charged() == ["job-0"]


def test_closing_a_copy_leaves_the_original_sending(served: Served) -> None:
    """A copy does not own the pool: closing it waits for nothing and cuts nothing."""
    served.fake.fail_next("spend", delay=DELAY)
    client = served.client("sync")
    assert isinstance(client, AmaiClient)
    copy = client.with_options(timeout=10)
    (outcome,) = run_blocks(served, "sync", client, 1, lambda c: copy.close())
    assert isinstance(outcome, Meter)
    assert outcome.state == "charged"
    assert copy.is_closed
    assert not client.is_closed
    client.close()


def test_a_child_process_does_not_wait_for_its_parents_attempts(served: Served) -> None:
    """A fork while a spend is in flight: the child's copy of the client has no attempt
    of its own in flight, and closes at once."""
    if not hasattr(os, "fork"):
        pytest.skip("no fork here")
    served.fake.fail_next("spend", delay=DELAY)
    client = served.client("sync")
    assert isinstance(client, AmaiClient)
    outcome: list[Outcome] = []

    def block() -> None:
        try:
            with client.metered("chat", reference="job-0") as meter:
                pass
            outcome.append(meter)
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=block)
    thread.start()
    wait_until(lambda: served.spends_arrived() == 1, "the spend sent")
    with warnings.catch_warnings():
        # Python 3.12 and later warn of a fork in a process with threads: this is one.
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            client.close()
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    client.close()
    thread.join(WAIT)
    assert [type(o) for o in outcome] == [Meter]


# --- the wait's bound -------------------------------------------------------------------


def stuck_attempt(in_flight: InFlight) -> threading.Thread:
    """An attempt begun on another thread that never ends (a count left behind)."""
    request = httpx.Request("POST", "https://api.amaimedia.com/api/v1/tools/spend")
    thread = threading.Thread(target=in_flight.begin, args=(request,))
    thread.start()
    thread.join(WAIT)
    return thread


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_the_wait_ends_after_the_longest_an_attempt_can_take(
    kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    in_flight = InFlight()
    stuck_attempt(in_flight)
    timeout = httpx.Timeout(0.01)
    if kind == "sync":
        in_flight.close(timeout)
    else:
        asyncio.run(in_flight.aclose(timeout))
    assert "closing the connection pool with 1 request(s) still in flight" in caplog.text
    with pytest.raises(APIConnectionError, match="the client was closed") as info:
        in_flight.begin(httpx.Request("POST", "https://api.amaimedia.com/api/v1/tools/check"))
    assert info.value.retryable is False
