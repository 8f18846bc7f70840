"""Fork safety over real loopback: children of a process whose client holds a connection.

A client that made a call keeps a keep-alive connection in its pool. A child forked then
(`os.fork`, `multiprocessing`'s `fork` start method, `gunicorn --preload`) inherits the
socket; if it sent on it, two processes would read each other's answers, and a quote for
someone else's units would parse as valid. Each child here asks for units of its own, so
a crossed answer shows in its `cost_tokens`; the fake's ledger shows what was charged.

The server is the SDK's own `FakeAmaiServer`, served in this process; the children reach
it over loopback and never touch it otherwise. Every wait is bounded (client timeouts,
a deadline on the children, timeouts on gunicorn); nothing asserts how long anything took.
Each test prints one summary line, quoted in the fork-safety notes.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Literal

import httpx
import pytest

import amaimedia
from amaimedia import AmaiClient, AmaiError, AsyncAmaiClient, Quote
from amaimedia.testing import FakeAmaiServer
from tests.wire.fork_workers.forking import (
    DEADLINE,
    collect,
    connections_to,
    fork,
    fork_all,
)
from tests.wire.fork_workers.jobs import (
    Job,
    Report,
    adopt,
    arun_job,
    pool_job,
    run_any,
    run_metered,
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        sys.platform != "linux", reason="forks, and reads this process's sockets in /proc"
    ),
    # Python 3.12+ warns on a fork of any process with threads. The fake server's threads
    # are in this process; the children never touch what they hold.
    pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning"),
]

Kind = Literal["sync", "async", "aiohttp"]
KINDS: list[Kind] = ["sync", "async", "aiohttp"]
Client = AmaiClient | AsyncAmaiClient
Spawn = Callable[[Client, list[Job]], list[Report]]

ROUNDS = 5
CHILDREN = 5
PARENT_UNITS = 100  # more than any child asks for, so the parent's answers are its own too
BALANCE = 1_000_000
# Per attempt. Retries are off: every attempt must get its own answer, and one stuck on
# an answer that another process read fails after this long instead of hanging.
TIMEOUT = 10.0
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def fake() -> FakeAmaiServer:
    return FakeAmaiServer()


@pytest.fixture
def key(fake: FakeAmaiServer) -> str:
    return fake.create_key(balance=BALANCE)


@pytest.fixture
def served(fake: FakeAmaiServer) -> Iterator[str]:
    with fake.serve() as base_url:
        yield base_url


@pytest.fixture
def say(capsys: pytest.CaptureFixture[str]) -> Callable[[str], None]:
    """Print a summary line past pytest's capture, even without `-s`."""

    def say(line: str) -> None:
        with capsys.disabled():
            print(f"\n{line}")

    return say


def new_client(kind: Kind, base_url: str, key: str) -> Client:
    if kind == "sync":
        return AmaiClient(key, base_url=base_url, max_retries=0, timeout=TIMEOUT)
    transport: Literal["httpx", "aiohttp"] = "aiohttp" if kind == "aiohttp" else "httpx"
    return AsyncAmaiClient(
        key, base_url=base_url, max_retries=0, timeout=TIMEOUT, transport=transport
    )


def new_jobs(fake: FakeAmaiServer, tag: str, count: int = CHILDREN, **sizes: int) -> list[Job]:
    price = fake.prices["chat"]
    return [Job(child=i, units=i + 1, price=price, tag=tag, **sizes) for i in range(count)]


def port_of(base_url: str) -> int:
    port = httpx.URL(base_url).port
    assert port is not None
    return port


# --- the parent's side ------------------------------------------------------------------


@dataclass
class Parent:
    """What the parent saw around its children's run."""

    before: Quote  # its call before the fork, which left a connection in the pool
    after: Quote | AmaiError  # its call once the children were done
    held: set[int]  # its connections to the server at the fork...
    kept: set[int]  # ...and once the children were done
    reports: list[Report]


def around_fork(client: Client, base_url: str, spawn: Spawn, jobs: list[Job]) -> Parent:
    """Call, `spawn` the children with the client as it is, collect them, call again."""
    port = port_of(base_url)
    if isinstance(client, AsyncAmaiClient):
        return asyncio.run(around_fork_async(client, port, spawn, jobs))
    with client:
        before = client.check("chat", PARENT_UNITS)
        held = connections_to(port)
        reports = spawn(client, jobs)
        kept = connections_to(port)
        try:
            after: Quote | AmaiError = client.check("chat", PARENT_UNITS)
        except AmaiError as exc:
            after = exc
    return Parent(before, after, held, kept, reports)


async def around_fork_async(
    client: AsyncAmaiClient, port: int, spawn: Spawn, jobs: list[Job]
) -> Parent:
    # The fork happens inside the running loop: the loop's pool holds the connection then.
    # Waiting for the children blocks the loop, which has nothing else to do meanwhile.
    async with client:
        before = await client.check("chat", PARENT_UNITS)
        held = connections_to(port)
        reports = spawn(client, jobs)
        kept = connections_to(port)
        try:
            after: Quote | AmaiError = await client.check("chat", PARENT_UNITS)
        except AmaiError as exc:
            after = exc
    return Parent(before, after, held, kept, reports)


def with_os_fork(client: Client, jobs: list[Job]) -> list[Report]:
    return collect(fork_all([(job.child, partial(run_any, client, job)) for job in jobs]))


def with_pool(client: Client, jobs: list[Job]) -> list[Report]:
    context = multiprocessing.get_context("fork")
    with context.Pool(len(jobs), initializer=adopt, initargs=(client,)) as pool:
        reports = pool.map_async(pool_job, jobs, chunksize=1).get(timeout=DEADLINE)
        pool.close()
        pool.join()
    return reports


def summary(label: str, reports: list[Report]) -> str:
    pids = {report.pid for report in reports}
    calls = sum(report.calls for report in reports)
    crossed = sum(len(report.crossed) for report in reports)
    errors = sum(len(report.errors) for report in reports)
    return (
        f"{label}: {len(pids)} processes, {calls} calls, "
        f"{crossed} crossed answers, {errors} errors"
    )


def parent_summary(label: str, parent: Parent) -> str:
    after = parent.after
    seen = f"{after.cost_tokens} tokens" if isinstance(after, Quote) else type(after).__name__
    return f"{summary(label, parent.reports)}; the parent's call afterwards: {seen}"


def assert_own_answers(fake: FakeAmaiServer, key: str, parent: Parent, jobs: list[Job]) -> None:
    """No crossed answer, no error, every call sent once, the ledger exact."""
    assert [line for report in parent.reports for line in report.crossed] == []
    assert [line for report in parent.reports for line in report.errors] == []
    calls = sum(len(job.calls()) for job in jobs)
    assert sum(report.calls for report in parent.reports) == calls
    assert len(fake.requests) == calls + 2  # and the parent's two checks
    due = fake.prices["chat"] * PARENT_UNITS
    assert parent.before.cost_tokens == due
    assert isinstance(parent.after, Quote), parent.after
    assert parent.after.cost_tokens == due
    # The parent's connection outlived the children: none of them closed or broke it.
    assert len(parent.held) == 1
    assert parent.kept == parent.held
    assert_ledger(fake, key, {ref: job.cost for job in jobs for ref in job.references()})


def assert_ledger(fake: FakeAmaiServer, key: str, due: dict[str, int]) -> None:
    """Each reference charged once, what it was due; the balance down by the sum."""
    assert sorted((row.reference, row.charged) for row in fake.spends) == sorted(due.items())
    assert fake.balance(key) == BALANCE - sum(due.values())


# --- os.fork and multiprocessing --------------------------------------------------------


@pytest.mark.parametrize("round_", range(1, ROUNDS + 1))
@pytest.mark.parametrize("kind", KINDS)
def test_children_of_os_fork_get_their_own_answers(
    kind: Kind,
    round_: int,
    fake: FakeAmaiServer,
    key: str,
    served: str,
    say: Callable[[str], None],
) -> None:
    jobs = new_jobs(fake, f"fork-{kind}-{round_}")
    parent = around_fork(new_client(kind, served, key), served, with_os_fork, jobs)
    say(parent_summary(f"os.fork [{kind}] round {round_}", parent))
    assert_own_answers(fake, key, parent, jobs)


@pytest.mark.parametrize("kind", KINDS)
def test_workers_of_a_fork_pool_get_their_own_answers(
    kind: Kind, fake: FakeAmaiServer, key: str, served: str, say: Callable[[str], None]
) -> None:
    jobs = new_jobs(fake, f"pool-{kind}")
    parent = around_fork(new_client(kind, served, key), served, with_pool, jobs)
    say(parent_summary(f"multiprocessing fork Pool [{kind}]", parent))
    assert_own_answers(fake, key, parent, jobs)


@pytest.mark.parametrize(
    "kind",
    [
        "async",
        "aiohttp",
    ],
)
def test_a_child_going_on_with_the_parents_loop_opens_its_own_connection(
    kind: Kind, fake: FakeAmaiServer, key: str, served: str, say: Callable[[str], None]
) -> None:
    # Older code keeps one loop (`asyncio.get_event_loop()`) and forks between two of its
    # runs; a child then runs that same loop object, whose pool is the parent's. One child
    # only: the loop's selector and self-pipe are shared with every process that has it.
    client = new_client(kind, served, key)
    assert isinstance(client, AsyncAmaiClient)
    port = port_of(served)
    (job,) = new_jobs(fake, f"loop-{kind}", count=1)
    loop = asyncio.new_event_loop()

    def work() -> Report:
        report = loop.run_until_complete(asyncio.wait_for(arun_job(client, job), TIMEOUT))
        report.own_connections = sorted(connections_to(port) - held)
        return report

    try:
        before = loop.run_until_complete(client.check("chat", PARENT_UNITS))
        held = connections_to(port)
        (report,) = collect([fork(job.child, work)])
        kept = connections_to(port)
        after = loop.run_until_complete(client.check("chat", PARENT_UNITS))
        loop.run_until_complete(client.aclose())
        loop.run_until_complete(loop.shutdown_asyncgens())
    finally:
        loop.close()
    say(summary(f"child on the parent's loop [{kind}]", [report]))
    assert (report.crossed, report.errors) == ([], [])
    assert report.own_connections != []  # and, from the ledger, none went elsewhere
    assert before.cost_tokens == after.cost_tokens == fake.prices["chat"] * PARENT_UNITS
    assert len(held) == 1
    assert kept == held
    assert_ledger(fake, key, dict.fromkeys(job.references(), job.cost))


# --- gunicorn --preload -----------------------------------------------------------------

GUNICORN_APP = "tests.wire.fork_workers.gunicorn_app:app"
GUNICORN_WORKERS = 4
GUNICORN_REQUESTS = 200
GUNICORN_THREADS = 8
STARTUP = 30.0  # seconds for gunicorn to say where it listens: a bound, not a measure


@contextlib.contextmanager
def gunicorn(env: dict[str, str], log: Path) -> Iterator[str]:
    """Run gunicorn with the app preloaded, in a session of its own; yield its URL."""
    command = [
        *(sys.executable, "-m", "gunicorn", "--preload", "--no-control-socket"),
        *("--workers", str(GUNICORN_WORKERS), "--bind", "127.0.0.1:0"),
        *("--graceful-timeout", "5", GUNICORN_APP),
    ]
    with log.open("wb") as output:
        process = subprocess.Popen(
            command,
            env=env,
            cwd=log.parent,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # so that the workers can be killed with the master
        )
    try:
        yield listening_at(process, log)
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def listening_at(process: subprocess.Popen[bytes], log: Path) -> str:
    ends = time.monotonic() + STARTUP
    while time.monotonic() < ends:
        found = re.search(r"Listening at: (http://127\.0\.0\.1:\d+)", log.read_text())
        if found:
            return found[1]
        if process.poll() is not None:
            pytest.fail(f"gunicorn exited with {process.returncode}:\n{log.read_text()}")
        time.sleep(0.05)
    pytest.fail(f"gunicorn did not start within {STARTUP} s:\n{log.read_text()}")


def test_workers_of_gunicorn_preload_get_their_own_answers(
    fake: FakeAmaiServer,
    key: str,
    served: str,
    tmp_path: Path,
    say: Callable[[str], None],
) -> None:
    sdk_root = Path(amaimedia.__file__).resolve().parents[1]  # the SDK under test, there too
    env = {
        **os.environ,
        "AMAI_API_KEY": key,
        "AMAI_BASE_URL": served,
        "PYTHONPATH": os.pathsep.join([str(sdk_root), str(ROOT)]),
    }
    price = fake.prices["chat"]
    log = tmp_path / "gunicorn.log"
    with gunicorn(env, log) as url, httpx.Client(base_url=url, timeout=2 * TIMEOUT) as http:

        def ask(units: int) -> dict[str, object]:
            try:
                response = http.get("/", params={"units": units})
                response.raise_for_status()
            except httpx.HTTPError as exc:
                return {"error": f"{type(exc).__name__}: {exc}"}
            answer: dict[str, object] = response.json()
            return answer

        first = ask(1)  # waits for a worker to boot
        assert (first.get("sdk"), first.get("cost_tokens")) == (amaimedia.__file__, price), first
        units = range(2, GUNICORN_REQUESTS + 2)
        with ThreadPoolExecutor(GUNICORN_THREADS) as threads:
            answers = dict(zip(units, threads.map(ask, units), strict=True))
    crossed = [
        f"units {n}: {answer['cost_tokens']} tokens where {price * n} was due"
        for n, answer in answers.items()
        if "cost_tokens" in answer and answer["cost_tokens"] != price * n
    ]
    errors = [
        f"units {n}: {answer['error']}" for n, answer in answers.items() if "error" in answer
    ]
    pids = {answer["pid"] for answer in answers.values() if "pid" in answer}
    say(
        f"gunicorn --preload --workers {GUNICORN_WORKERS}: {len(pids)} workers answered, "
        f"{len(answers)} calls, {len(crossed)} crossed answers, {len(errors)} errors"
    )
    assert crossed == []
    assert errors == [], log.read_text()
    assert len(pids) > 1
    assert len(fake.requests) == 1 + 1 + GUNICORN_REQUESTS  # the master's check, the first


# --- a spend journal opened before the fork ---------------------------------------------


def test_a_journal_opened_before_the_fork_serves_the_children(
    fake: FakeAmaiServer,
    key: str,
    served: str,
    tmp_path: Path,
    say: Callable[[str], None],
) -> None:
    journal = tmp_path / "spends.sqlite3"
    price = fake.prices["chat"]
    jobs = new_jobs(fake, "journal", spends=3)
    (failing,) = new_jobs(fake, "pending", count=1, spends=2)
    due = {"parent": price * PARENT_UNITS}
    due |= {ref: job.cost for job in [*jobs, failing] for ref in job.references()}
    client = AmaiClient(
        key, base_url=served, max_retries=0, timeout=TIMEOUT, spend_journal=journal
    )
    with client:
        with client.metered("chat", units=PARENT_UNITS, reference="parent"):
            pass  # the journal's files are open, and a connection pooled, before the fork
        reports = collect(
            fork_all([(job.child, partial(run_metered, client, job)) for job in jobs])
        )
        # One child's spends fail, so that the journal keeps them pending. Run after the
        # others, so that only its spends meet the queued faults.
        fake.fail_next("spend", status=503, times=len(failing.references()))
        (left,) = collect([fork(CHILDREN, partial(run_metered, client, failing))])
        pending = sorted(spend.reference for spend in client.pending_spends())
        replayed = client.replay_pending()
        replayed_again = client.replay_pending()
        still_pending = client.pending_spends()
    say(summary("spend journal across fork", reports) + f"; {len(replayed)} spends replayed")
    assert [line for report in reports for line in report.crossed + report.errors] == []
    assert sum(report.calls for report in reports) == sum(job.spends for job in jobs)
    assert len(left.errors) == len(failing.references())
    assert all("SpendFailedError" in line for line in left.errors), left.errors
    assert pending == sorted(failing.references())
    assert sorted((charge.reference, charge.charged) for charge in replayed) == [
        (ref, failing.cost) for ref in pending
    ]
    assert (replayed_again, still_pending) == ([], [])
    assert_ledger(fake, key, due)


def test_a_lock_held_by_another_thread_at_the_fork_is_free_in_the_child(
    key: str, served: str
) -> None:
    """A thread of the parent inside the pool's lock when the fork happens does not exist
    in the child; the lock it held must not stay taken there."""
    client = AmaiClient(key, base_url=served, timeout=5, max_retries=0)
    client.check("chat")
    routing = client._http._transport
    held, done = threading.Event(), threading.Event()

    def hold() -> None:
        with routing._lock:  # as a thread building a route's transport would
            held.set()
            done.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    held.wait(10)
    try:
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            signal.alarm(10)  # a deadlocked child ends here, and the test sees it
            try:
                code = 0 if client.check("chat", units=2).cost_tokens == 10 else 1
            except BaseException:
                code = 2
            os._exit(code)
        _, status = os.waitpid(pid, 0)
    finally:
        done.set()
        holder.join(10)
        client.close()
    assert os.waitstatus_to_exitcode(status) == 0
