"""The spend journal across processes: claims, SIGKILL, and a fresh process replaying.

The workers in `tests/wire/journal_workers/` print a line at each step of a metered block, so
that a test can SIGKILL one at a known point: after the work, with the spend held by the
server, with the answer lost after the server charged. The server is the SDK's own
`FakeAmaiServer` over loopback HTTP; its ledger has one row per real charge, which is
what "charged exactly once" is counted on.
"""

from __future__ import annotations

import json
import os
import queue
import random
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO, Any

import pytest

from amaimedia import AmaiClient, SpendFailedError
from amaimedia._journal._sqlite import SQLiteSpendJournal as SpendJournal
from amaimedia.testing import FakeAmaiServer
from tests.conftest import Harness
from tests.journal.ledger import (
    Ledger,
    entry_id,
    journal_client,
    leave_pending,
    pending_references,
    rows,
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        sys.platform == "win32", reason="claims are fcntl locks, and the workers die by SIGKILL"
    ),
]

WORKERS = Path(__file__).parent / "journal_workers"
# How long to wait for a worker to reach a step: generous for a loaded CI machine. It
# bounds a poll, it is never a timing assertion.
DEADLINE = 30.0
DUB_COST = 40 * 3  # FakeAmaiServer's price of the workers' dub x3


class Worker:
    """A worker script in a child process, and the lines it printed."""

    def __init__(self, script: str, args: tuple[str, ...], env: dict[str, str], log: Path) -> None:
        self.log = log
        self._stderr: IO[str] = log.open("w")
        self.process = subprocess.Popen(
            [sys.executable, str(WORKERS / script), *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
            env=env,
        )
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def _next(self, waiting_for: str) -> str | None:
        try:
            line = self._queue.get(timeout=DEADLINE)
        except queue.Empty:
            pytest.fail(f"{self.log.stem}: nothing within {DEADLINE} s, waiting for {waiting_for}")
        if line is not None:
            self.lines.append(line)
        return line

    def wait_for(self, marker: str) -> None:
        """Read the worker's lines until `marker`; fail if it exits first."""
        while (line := self._next(repr(marker))) != marker:
            if line is None:
                code = self.process.wait(timeout=DEADLINE)
                pytest.fail(
                    f"{self.log.stem} exited with {code} before {marker!r}:\n"
                    + self.log.read_text()
                )

    def finish(self) -> list[str]:
        """Every line up to the worker's exit, which must be a success."""
        while self._next("the end") is not None:
            pass
        assert self.process.wait(timeout=DEADLINE) == 0, self.log.read_text()
        return self.lines

    def go(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write("go\n")
        self.process.stdin.flush()

    def kill(self) -> None:
        """SIGKILL: no cleanup of any kind runs in the worker."""
        self.process.kill()
        self.process.wait(timeout=DEADLINE)
        while self._next("the end") is not None:
            pass

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=DEADLINE)
        self._reader.join(timeout=DEADLINE)
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None:
                stream.close()
        self._stderr.close()


Spawn = Callable[..., Worker]


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Spawn]:
    workers: list[Worker] = []

    def start(script: str, *args: str, env: dict[str, str] | None = None) -> Worker:
        log = tmp_path / f"{Path(script).stem}-{len(workers)}.stderr"
        worker = Worker(script, args, dict(os.environ if env is None else env), log)
        workers.append(worker)
        return worker

    yield start
    for worker in workers:
        worker.close()


class Served:
    """A `FakeAmaiServer` on loopback, one account on it, and a journal path."""

    def __init__(self, fake: FakeAmaiServer, base_url: str, journal: Path) -> None:
        self.fake = fake
        self.base_url = base_url
        self.journal = journal
        self.start_balance = 1_000_000
        self.key = fake.create_key(balance=self.start_balance)
        self._clients: list[AmaiClient] = []

    @property
    def env(self) -> dict[str, str]:
        """The environment of a worker: this account's key, and this server."""
        return {**os.environ, "AMAI_API_KEY": self.key, "AMAI_BASE_URL": self.base_url}

    def client(self, **options: Any) -> AmaiClient:
        client = AmaiClient(
            api_key=self.key, base_url=self.base_url, spend_journal=self.journal, **options
        )
        self._clients.append(client)
        return client

    def charged(self) -> list[str]:
        """The references in the server's ledger, one per real charge."""
        return [spend.reference for spend in self.fake.spends]

    def spend_requests(self) -> list[str]:
        return [r.body["reference"] for r in self.fake.requests if r.endpoint == "spend"]

    def close(self) -> None:
        for client in self._clients:
            client.close()


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    fake = FakeAmaiServer()
    with fake.serve() as base_url:
        server = Served(fake, base_url, tmp_path / "spends.sqlite3")
        try:
            yield server
        finally:
            server.close()


def wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"waited {DEADLINE} s for {what}")
        time.sleep(0.01)


def states(path: Path) -> dict[str, str]:
    return {row["reference"]: row["state"] for row in rows(path)}


# -- claims ------------------------------------------------------------------------------


def test_an_entry_claimed_by_another_process_is_skipped_until_it_dies(
    harness: Harness, tmp_path: Path, spawn: Spawn
) -> None:
    path = tmp_path / "spends.sqlite3"
    ledger = Ledger()
    client = journal_client(harness, ledger, path, max_retries=0)
    leave_pending(harness, client, ledger, "job-1", "job-2")
    ledger.sent.clear()
    held = entry_id(path, "job-1")
    holder = spawn("hold_claim.py", str(path), str(held))
    holder.wait_for("claimed")

    assert not SpendJournal(path).claim(held)
    charges = harness.run(client.replay_pending())

    assert [c.reference for c in charges] == ["job-2"]
    assert ledger.sent == ["job-2"]  # nothing was sent for the claimed entry
    assert pending_references(harness, client) == ["job-1"]

    holder.kill()

    # No lease to wait out: the operating system dropped the dead process's lock.
    journal = SpendJournal(path)
    assert journal.claim(held)
    journal.release(held)
    assert [c.reference for c in harness.run(client.replay_pending())] == ["job-1"]
    assert ledger.sent == ["job-2", "job-1"]
    assert sorted(ledger.charged) == ["job-1", "job-2"]


def test_a_claim_held_in_this_process_is_refused_to_another(tmp_path: Path, spawn: Spawn) -> None:
    path = tmp_path / "spends.sqlite3"
    journal = SpendJournal(path)
    assert journal.claim(3)
    try:
        refused = spawn("hold_claim.py", str(path), "3")
        refused.wait_for("refused")
        assert refused.process.wait(timeout=DEADLINE) == 1
    finally:
        journal.release(3)
    taker = spawn("hold_claim.py", str(path), "3")
    taker.wait_for("claimed")
    assert not journal.claim(3)


def test_processes_replaying_one_journal_send_each_entry_once(
    served: Served, spawn: Spawn
) -> None:
    references = [f"job-{n:02d}" for n in range(12)]
    client = served.client(max_retries=0)
    served.fake.fail_next("spend", status=503, times=len(references))
    for reference in references:
        with (
            pytest.raises(SpendFailedError, match="stays pending"),
            client.metered("dub", units=3, reference=reference),
        ):
            pass
    # Slow spends, so that the replays overlap.
    served.fake.fail_next("spend", delay=0.05, times=len(references))
    replayers = [spawn("replay.py", str(served.journal), "--wait", env=served.env) for _ in "abc"]
    for replayer in replayers:
        replayer.wait_for("ready")

    for replayer in replayers:
        replayer.go()
    results = [json.loads(replayer.finish()[-1]) for replayer in replayers]

    charged = [reference for result in results for reference in result["charged"]]
    assert sorted(charged) == references
    answered = [
        r.body["reference"]
        for r in served.fake.requests
        if r.endpoint == "spend" and r.status == 200
    ]
    assert sorted(answered) == references  # each sent once, by one of the processes
    assert sorted(served.charged()) == references
    assert set(states(served.journal).values()) == {"done"}


# -- killed between the work and the spend -----------------------------------------------


def test_a_job_killed_after_the_work_is_replayed_by_a_fresh_process(
    served: Served, spawn: Spawn
) -> None:
    job = spawn(
        "metered_job.py", str(served.journal), "job-1", "--hold-before-spend", env=served.env
    )
    job.wait_for("sending")  # journaled; the request has not left
    job.kill()

    assert served.spend_requests() == []
    assert states(served.journal) == {"job-1": "pending"}
    # Opening the journal, even listing it, sends nothing: replay is explicit.
    lister = spawn("replay.py", str(served.journal), "--list", env=served.env)
    listed = json.loads(lister.finish()[-1])
    assert listed == {"before": ["job-1"], "charged": [], "after": ["job-1"]}
    assert served.spend_requests() == []
    replayer = spawn("replay.py", str(served.journal), env=served.env)
    result = json.loads(replayer.finish()[-1])

    assert result == {"before": ["job-1"], "charged": ["job-1"], "after": []}
    assert served.charged() == ["job-1"]
    assert served.fake.balance(served.key) == served.start_balance - DUB_COST


def test_a_job_killed_while_the_server_holds_its_spend_is_replayed_once(
    served: Served, spawn: Spawn
) -> None:
    served.fake.fail_next("spend", delay=DEADLINE)  # answered only after the kill
    job = spawn("metered_job.py", str(served.journal), "job-1", env=served.env)
    wait_until(lambda: served.spend_requests() == ["job-1"], "the spend to reach the server")
    job.kill()

    [row] = rows(served.journal)
    assert (row["reference"], row["state"], row["attempts"]) == ("job-1", "pending", 0)
    replayer = spawn("replay.py", str(served.journal), env=served.env)
    result = json.loads(replayer.finish()[-1])

    assert result == {"before": ["job-1"], "charged": ["job-1"], "after": []}
    assert served.charged() == ["job-1"]
    assert served.fake.balance(served.key) == served.start_balance - DUB_COST
    assert states(served.journal) == {"job-1": "done"}


@pytest.mark.parametrize(
    ("hold", "step"),
    [
        pytest.param("--hold-retries", "retrying", id="answer-lost"),
        pytest.param("--hold-after-answer", "answered", id="answered-not-marked"),
    ],
)
def test_a_job_killed_after_the_server_charged_replays_without_charging_again(
    served: Served, spawn: Spawn, hold: str, step: str
) -> None:
    if hold == "--hold-retries":
        served.fake.fail_next("spend", drop_after_commit=True)
    job = spawn("metered_job.py", str(served.journal), "job-1", hold, env=served.env)
    job.wait_for(step)
    assert served.charged() == ["job-1"]
    job.kill()
    assert states(served.journal) == {"job-1": "pending"}

    client = served.client()
    [pending] = client.pending_spends()
    charges = client.replay_pending()

    assert pending.reference == "job-1"
    assert [(c.reference, c.charged) for c in charges] == [("job-1", DUB_COST)]
    assert served.charged() == ["job-1"]  # the replay charged nothing new
    assert served.fake.balance(served.key) == served.start_balance - DUB_COST
    assert client.pending_spends() == []
    assert client.replay_pending() == []


def test_jobs_killed_at_random_moments_are_each_charged_once(served: Served, spawn: Spawn) -> None:
    count = 20
    seeded = random.Random(20260703)
    # Each job works 0.2 s, waits 0.1 s between its journal entry and its spend request,
    # then the server holds the answer 0.2 s: kills drawn from 0-0.7 s after the work
    # starts land in the work, before the spend, in flight, or after the end.
    served.fake.fail_next("spend", delay=0.2, times=count)
    jobs = {
        f"job-{n:02d}": spawn(
            "metered_job.py",
            str(served.journal),
            f"job-{n:02d}",
            "--work=0.2",
            "--pause-before-spend=0.1",
            env=served.env,
        )
        for n in range(count)
    }
    delays = {reference: seeded.uniform(0.0, 0.7) for reference in jobs}

    def kill_later(reference: str) -> None:
        jobs[reference].wait_for("working")
        time.sleep(delays[reference])
        jobs[reference].kill()

    with ThreadPoolExecutor(max_workers=count) as pool:
        list(pool.map(kill_later, jobs))

    served.fake.reset_faults()
    journaled = states(served.journal)
    charged_before = Counter(served.charged())
    finished = {reference for reference, job in jobs.items() if "done" in job.lines}
    pending = sorted(reference for reference, state in journaled.items() if state == "pending")

    assert set(charged_before) <= set(journaled)  # nothing charged without an entry
    assert {r for r, state in journaled.items() if state == "done"} <= set(charged_before)
    assert finished <= set(charged_before)

    charges = served.client().replay_pending()

    assert sorted(c.reference for c in charges) == pending
    charged_after = Counter(served.charged())
    assert set(charged_after) == set(journaled)  # every journaled job was charged...
    assert set(charged_after.values()) <= {1}  # ...exactly once
    assert set(states(served.journal).values()) <= {"done"}
    assert served.fake.balance(served.key) == served.start_balance - DUB_COST * len(journaled)
    print(
        f"\n{count} jobs: {count - len(journaled)} killed before their entry was written, "
        f"{len(pending)} pending after the kill "
        f"({len([r for r in pending if r in charged_before])} already charged), "
        f"{len(finished)} finished; replay charged {len(charges)}, "
        f"ledger {sum(charged_after.values())} rows for {len(journaled)} entries"
    )


@pytest.mark.parametrize(
    ("options", "step", "journaled", "charged"),
    [
        pytest.param(("--hold-in-check",), "checking", {}, [], id="before-the-block"),
        pytest.param(("--work=60",), "working", {}, [], id="during-the-work"),
        pytest.param(("--hold-after-done",), "done", {"job-1": "done"}, ["job-1"], id="after-it"),
    ],
)
def test_a_job_killed_before_or_after_its_spend_leaves_nothing_to_replay(
    served: Served,
    spawn: Spawn,
    options: tuple[str, ...],
    step: str,
    journaled: dict[str, str],
    charged: list[str],
) -> None:
    """The kill points around the spend that the tests above leave out: while the check
    is in flight (the block has not started), in the middle of the work, and after the
    block ended. Before the spend nothing is journaled or charged; after it, the entry is
    done. Either way a fresh process finds nothing to replay, and charges nothing."""
    job = spawn("metered_job.py", str(served.journal), "job-1", *options, env=served.env)
    job.wait_for(step)
    job.kill()

    assert states(served.journal) == journaled
    assert served.charged() == charged
    replayer = spawn("replay.py", str(served.journal), env=served.env)
    result = json.loads(replayer.finish()[-1])

    assert result == {"before": [], "charged": [], "after": []}
    assert served.charged() == charged
    assert served.spend_requests() == charged
    assert served.fake.balance(served.key) == served.start_balance - DUB_COST * len(charged)
