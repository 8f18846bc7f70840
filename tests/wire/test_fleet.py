"""A fleet on one PostgreSQL journal: workers killed at random moments, the database restarted.

Four worker processes (`tests/wire/fleet_workers/worker.py`, one of them on the async
client) share one PostgreSQL spend journal, each in a working directory of its own, its
"machine": nothing on disk is shared but the database. The test hands out jobs one at a
time on the workers' stdin; each job is a metered block with the reference `job-N`, and
the last statement of its body appends `job-N` to the machine's `completed.log` (flushed
and fsynced): that file says which blocks' work completed. The server is the SDK's own
`FakeAmaiServer` over loopback HTTP, watched by the test: it holds the spends it was told
to hold, and counts every spend request it receives.

The test SIGKILLs workers at moments drawn from a fixed seed, of three kinds:

- during the work: the worker printed `work N` and sleeps inside the block; nothing was
  journaled or sent, and nothing may ever be charged for that job (it is not handed out
  again);
- in flight: the server holds the spend request, unprocessed; after the kill it either
  goes on and charges it (a server that read the whole request) or drops it unread, as
  the seed says;
- after the commit: the server charged the spend and holds back the answer.

A killed worker is started again on the same machine (a new process, which first replays
what the journal holds) and the jobs go on. PostgreSQL is restarted once (a fast stop
and a start) while three workers run: their blocks keep charging, the journal's failures
are logged. The fourth machine sits idle through the restart, with connections to the
database opened before it; no block handed out after the database came back may go out
without a journal entry, on that machine or any other. At the end the workers stop,
`amaimedia replay --json` drains the journal in a process of its own, and the server's
ledger (`fake.spends`) and the journal's table are compared with the machines'
completion logs: every block whose work completed is charged exactly once, no block whose
work did not complete is charged, no reference is charged twice (sent twice, by a replay,
is allowed and counted), and nothing is left pending.

What the test does not cover, on purpose:

- A kill between "the work completed" (the log line) and "the pending entry committed"
  (a few statements of the SDK later, microseconds) loses that charge: the journal
  cannot hold what was never written to it. None of the three kill moments is in that
  window; the transactional outbox (`add_pending_spend`, the entry committed in the
  work's own transaction) is what closes it, and that is another test.
- A kill while PostgreSQL is down would lose a spend that could not be journaled: the
  outage rule sends the spend anyway, and a worker killed before the answer leaves
  nothing to replay. So no kill is planned from the moment a restart is wanted until
  every worker has finished a job handed out after the database came back.

Everything is drawn from `SEED` (`AMAI_FLEET_SEED` overrides it): which jobs are killed,
of which kind, when, how long each job's work takes. The interleaving of four processes
still varies from run to run; the checks do not depend on it. Every wait is bounded; a
failure kills every worker and shows the tail of each one's stderr. The figures of the
run are printed on one line (visible with `-s`) and written as JSON to the file named by
`AMAI_FLEET_REPORT`, when set.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import random
import subprocess
import sys
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Final, Literal, NoReturn
from urllib.parse import urlsplit

import psycopg
import pytest

from amaimedia._constants import SPEND_PATH
from amaimedia.testing import FakeAmaiServer
from amaimedia.testing._app import Outcome
from tests.postgres import PostgresServer

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(sys.platform == "win32", reason="the workers die by SIGKILL"),
]

# Read when the module loads: tests/conftest.py clears every AMAI_* variable for each test.
SEED: Final = int(os.environ.get("AMAI_FLEET_SEED", "20260801"))
REPORT: Final = os.environ.get("AMAI_FLEET_REPORT", "")

FLEET_WORKERS: Final = Path(__file__).parent / "fleet_workers"
WORKERS: Final = 4
ASYNC_WORKERS: Final = frozenset({3})
JOBS: Final = 240
Kind = Literal["work", "in_flight", "after_commit"]
KILLS: Final[dict[Kind, int]] = {"work": 5, "in_flight": 5, "after_commit": 5}
MAX_OUTSTANDING: Final = 2  # kills planned and not done yet, each on its own machine
WORK_SECONDS: Final = (0.01, 0.05)  # the range of a job's work
START_BALANCE: Final = 10**9
DUB_COST: Final = 40 * 3  # FakeAmaiServer's price of the workers' dub x3
# Bounds, never timing assertions: one wait for a worker or the server; a job from its
# hand-out to its end; the whole run.
DEADLINE: Final = 30.0
JOB_DEADLINE: Final = 20.0
FLEET_DEADLINE: Final = 150.0
# The work of a job to be killed during its work: the kill always comes first.
HELD_WORK: Final = 60.0
TAIL: Final = 3000


# -- the server ----------------------------------------------------------------------------


@dataclass
class Hold:
    """A spend the server holds: job `n`'s, when the worker `ident` sends it."""

    n: int
    ident: str
    kind: Kind
    process_after: bool  # in flight: charge it after the kill, or drop it unread
    released: threading.Event = field(default_factory=threading.Event)


@dataclass(frozen=True)
class Event:
    """Something the main loop acts on: a worker's line or exit, the server, PostgreSQL."""

    what: Literal["line", "eof", "held", "restarted"]
    slot: int = -1
    incarnation: int = -1
    text: str = ""
    hold: Hold | None = None
    error: BaseException | None = None


def spend_reference(target: str, body: bytes) -> str | None:
    """The reference of a spend request, or None for anything else."""
    if urlsplit(target).path != SPEND_PATH:
        return None
    try:
        document = json.loads(body)
    except ValueError:
        return None
    reference = document.get("reference") if isinstance(document, dict) else None
    return reference if isinstance(reference, str) else None


class FleetServer(FakeAmaiServer):
    """The fake API, which counts the spends it receives and holds the ones it is told to.

    A hold applies to the first spend of its reference sent by its worker: a replay by
    another worker passes. The handler thread waits, outside the fake's lock, until the
    test released the hold (after the kill).
    """

    def __init__(self, events: queue.Queue[Event]) -> None:
        super().__init__()
        self._events = events
        self._holds_lock = threading.Lock()
        self._holds: dict[str, Hold] = {}
        self._all_holds: list[Hold] = []
        self.sent: Counter[str] = Counter()

    def hold(self, hold: Hold) -> None:
        with self._holds_lock:
            self._holds[f"job-{hold.n}"] = hold
            self._all_holds.append(hold)

    def release_all(self) -> None:
        with self._holds_lock:
            self._holds.clear()
            for hold in self._all_holds:
                hold.released.set()

    def sent_counts(self) -> Counter[str]:
        with self._holds_lock:
            return Counter(self.sent)

    def _dispatch(
        self, method: str, target: str, headers: Iterable[tuple[str, str]], body: bytes
    ) -> Outcome:
        headers = tuple(headers)
        reference = spend_reference(target, body)
        hold = None
        if reference is not None:
            ident = next((v for k, v in headers if k.lower() == "x-fleet-worker"), None)
            with self._holds_lock:
                self.sent[reference] += 1
                hold = self._holds.get(reference)
                if hold is not None and hold.ident == ident:
                    del self._holds[reference]
                else:
                    hold = None
        if hold is not None and hold.kind == "in_flight":
            self._events.put(Event("held", hold=hold))
            hold.released.wait(DEADLINE)
            if not hold.process_after:
                return Outcome(None)  # cut, never processed
        outcome = super()._dispatch(method, target, headers, body)
        if hold is not None and hold.kind == "after_commit":
            self._events.put(Event("held", hold=hold))
            hold.released.wait(DEADLINE)
        return outcome


# -- the workers ---------------------------------------------------------------------------


@dataclass
class Plan:
    """A kill planned for a job: its kind, and how long after its moment it comes.

    `gap` is how many jobs are handed out, after the plan before it was placed, before this
    one may be; `n` is the job it went to.
    """

    gap: int
    kind: Kind
    delay: float
    process_after: bool
    n: int = -1
    hold: Hold | None = None


@dataclass
class Kill:
    """A kill as it happened."""

    n: int
    kind: Kind
    slot: int
    incarnation: int
    process_after: bool
    journal_state: str | None
    charged_at_kill: bool


class Slot:
    """One machine of the fleet: its directory, and the worker process running on it."""

    def __init__(self, index: int, root: Path, events: queue.Queue[Event]) -> None:
        self.index = index
        self.machine = root / f"machine-{index}"
        self.machine.mkdir()
        self.logs = root / "logs"
        self.logs.mkdir(exist_ok=True)
        self.use_async = index in ASYNC_WORKERS
        self.events = events
        self.incarnation = 0
        self.process: subprocess.Popen[str] | None = None
        self._stderr: IO[str] | None = None
        self._reader: threading.Thread | None = None
        self.lines: deque[str] = deque(maxlen=20)
        self.state = "new"  # starting, idle, busy, parked, stopping, stopped
        self.job: int | None = None
        self.job_since = 0.0
        self.plan: Plan | None = None

    @property
    def ident(self) -> str:
        return f"w{self.index}.{self.incarnation}"

    def stderr_path(self, incarnation: int) -> Path:
        return self.logs / f"w{self.index}.{incarnation}.stderr"

    def start(self, journal: str, env: dict[str, str]) -> None:
        self.incarnation += 1
        self._stderr = self.stderr_path(self.incarnation).open("w")
        command = [sys.executable, str(FLEET_WORKERS / "worker.py"), journal, self.ident]
        if self.use_async:
            command.append("--async")
        self.process = subprocess.Popen(
            command,
            cwd=self.machine,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
            env=env,
        )
        self.state = "starting"
        self.job_since = time.monotonic()
        self.job = None
        self.plan = None
        self._reader = threading.Thread(
            target=self._read, args=(self.process, self.incarnation), daemon=True
        )
        self._reader.start()

    def _read(self, process: subprocess.Popen[str], incarnation: int) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            self.events.put(Event("line", self.index, incarnation, line.rstrip("\n")))
        self.events.put(Event("eof", self.index, incarnation))

    def send(self, line: str) -> None:
        assert self.process is not None
        assert self.process.stdin is not None
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()

    def kill(self) -> None:
        """SIGKILL the worker, wait for it, and drop its pipes."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=DEADLINE)
        self._close_pipes()

    def wait_stopped(self) -> int:
        assert self.process is not None
        code = self.process.wait(timeout=DEADLINE)
        self._close_pipes()
        return code

    def _close_pipes(self) -> None:
        if self._reader is not None:
            self._reader.join(timeout=DEADLINE)
            self._reader = None
        assert self.process is not None
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None

    def completed(self) -> list[str]:
        """The references in this machine's completion log (whole lines only)."""
        path = self.machine / "completed.log"
        if not path.exists():
            return []
        text = path.read_text(encoding="utf-8")
        return [line for line in text.splitlines(keepends=True) if line.endswith("\n")]

    def completed_references(self) -> list[str]:
        return [line.rstrip("\n") for line in self.completed()]

    def tail(self) -> str:
        parts = [f"--- machine {self.index} ({self.ident}, {self.state}, job {self.job})"]
        parts.append("last lines: " + " | ".join(self.lines))
        for incarnation in range(1, self.incarnation + 1):
            path = self.stderr_path(incarnation)
            text = path.read_text(errors="replace") if path.exists() else ""
            if text:
                parts.append(f"stderr of w{self.index}.{incarnation}:\n{text[-TAIL:]}")
        return "\n".join(parts)


# -- the journal's table -------------------------------------------------------------------


def journal_rows(url: str) -> list[dict[str, Any]]:
    with psycopg.connect(url, connect_timeout=5) as db:
        cursor = db.execute(
            "SELECT reference, state, charged, attempts FROM amaimedia_spends ORDER BY id"
        )
        names = [column.name for column in cursor.description or ()]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def journal_state(url: str, reference: str) -> str | None:
    with psycopg.connect(url, connect_timeout=5) as db:
        row = db.execute(
            "SELECT state FROM amaimedia_spends WHERE reference = %s", (reference,)
        ).fetchone()
    return None if row is None else str(row[0])


# -- the fleet -----------------------------------------------------------------------------


class Fleet:
    """The test's side of the fleet: hands out jobs, kills workers, restarts PostgreSQL."""

    def __init__(
        self,
        root: Path,
        fake: FleetServer,
        events: queue.Queue[Event],
        env: dict[str, str],
        journal: str,
        postgres: PostgresServer,
    ) -> None:
        self.fake = fake
        self.events = events
        self.env = env
        self.journal = journal
        self.postgres = postgres
        self.rng = random.Random(SEED)
        self.slots = [Slot(index, root, events) for index in range(WORKERS)]
        # Drawn up front, so that the seed alone decides them, whatever the interleaving.
        self.work_seconds = [self.rng.uniform(*WORK_SECONDS) for _ in range(JOBS)]
        kinds: list[Kind] = [kind for kind, count in KILLS.items() for _ in range(count)]
        self.rng.shuffle(kinds)
        self.schedule: deque[Plan] = deque(
            Plan(
                gap=self.rng.randint(2, 16),
                kind=kind,
                delay=self.rng.uniform(0.0, 0.1 if kind == "work" else 0.02),
                process_after=self.rng.random() < 0.5,
            )
            for kind in kinds
        )
        self.restart_after = int(JOBS * self.rng.uniform(0.3, 0.5))
        self.park_index = self.rng.randrange(WORKERS)
        self.parked_once = False
        self.first_after_restart: int | None = None
        self.handed_out_at: dict[int, float] = {}
        self.jobs: deque[int] = deque(range(JOBS))
        self.handed_out = 0
        self.next_plan_at = self.schedule[0].gap if self.schedule else JOBS
        self.outstanding: list[Plan] = []
        self.timers: list[tuple[float, Callable[[], None]]] = []
        self.kills: list[Kill] = []
        self.abandoned: set[str] = set()
        self.done: list[int] = []
        self.spend_failed: list[int] = []
        self.replayed_at_start: list[str] = []
        self.replay_failures = 0
        self.restarts = 0
        # waiting -> wanted -> running -> settling -> over
        self.restart_state = "waiting"
        self.restart_wanted = self.restart_began = self.restart_ended = 0.0
        self.start_seconds: list[float] = []
        self.last_job_at = 0.0
        self.settled: set[int] = set()
        self._restart_thread: threading.Thread | None = None
        self.started = time.monotonic()

    # -- failures --------------------------------------------------------------------

    def fail(self, message: str) -> NoReturn:
        tails = "\n".join(slot.tail() for slot in self.slots)
        pytest.fail(f"seed {SEED}: {message}\n{tails}", pytrace=False)

    def close(self) -> None:
        """Kill every worker still running and release every held spend."""
        self.fake.release_all()
        for slot in self.slots:
            with contextlib.suppress(Exception):
                slot.kill()
        if self._restart_thread is not None:
            self._restart_thread.join(timeout=120)

    # -- the run ---------------------------------------------------------------------

    def run(self) -> None:
        for slot in self.slots:
            slot.start(self.journal, self.env)
        while not self.finished():
            self.check_deadlines()
            try:
                event = self.events.get(timeout=self.wait_time())
            except queue.Empty:
                event = None
            if event is not None:
                self.handle(event)
            self.fire_timers()
            self.maybe_restart_postgres()
        self.stop()

    def finished(self) -> bool:
        return (
            not self.jobs
            and not self.outstanding
            and self.restart_state in ("settling", "over")
            and all(slot.state == "idle" for slot in self.slots)
        )

    def wait_time(self) -> float:
        if not self.timers:
            return 0.1
        return max(0.0, min(0.1, min(when for when, _ in self.timers) - time.monotonic()))

    def check_deadlines(self) -> None:
        now = time.monotonic()
        if now - self.started > FLEET_DEADLINE:
            self.fail(f"the fleet did not finish within {FLEET_DEADLINE} s")
        for slot in self.slots:
            if slot.state == "busy" and now - slot.job_since > JOB_DEADLINE:
                self.fail(f"{slot.ident} hung on job {slot.job} for {JOB_DEADLINE} s")
            if slot.state == "starting" and now - slot.job_since > DEADLINE:
                self.fail(f"{slot.ident} did not start within {DEADLINE} s")

    def fire_timers(self) -> None:
        now = time.monotonic()
        due = [action for when, action in self.timers if when <= now]
        self.timers = [(when, action) for when, action in self.timers if when > now]
        for action in due:
            action()

    def later(self, delay: float, action: Callable[[], None]) -> None:
        self.timers.append((time.monotonic() + delay, action))

    # -- events ----------------------------------------------------------------------

    def handle(self, event: Event) -> None:
        if event.what == "held":
            assert event.hold is not None
            self.on_held(event.hold)
            return
        if event.what == "restarted":
            self.on_restarted(event.error)
            return
        slot = self.slots[event.slot]
        if event.incarnation != slot.incarnation:
            return  # a killed worker's last words
        if event.what == "eof":
            if slot.state == "stopping":
                slot.state = "stopped"
                return
            code = slot.process.wait(timeout=DEADLINE) if slot.process else None
            self.fail(f"{slot.ident} exited with {code}, unasked")
        slot.lines.append(event.text)
        word, _, rest = event.text.partition(" ")
        if word == "ready":
            self.start_seconds.append(time.monotonic() - slot.job_since)
            slot.job_since = time.monotonic()
        elif word == "replayed":
            self.replayed_at_start.extend(rest.split())
        elif word == "replay-failed":
            self.replay_failures += 1
        elif word == "next":
            self.on_next(slot)
        elif word == "work":
            self.on_work(slot, int(rest))
        elif word in ("done", "spend-failed"):
            n = int(rest)
            if n != slot.job:
                self.fail(f"{slot.ident} ended job {n}, but was given job {slot.job}")
            (self.done if word == "done" else self.spend_failed).append(n)
            if self.restart_state == "settling" and slot.job_since > self.restart_ended:
                self.settled.add(slot.index)
                if len(self.settled) == WORKERS:
                    self.restart_state = "over"
            slot.job = None
        else:
            self.fail(f"{slot.ident} said {event.text!r}")

    def on_next(self, slot: Slot) -> None:
        if slot.job is not None:
            self.fail(f"{slot.ident} asks for a job with job {slot.job} unfinished")
        if (
            self.restart_state in ("wanted", "running")
            and slot.index == self.park_index
            and not self.parked_once
        ):
            # This machine waits, idle, through the restart: its connections to the
            # database were opened before it, and are used again only after it.
            slot.state = "parked"
            self.parked_once = True
            return
        self.give_job(slot)

    def give_job(self, slot: Slot) -> None:
        if not self.jobs:
            slot.state = "idle"
            return
        n = self.jobs.popleft()
        self.handed_out += 1
        self.handed_out_at[n] = self.last_job_at = time.monotonic()
        if self.restart_state == "waiting" and self.handed_out > self.restart_after:
            self.restart_state = "wanted"
            self.restart_wanted = time.monotonic()
        plan = self.plan_for(n, slot)
        seconds = HELD_WORK if plan is not None and plan.kind == "work" else self.work_seconds[n]
        slot.job, slot.job_since, slot.state = n, time.monotonic(), "busy"
        slot.send(f"job {n} {seconds:.4f}")

    def plan_for(self, n: int, slot: Slot) -> Plan | None:
        """Give job `n` the next planned kill, if one is due and few are under way.

        Plans are placed in their order, each `gap` jobs after the one before, at most
        `MAX_OUTSTANDING` at once (on different machines), never while a restart of
        PostgreSQL is wanted or settling; when the jobs left run short, at once.
        """
        due = self.handed_out >= self.next_plan_at or len(self.jobs) < 8 * len(self.schedule)
        if (
            not self.schedule
            or not due
            or len(self.outstanding) >= MAX_OUTSTANDING
            or self.restart_state not in ("waiting", "over")
        ):
            return None
        plan = self.schedule.popleft()
        plan.n = n
        if plan.kind != "work":
            plan.hold = Hold(n, slot.ident, plan.kind, plan.process_after)
            self.fake.hold(plan.hold)
        slot.plan = plan
        self.outstanding.append(plan)
        if self.schedule:
            self.next_plan_at = self.handed_out + self.schedule[0].gap
        return plan

    def on_work(self, slot: Slot, n: int) -> None:
        if n != slot.job:
            self.fail(f"{slot.ident} works on job {n}, but was given job {slot.job}")
        plan = slot.plan
        if plan is not None and plan.kind == "work" and plan.n == n:
            incarnation = slot.incarnation
            self.later(plan.delay, lambda: self.kill(slot, plan, incarnation))

    def on_held(self, hold: Hold) -> None:
        slot = next((s for s in self.slots if s.ident == hold.ident), None)
        plan = None if slot is None else slot.plan
        if slot is None or plan is None or plan.hold is not hold:
            self.fail(f"the server holds job {hold.n} for {hold.ident}, which is not waiting")
        incarnation = slot.incarnation
        self.later(plan.delay, lambda: self.kill(slot, plan, incarnation))

    # -- kills -----------------------------------------------------------------------

    def kill(self, slot: Slot, plan: Plan, incarnation: int) -> None:
        if slot.incarnation != incarnation or slot.plan is not plan:
            self.fail(f"planned kill of job {plan.n} found {slot.ident} elsewhere")
        reference = f"job-{plan.n}"
        slot.kill()
        completed = reference in slot.completed_references()
        charged = reference in {spend.reference for spend in self.fake.spends}
        state = journal_state(self.journal, reference)
        sent = self.fake.sent_counts()[reference]
        if plan.kind == "work":
            # Nothing of the job may have left the worker: no log line, no entry, no spend.
            if completed or state is not None or sent:
                self.fail(
                    f"killed in the work of job {plan.n}, yet completed={completed}, "
                    f"journal={state}, spends sent={sent}"
                )
            self.abandoned.add(reference)
        else:
            if not completed:
                self.fail(f"the spend of job {plan.n} was sent before its work completed")
            # The entry was committed (and claimed) before the spend left: a replay has it.
            if state != "pending":
                self.fail(f"job {plan.n} was killed with its spend out, its entry {state}")
            if charged != (plan.kind == "after_commit"):
                self.fail(f"killed {plan.kind} in job {plan.n}, yet charged={charged}")
        self.kills.append(
            Kill(plan.n, plan.kind, slot.index, incarnation, plan.process_after, state, charged)
        )
        if plan.hold is not None:
            plan.hold.released.set()
        self.outstanding.remove(plan)
        slot.plan = None
        slot.start(self.journal, self.env)

    # -- PostgreSQL ------------------------------------------------------------------

    def maybe_restart_postgres(self) -> None:
        """Restart PostgreSQL once it is wanted and nothing is being killed or started."""
        if self.restart_state != "wanted" or self.outstanding:
            return
        if any(slot.state not in ("busy", "idle", "parked") for slot in self.slots):
            return
        if self.slots[self.park_index].state != "parked":
            return
        self.restart_state = "running"
        self.restart_began = time.monotonic()

        def restart() -> None:
            error: BaseException | None = None
            try:
                self.postgres.restart()
            except BaseException as exc:
                error = exc
            self.events.put(Event("restarted", error=error))

        self._restart_thread = threading.Thread(target=restart, daemon=True)
        self._restart_thread.start()

    def on_restarted(self, error: BaseException | None) -> None:
        if error is not None:
            self.fail(f"PostgreSQL did not restart: {error!r}")
        self.restart_ended = time.monotonic()
        self.restarts += 1
        self.restart_state = "settling"
        self.settled = set()
        parked = self.slots[self.park_index]
        self.first_after_restart = self.jobs[0] if self.jobs else None
        self.give_job(parked)

    # -- the end ---------------------------------------------------------------------

    def stop(self) -> None:
        for slot in self.slots:
            slot.state = "stopping"
            slot.send("stop")
        deadline = time.monotonic() + DEADLINE
        while any(slot.state == "stopping" for slot in self.slots):
            if time.monotonic() > deadline:
                self.fail(f"the workers did not stop within {DEADLINE} s")
            with contextlib.suppress(queue.Empty):
                self.handle(self.events.get(timeout=0.1))
        for slot in self.slots:
            code = slot.wait_stopped()
            if code != 0:
                self.fail(f"{slot.ident} stopped with exit status {code}")

    def stderr_lines(self) -> list[tuple[str, str]]:
        """Every line the workers wrote on stderr, with the worker's name."""
        lines = []
        for slot in self.slots:
            for incarnation in range(1, slot.incarnation + 1):
                path = slot.stderr_path(incarnation)
                for line in path.read_text(errors="replace").splitlines():
                    lines.append((f"w{slot.index}.{incarnation}", line))
        return lines


@pytest.fixture
def fleet(tmp_path: Path, postgres_url: str, postgres_server: PostgresServer) -> Iterator[Fleet]:
    if not postgres_server.managed:
        pytest.skip("restarts PostgreSQL, which it may do only to a server of its own")
    events: queue.Queue[Event] = queue.Queue()
    fake = FleetServer(events)
    key = fake.create_key(balance=START_BALANCE)
    with fake.serve() as base_url:
        env = {**os.environ, "AMAI_API_KEY": key, "AMAI_BASE_URL": base_url}
        fleet = Fleet(tmp_path, fake, events, env, postgres_url, postgres_server)
        try:
            yield fleet
        finally:
            fleet.close()


def drain(fleet: Fleet) -> dict[str, Any]:
    """`amaimedia replay --json`: what the journal holds, replayed by a process of its own.

    It exits 0 only when it left nothing pending.
    """
    command = [sys.executable, "-m", "amaimedia", "replay", "--journal", fleet.journal, "--json"]
    try:
        done = subprocess.run(
            command, env=fleet.env, capture_output=True, text=True, timeout=DEADLINE
        )
    except subprocess.TimeoutExpired:
        fleet.fail(f"the drain did not finish within {DEADLINE} s")
    if done.returncode != 0:
        fleet.fail(f"the drain exited with {done.returncode}:\n{done.stdout}\n{done.stderr}")
    result: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    return result


def test_a_fleet_killed_at_random_charges_each_completed_block_exactly_once(
    fleet: Fleet,
) -> None:
    began = time.monotonic()
    fleet.run()
    ran = time.monotonic() - began
    seed = f"seed {SEED}"

    completed_lines = [r for slot in fleet.slots for r in slot.completed_references()]
    completed = set(completed_lines)
    duplicates = sorted(r for r, count in Counter(completed_lines).items() if count > 1)
    assert not duplicates, f"{seed}: work recorded twice: {duplicates}"
    every_job = {f"job-{n}" for n in range(JOBS)}
    assert completed | fleet.abandoned == every_job, f"{seed}: jobs neither done nor killed"
    assert not completed & fleet.abandoned, seed
    assert fleet.spend_failed == [], f"{seed}: spends that failed: {fleet.spend_failed}"
    kinds = Counter(kill.kind for kill in fleet.kills)
    assert kinds == Counter(KILLS), f"{seed}: kills {dict(kinds)}, planned {KILLS}"
    assert fleet.restarts == 1, seed

    rows_before = journal_rows(fleet.journal)
    pending_before = [row["reference"] for row in rows_before if row["state"] == "pending"]
    drain_began = time.monotonic()
    drained = drain(fleet)
    drain_seconds = time.monotonic() - drain_began

    charged = Counter(spend.reference for spend in fleet.fake.spends)
    sent = fleet.fake.sent_counts()
    rows = journal_rows(fleet.journal)
    states = Counter(row["state"] for row in rows)
    lost = sorted(completed - set(charged))
    unearned = sorted(set(charged) - completed)
    doubled = sorted(r for r, count in charged.items() if count > 1)
    resent = sorted(r for r, count in sent.items() if count > 1)
    pending_after = [row["reference"] for row in rows if row["state"] == "pending"]
    warnings = fleet.stderr_lines()
    # A block whose entry could not be written has no row: the outage rule sent its
    # spend without one (logged as such by the worker).
    journaled = {row["reference"] for row in rows}
    unjournaled = sorted(int(r.removeprefix("job-")) for r in completed - journaled)
    # Jobs handed out once PostgreSQL was back (restart() had returned), whose spend
    # still went out without an entry: nothing would replay them after a crash.
    after_restart = [n for n in unjournaled if fleet.handed_out_at[n] > fleet.restart_ended]
    figures = {
        "seed": SEED,
        "workers": WORKERS,
        "async_workers": len(ASYNC_WORKERS),
        "blocks": JOBS,
        "completed": len(completed),
        "kills": len(fleet.kills),
        "kills_during_work": kinds["work"],
        "kills_in_flight": kinds["in_flight"],
        "kills_in_flight_charged_after": sum(
            1 for kill in fleet.kills if kill.kind == "in_flight" and kill.process_after
        ),
        "kills_after_commit": kinds["after_commit"],
        "postgres_restarts": fleet.restarts,
        "postgres_restart_seconds": round(fleet.restart_ended - fleet.restart_began, 3),
        "charges": sum(charged.values()),
        "lost": len(lost),
        "unearned": len(unearned),
        "doubled": len(doubled),
        "sent_more_than_once": len(resent),
        "spend_requests": sum(sent.values()),
        "replayed_by_restarted_workers": len(fleet.replayed_at_start),
        "replays_at_start_that_failed": fleet.replay_failures,
        "pending_before_drain": len(pending_before),
        "charged_by_drain": len(drained["charged"]),
        "drain_seconds": round(drain_seconds, 2),
        "pending": len(pending_after),
        "unjournaled_blocks": len(unjournaled),
        "unjournaled_after_restart_returned": len(after_restart),
        "unjournaled_after_restart_jobs": after_restart,
        "parked_machine": fleet.park_index,
        "parked_machine_async": fleet.park_index in ASYNC_WORKERS,
        "parked_machine_first_job_after_restart": fleet.first_after_restart,
        "journal_rows": len(rows),
        "seconds": round(ran, 2),
        "last_job_handed_out_at": round(fleet.last_job_at - fleet.started, 2),
        "restart_wanted_at": round(fleet.restart_wanted - fleet.started, 2),
        "restart_began_at": round(fleet.restart_began - fleet.started, 2),
        "worker_start_seconds_mean": round(
            sum(fleet.start_seconds) / max(1, len(fleet.start_seconds)), 3
        ),
        "worker_start_seconds_max": round(max(fleet.start_seconds, default=0.0), 3),
        "kill_log": [
            {
                "job": kill.n,
                "kind": kill.kind,
                "worker": f"w{kill.slot}.{kill.incarnation}",
                "charged_after_the_kill": kill.process_after if kill.kind == "in_flight" else None,
                "journal_at_kill": kill.journal_state,
                "charged_at_kill": kill.charged_at_kill,
            }
            for kill in fleet.kills
        ],
    }
    print(
        f"\nfleet: {WORKERS} workers, {JOBS} blocks, {len(fleet.kills)} kills "
        f"({kinds['work']} during work, {kinds['in_flight']} in flight, "
        f"{kinds['after_commit']} after commit), {fleet.restarts} PostgreSQL restart, "
        f"{sum(charged.values())} charges, {len(lost)} lost, {len(doubled)} doubled, "
        f"{len(pending_after)} pending ({len(resent)} sent more than once, "
        f"{len(unjournaled)} unjournaled, seed {SEED}, {ran:.1f} s)"
    )
    if REPORT:
        Path(REPORT).write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")

    assert lost == [], f"{seed}: completed but never charged: {lost}"
    assert unearned == [], f"{seed}: charged without completed work: {unearned}"
    assert doubled == [], f"{seed}: charged more than once: {doubled}"
    assert not fleet.abandoned & set(sent), f"{seed}: a spend sent for work killed midway"
    assert pending_after == [], f"{seed}: still pending after the drain: {pending_after}"
    assert drained["left_pending"] == 0, f"{seed}: the drain left {drained}"
    assert sorted(c["reference"] for c in drained["charged"]) == sorted(pending_before), seed
    assert states.keys() <= {"done"}, f"{seed}: journal states {dict(states)}"
    assert {row["reference"] for row in rows} <= completed, f"{seed}: entries of unfinished work"
    assert {row["charged"] for row in rows} <= {DUB_COST}, seed
    assert fleet.fake.balance(fleet.env["AMAI_API_KEY"]) == (
        START_BALANCE - DUB_COST * len(completed)
    ), seed
    tracebacks = [f"{ident}: {line}" for ident, line in warnings if "Traceback" in line]
    assert tracebacks == [], f"{seed}: a worker raised:\n" + "\n".join(tracebacks)
    # The outage rule at work: blocks ran, and charged, while the database was down.
    assert unjournaled, f"{seed}: no block ran while PostgreSQL was down"
    assert after_restart == [], (
        f"{seed}: jobs {after_restart} were handed out after PostgreSQL was back, yet their "
        f"spends went out without a journal entry (machine {fleet.park_index} sat idle "
        f"through the restart; its first job after it was job {fleet.first_after_restart})"
    )
