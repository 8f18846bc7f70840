"""Admission across processes: worker processes that share a journal share its reservation book.

The issue's fleet scenario: 4 worker processes on one PostgreSQL journal, 12 concurrent
`metered("chat")` blocks each, funds for 10 blocks on the key. Every block's quote is
answered before any block's spend (a gate across the fleet: no block's work ends until
every block of every worker was admitted or refused), so every quote sees the whole
balance; without a shared book 48 would be admitted and 38 would fail to spend after their
work. The same with 2 processes on one SQLite journal file, 25 blocks each (50 at once).

Then the liveness of a reservation: a worker SIGKILLed inside its block frees its
reservation within 10 s (the issue's bound; with a lock held by the book's connection, or
by the process, it is the time the kernel or server takes to see the process gone), and a
block whose work lasts longer than any lease would keeps its reservation all along.

The server is the SDK's `FakeAmaiServer` over loopback HTTP, in the test's process.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Final

import pytest

from amaimedia import AmaiClient, InsufficientCreditsError
from amaimedia.testing import FakeAmaiServer

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(sys.platform == "win32", reason="the workers die by SIGKILL"),
]

PRICE: Final = FakeAmaiServer.DEFAULT_PRICES["chat"]
# Bounds, never timing assertions: a worker's line, and the release of a killed worker's
# reservation (the correctness bound).
DEADLINE: Final = 60.0
RELEASED_WITHIN: Final = 10.0

# A worker: BLOCKS concurrent blocks on one client; prints `decided` once each was
# admitted or refused, waits for a line on stdin, lets the admitted blocks end (and spend),
# prints what they came to as JSON. With BLOCKS = 1 it prints `admitted` inside the block.
WORKER: Final = """
import json, sys, threading
from amaimedia import AmaiClient, InsufficientCreditsError, SpendFailedError

journal, base_url, key, blocks = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
client = AmaiClient(api_key=key, base_url=base_url, spend_journal=journal)
go = threading.Event()
decided = threading.Semaphore(0)
lock = threading.Lock()
counts = {"charged": 0, "refused": 0, "spend_failed": 0, "other": []}

def count(what, value=None):
    with lock:
        if what == "other":
            counts["other"].append(value)
        else:
            counts[what] += 1

def block():
    entered = False
    try:
        with client.metered("chat"):
            entered = True
            if blocks == 1:  # before `decided`, which the main thread prints then
                print("admitted", flush=True)
            decided.release()
            go.wait(120)
        count("charged")
    except InsufficientCreditsError:
        count("refused")
    except SpendFailedError:
        count("spend_failed")
    except BaseException as exc:
        count("other", repr(exc))
    finally:
        if not entered:
            decided.release()

threads = [threading.Thread(target=block) for _ in range(blocks)]
for thread in threads:
    thread.start()
for _ in range(blocks):
    decided.acquire()
print("decided", flush=True)
sys.stdin.readline()
go.set()
for thread in threads:
    thread.join()
client.close()
print(json.dumps(counts), flush=True)
"""


class Worker:
    """One worker process and its lines."""

    def __init__(self, journal: str, base_url: str, key: str, blocks: int) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", WORKER, journal, base_url, key, str(blocks)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def expect(self, line: str) -> None:
        got = self._line()
        assert got == line, self._failure(f"expected {line!r}, got {got!r}")

    def go(self) -> dict[str, Any]:
        """Let the blocks end; what they came to."""
        stdin = self._stdin()
        stdin.write("go\n")
        stdin.flush()
        counts: dict[str, Any] = json.loads(self._line())
        self.process.wait(DEADLINE)
        assert self.process.returncode == 0, self._failure("it failed")
        return counts

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(DEADLINE)

    def stderr(self) -> str:
        assert self.process.stderr is not None
        return self.process.stderr.read()

    def _line(self) -> str:
        assert self.process.stdout is not None
        # The worker's own waits are bounded (go.wait), so it never hangs for good.
        return self.process.stdout.readline().strip()

    def _stdin(self) -> IO[str]:
        assert self.process.stdin is not None
        return self.process.stdin

    def _failure(self, what: str) -> str:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        return f"worker {what}; its stderr:\n{self.stderr()[-3000:]}"

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        for stream in (self.process.stdin, self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()


@contextmanager
def workers(
    journal: str, base_url: str, key: str, count: int, blocks: int
) -> Iterator[list[Worker]]:
    started = [Worker(journal, base_url, key, blocks) for _ in range(count)]
    try:
        yield started
    finally:
        for worker in started:
            worker.close()


def run_fleet(
    journal: str, processes: int, blocks: int, funds_for: int = 10
) -> tuple[dict[str, Any], FakeAmaiServer, str]:
    """`processes` workers of `blocks` blocks each, funds for `funds_for` blocks; their
    totals."""
    fake = FakeAmaiServer()
    key = fake.create_key(balance=funds_for * PRICE)
    totals: dict[str, Any] = {"charged": 0, "refused": 0, "spend_failed": 0, "other": []}
    with fake.serve() as base_url, workers(journal, base_url, key, processes, blocks) as fleet:
        for worker in fleet:  # every block of the fleet admitted or refused, none ended
            worker.expect("decided")
        for worker in fleet:
            counts = worker.go()
            for name in ("charged", "refused", "spend_failed"):
                totals[name] += counts[name]
            totals["other"] += counts["other"]
            stderr = worker.stderr()
            assert "reservation book could not" not in stderr, stderr
    print(f"{processes} processes x {blocks} blocks, funds for {funds_for}: {totals}")
    return totals, fake, key


def test_four_workers_on_postgresql_never_give_work_away(postgres_url: str) -> None:
    totals, fake, key = run_fleet(postgres_url, processes=4, blocks=12)
    assert totals["other"] == []
    assert totals["spend_failed"] == 0
    assert totals["charged"] >= 8
    assert totals["charged"] + totals["refused"] == 48
    assert len(fake.spends) == totals["charged"]
    assert fake.balance(key) == (10 - totals["charged"]) * PRICE


@pytest.mark.parametrize("funds_for", [30, 1000])
def test_workers_sharing_allotments_never_give_work_away(
    postgres_url: str, funds_for: int
) -> None:
    # With funds for 30 (or more), the workers' first blocks are admitted from allotments
    # (room for several blocks, one reservation each in the database), the rest one by
    # one once the balance left is too small for another; with funds for 1000, all from
    # allotments.
    totals, fake, key = run_fleet(postgres_url, processes=4, blocks=12, funds_for=funds_for)
    assert totals["other"] == []
    assert totals["spend_failed"] == 0
    assert totals["charged"] >= min(48, funds_for * 8 // 10)
    assert totals["charged"] + totals["refused"] == 48
    assert len(fake.spends) == totals["charged"]
    assert fake.balance(key) == (funds_for - totals["charged"]) * PRICE


def test_two_processes_on_one_sqlite_file_never_give_work_away(tmp_path: Path) -> None:
    totals, fake, key = run_fleet(str(tmp_path / "j.sqlite3"), processes=2, blocks=25)
    assert totals["other"] == []
    assert totals["spend_failed"] == 0
    assert totals["charged"] >= 8
    assert totals["charged"] + totals["refused"] == 50
    assert len(fake.spends) == totals["charged"]
    assert fake.balance(key) == (10 - totals["charged"]) * PRICE


def try_block(client: AmaiClient) -> bool:
    """Whether a block is admitted (it ends at once, charging)."""
    try:
        with client.metered("chat"):
            return True
    except InsufficientCreditsError:
        return False


@pytest.mark.parametrize("kind", ["postgres", "sqlite"])
def test_a_killed_workers_reservation_is_released_promptly(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    journal = (
        str(request.getfixturevalue("postgres_url"))
        if kind == "postgres"
        else str(tmp_path / "j.sqlite3")
    )
    fake = FakeAmaiServer()
    key = fake.create_key(balance=PRICE)  # funds for one block
    with (
        fake.serve() as base_url,
        workers(journal, base_url, key, 1, 1) as [worker],
        AmaiClient(api_key=key, base_url=base_url, spend_journal=journal) as client,
    ):
        worker.expect("admitted")
        assert not try_block(client)  # the worker's block holds the funds
        worker.kill()
        killed = time.monotonic()
        while not try_block(client):
            assert time.monotonic() - killed <= RELEASED_WITHIN
            time.sleep(0.05)
        released = time.monotonic() - killed
    print(f"{kind}: a SIGKILLed worker's reservation released {released:.3f} s after the kill")
    assert released <= RELEASED_WITHIN
    assert len(fake.spends) == 1  # the test's block; the killed one never spent


@pytest.mark.parametrize("kind", ["postgres", "sqlite"])
def test_long_work_keeps_its_reservation(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """A block of 5 s, longer than any lease would be, while others are refused around it."""
    journal = (
        str(request.getfixturevalue("postgres_url"))
        if kind == "postgres"
        else str(tmp_path / "j.sqlite3")
    )
    fake = FakeAmaiServer()
    key = fake.create_key(balance=PRICE + PRICE // 2)  # one block, and half of another
    with (
        fake.serve() as base_url,
        workers(journal, base_url, key, 1, 1) as [worker],
        AmaiClient(api_key=key, base_url=base_url, spend_journal=journal) as client,
    ):
        worker.expect("admitted")
        worker.expect("decided")
        start = time.monotonic()
        attempts = 0
        while time.monotonic() - start < 5.0:
            assert not try_block(client)
            attempts += 1
            time.sleep(0.1)
        counts = worker.go()
    assert attempts > 10
    assert counts == {"charged": 1, "refused": 0, "spend_failed": 0, "other": []}
    assert len(fake.spends) == 1
