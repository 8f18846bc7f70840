"""The fault soak's machinery: lanes, the recording transport, blocks, and the checks.

A lane is one `FakeAmaiServer` on its own loopback port with its own key, used by one
block at a time: before each block its fault queues are reset and the block's planned
faults queued, so every fault is consumed by the block it was planned for, however many
lanes run at once. All the lanes of a run share one httpx connection pool, whose
transport records what each attempt saw, by port.
"""

from __future__ import annotations

import asyncio
import functools
import threading
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Literal

import httpx

from amaimedia import (
    AmaiClient,
    AmaiError,
    AsyncAmaiClient,
    Charge,
    Meter,
    PendingSpend,
    SpendFailedError,
)
from amaimedia.testing import FakeAmaiServer, SpendRecord

from .faults import FAULT_KINDS, BlockPlan, Expected, cost, expect, expected_seen, queue_faults

__all__ = [
    "AsyncRecordingTransport",
    "BlockResult",
    "Lane",
    "OnPurpose",
    "Recorder",
    "RecordingTransport",
    "Tally",
    "arun_block",
    "check_lanes",
    "run_block",
]

START_BALANCE = 10**9

Seen = tuple[str, str]  # (endpoint, what the attempt saw)


class OnPurpose(Exception):
    """The work of a block failing, as its plan says."""


class Recorder:
    """What every attempt saw, per lane (the port of the lane's server), in order."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seen: defaultdict[int, list[Seen]] = defaultdict(list)

    def add(self, request: httpx.Request, seen: str) -> None:
        endpoint = request.url.path.rsplit("/", 1)[-1]
        with self._lock:
            self._seen[request.url.port or 0].append((endpoint, seen))

    def count(self, port: int) -> int:
        with self._lock:
            return len(self._seen[port])

    def since(self, port: int, start: int) -> list[Seen]:
        with self._lock:
            return list(self._seen[port][start:])


def _failure(exc: Exception) -> str:
    if isinstance(exc, httpx.TimeoutException):
        return "timeout"
    if isinstance(exc, httpx.TransportError):
        return "cut"
    return f"raised {type(exc).__name__}"


class RecordingTransport(httpx.BaseTransport):
    """httpx's own transport, noting what each attempt saw."""

    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder
        self.inner = httpx.HTTPTransport()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        try:
            response = self.inner.handle_request(request)
        except Exception as exc:
            self.recorder.add(request, _failure(exc))
            raise
        self.recorder.add(request, f"status {response.status_code}")
        return response

    def close(self) -> None:
        self.inner.close()


class AsyncRecordingTransport(httpx.AsyncBaseTransport):
    """The async twin of `RecordingTransport`, around httpx's transport or another."""

    def __init__(self, recorder: Recorder, inner: httpx.AsyncBaseTransport | None = None) -> None:
        self.recorder = recorder
        self.inner = httpx.AsyncHTTPTransport() if inner is None else inner

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        try:
            response = await self.inner.handle_async_request(request)
        except Exception as exc:
            self.recorder.add(request, _failure(exc))
            raise
        self.recorder.add(request, f"status {response.status_code}")
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()


ActualOutcome = Literal["charged", "raised", "skipped", "check_failed", "spend_failed", "escaped"]


@dataclass
class BlockResult:
    """How one block ended, and what its attempts saw."""

    plan: BlockPlan
    outcome: ActualOutcome
    error: BaseException | None = None  # the AmaiError raised, or what escaped
    charge: Charge | None = None
    seen: list[Seen] = field(default_factory=list)

    def attempts(self, endpoint: str) -> list[str]:
        return [seen for where, seen in self.seen if where == endpoint]


@dataclass(eq=False)
class Lane:
    """One fake server, its key, and the blocks run on it, one at a time."""

    name: str
    fake: FakeAmaiServer
    base_url: str
    key: str = field(repr=False)
    journaled: bool
    results: list[BlockResult] = field(default_factory=list)
    pending: list[PendingSpend] = field(default_factory=list)
    replayed: list[Charge] = field(default_factory=list)
    pending_after: list[PendingSpend] = field(default_factory=list)
    ledger_before_replay: list[SpendRecord] = field(default_factory=list)

    @property
    def port(self) -> int:
        return httpx.URL(self.base_url).port or 0

    def spend_failures(self) -> list[SpendFailedError]:
        return [r.error for r in self.results if isinstance(r.error, SpendFailedError)]

    def begin(self, plan: BlockPlan, recorder: Recorder) -> int:
        """Make the lane's fault queues exactly the plan's; the recorder's mark."""
        self.fake.reset_faults()
        queue_faults(self.fake, plan)
        return recorder.count(self.port)


def _classify(
    plan: BlockPlan, exc: BaseException, planned: BaseException, ran: bool
) -> BlockResult:
    if exc is planned:
        return BlockResult(plan, "raised")
    if isinstance(exc, SpendFailedError):
        return BlockResult(plan, "spend_failed", exc)
    if isinstance(exc, AmaiError) and not ran:
        return BlockResult(plan, "check_failed", exc)
    # Neither the block's own exception nor a typed error where one belongs: a bug.
    return BlockResult(plan, "escaped", exc)


def _ended(plan: BlockPlan, meter: Meter | None) -> BlockResult:
    if plan.body == "skip":
        return BlockResult(plan, "skipped")
    return BlockResult(plan, "charged", charge=None if meter is None else meter.charge)


def run_block(client: AmaiClient, plan: BlockPlan) -> BlockResult:
    """Run one planned block with the sync client; never raises."""
    planned = OnPurpose(plan.reference)
    ran = False
    meter: Meter | None = None

    def work(meter: Meter | None) -> None:
        nonlocal ran
        ran = True
        if plan.body == "raise":
            raise planned
        if meter is not None and plan.body == "skip":
            meter.cancel()
        elif meter is not None and plan.billed_units is not None:
            meter.units = plan.billed_units

    try:
        if plan.decorated:

            @client.metered(plan.tool, plan.units, reference=lambda: plan.reference)
            def job() -> None:
                work(None)

            job()
        else:
            with client.metered(plan.tool, plan.units, reference=plan.reference) as meter:
                work(meter)
    except Exception as exc:
        return _classify(plan, exc, planned, ran)
    return _ended(plan, meter)


async def arun_block(client: AsyncAmaiClient, plan: BlockPlan) -> BlockResult:
    """Run one planned block with the async client; never raises."""
    planned: BaseException = OnPurpose(plan.reference)
    ran = False
    working = asyncio.Event()
    meter: Meter | None = None

    async def work(meter: Meter | None) -> None:
        nonlocal ran
        ran = True
        if plan.body == "raise":
            raise planned
        if plan.body == "task_cancelled":
            working.set()
            await asyncio.sleep(60)  # cancelled long before
        if meter is not None and plan.body == "skip":
            meter.cancel()
        elif meter is not None and plan.billed_units is not None:
            meter.units = plan.billed_units

    async def block() -> None:
        nonlocal meter
        if plan.decorated:

            @client.metered(plan.tool, plan.units, reference=lambda: plan.reference)
            async def job() -> None:
                await work(None)

            await job()
        else:
            async with client.metered(plan.tool, plan.units, reference=plan.reference) as meter:
                await work(meter)

    task = asyncio.ensure_future(block())
    if plan.body == "task_cancelled":
        # Cancelled by its caller in the middle of the work, as a timeout would.
        waiting = asyncio.ensure_future(working.wait())
        await asyncio.wait({task, waiting}, return_when=asyncio.FIRST_COMPLETED)
        waiting.cancel()
        if working.is_set():
            task.cancel()
    try:
        await task
    except asyncio.CancelledError as exc:
        if plan.body == "task_cancelled" and working.is_set():
            return BlockResult(plan, "raised")
        return _classify(plan, exc, planned, ran)
    except Exception as exc:
        return _classify(plan, exc, planned, ran)
    return _ended(plan, meter)


@dataclass
class Tally:
    """The counts a soak prints."""

    blocks: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    faults: Counter[str] = field(default_factory=Counter)
    requests: int = 0
    retries: int = 0
    charges: int = 0
    replays: int = 0
    replays_already_charged: int = 0
    noisy: int = 0

    def add(self, other: Tally) -> None:
        self.blocks += other.blocks
        self.outcomes.update(other.outcomes)
        self.faults.update(other.faults)
        self.requests += other.requests
        self.retries += other.retries
        self.charges += other.charges
        self.replays += other.replays
        self.replays_already_charged += other.replays_already_charged
        self.noisy += other.noisy

    def summary(self, title: str) -> str:
        outcomes = ", ".join(
            f"{self.outcomes[name]} {label}"
            for name, label in (
                ("charged", "charged"),
                ("raised", "raised on purpose"),
                ("skipped", "cancelled by the meter"),
                ("check_failed", "refused at the check"),
                ("spend_failed", "SpendFailedError"),
            )
        )
        faults = ", ".join(f"{kind} {self.faults[kind]}" for kind in FAULT_KINDS)
        return (
            f"{title}: {self.blocks} blocks ({outcomes})\n"
            f"  faults {sum(self.faults.values())}: {faults}\n"
            f"  requests {self.requests}, retries {self.retries}; ledger {self.charges} charges; "
            f"replays {self.replays} ({self.replays_already_charged} already charged before the "
            f"replay, each charged once); blocks with unplanned timing noise {self.noisy}"
        )


def check_lanes(lanes: Iterable[Lane], *, planned: bool = True) -> tuple[Tally, list[str]]:
    """Check every lane after its replays; the counts, and every problem found.

    With `planned`, each block had the lane to itself and its faults were its own, so
    it is also held to the outcome its plan predicts. Without, the blocks of a lane ran
    at once and took each other's faults: only what holds whatever the timing is checked.
    """
    tally = Tally()
    problems: list[str] = []
    for lane in lanes:
        tally.add(_check_lane(lane, problems, planned=planned))
    return tally, problems


def _check_lane(lane: Lane, problems: list[str], *, planned: bool) -> Tally:
    tally = Tally(blocks=len(lane.results))
    prices = lane.fake.prices
    sent = Counter(r.body["reference"] for r in lane.fake.requests if r.endpoint == "spend")
    before = Counter(row.reference for row in lane.ledger_before_replay)
    ledger = Counter(row.reference for row in lane.fake.spends)
    rows = {row.reference: row for row in lane.fake.spends}
    owed = 0

    def problem(result: BlockResult, text: str) -> None:
        problems.append(f"{lane.name} {result.plan.reference} ({result.plan}): {text}")

    for result in lane.results:
        plan = result.plan
        expected = expect(plan)
        tally.outcomes[result.outcome] += 1
        checks, spends = result.attempts("check"), result.attempts("spend")
        tally.requests += len(checks) + len(spends)
        tally.retries += max(0, len(checks) - 1) + max(0, len(spends) - 1)
        tally.faults.update(f.kind for f in plan.check[: len(checks)])
        tally.faults.update(f.kind for f in plan.spend[: len(spends)])
        # A block that saw anything but its planned faults (a stall of the machine made
        # an answer late) is held only to what holds whatever the timing.
        off_plan = checks != expected_seen(plan.check, len(checks))
        off_plan |= spends != expected_seen(plan.spend, len(spends))
        noisy = not planned or off_plan
        tally.noisy += planned and off_plan

        if result.outcome == "escaped":
            problem(result, f"escaped: {result.error!r}")
            continue
        if not noisy:
            _compare(result, expected, lane, functools.partial(problem, result))
        # What holds whatever the timing.
        if result.outcome in ("raised", "skipped", "check_failed"):
            if sent[plan.reference] or ledger[plan.reference]:
                problem(result, f"{result.outcome}, yet a spend was sent or charged")
            continue
        owed += cost(prices, plan.tool, plan.final_units)
        if ledger[plan.reference] != 1:
            problem(result, f"{ledger[plan.reference]} ledger rows after the replays, not 1")
            continue
        row = rows[plan.reference]
        if (row.tool, row.charged) != (plan.tool, cost(prices, plan.tool, plan.final_units)):
            problem(result, f"charged {row.charged} for {row.tool}")
        if result.outcome == "charged" and before[plan.reference] != 1:
            problem(result, "completed, but not in the ledger before the replays")

    failed = {e.reference for e in lane.spend_failures()}
    replayed = Counter(charge.reference for charge in lane.replayed)
    if replayed != Counter(failed):
        problems.append(f"{lane.name}: replayed {sorted(replayed)} for {sorted(failed)}")
    if lane.journaled and {p.reference for p in lane.pending} != failed:
        problems.append(f"{lane.name}: pending {lane.pending} for {sorted(failed)}")
    if lane.pending_after:
        problems.append(f"{lane.name}: still pending after the replay: {lane.pending_after}")
    expected_refs = {
        r.plan.reference for r in lane.results if r.outcome in ("charged", "spend_failed")
    }
    if set(ledger) != expected_refs:
        extra, missing = set(ledger) - expected_refs, expected_refs - set(ledger)
        problems.append(f"{lane.name}: ledger has extra {sorted(extra)}, lacks {sorted(missing)}")
    if lane.fake.balance(lane.key) != START_BALANCE - owed:
        problems.append(f"{lane.name}: balance {lane.fake.balance(lane.key)}, owed {owed}")
    tally.charges = sum(ledger.values())
    tally.replays = len(lane.replayed)
    tally.replays_already_charged = sum(1 for ref in failed if before[ref])
    return tally


def _compare(
    result: BlockResult, expected: Expected, lane: Lane, problem: Callable[[str], None]
) -> None:
    """The block, which saw exactly its planned faults, against the documented rules."""
    plan = result.plan
    checks, spends = result.attempts("check"), result.attempts("spend")
    if result.outcome != expected.outcome:
        problem(f"ended {result.outcome}, expected {expected.outcome}")
        return
    if (len(checks), len(spends)) != (expected.check_attempts, expected.spend_attempts):
        problem(
            f"made {len(checks)} check and {len(spends)} spend attempts, expected "
            f"{expected.check_attempts} and {expected.spend_attempts}"
        )
    error = result.error
    if result.outcome == "check_failed" and type(error) is not expected.error:
        problem(f"check raised {error!r}, expected {expected.error}")
    if isinstance(error, SpendFailedError):
        cause = error.__cause__
        if type(cause) is not expected.error:
            problem(f"SpendFailedError caused by {cause!r}, expected {expected.error}")
        if (error.tool, error.units, error.reference) != (
            plan.tool,
            plan.final_units,
            plan.reference,
        ):
            problem(f"SpendFailedError names {error.tool} x{error.units} {error.reference}")
        if error.journaled != lane.journaled:
            problem(f"SpendFailedError.journaled is {error.journaled}")
        charged_before = any(r.reference == plan.reference for r in lane.ledger_before_replay)
        if charged_before != expected.committed:
            problem(f"charged before the replay: expected {expected.committed}")
    if result.outcome == "charged" and not plan.decorated:
        charge = result.charge
        wanted = cost(lane.fake.prices, plan.tool, plan.final_units)
        if charge is None or (charge.reference, charge.charged) != (plan.reference, wanted):
            problem(f"meter.charge is {charge!r}, expected {wanted} tokens")


def run_sync_lane(
    lane: Lane, client: AmaiClient, plans: list[BlockPlan], recorder: Recorder
) -> None:
    """Run a lane's blocks one after another, then replay every SpendFailedError."""
    for plan in plans:
        mark = lane.begin(plan, recorder)
        result = run_block(client, plan)
        result.seen = recorder.since(lane.port, mark)
        lane.results.append(result)
    lane.fake.reset_faults()
    lane.ledger_before_replay = lane.fake.spends
    if lane.journaled:
        lane.pending = client.pending_spends()
        lane.replayed = client.replay_pending()
        lane.pending_after = client.pending_spends()
    else:
        lane.replayed = [
            client.spend(error.tool, error.units, reference=error.reference)
            for error in lane.spend_failures()
        ]


async def run_async_lane(
    lane: Lane, client: AsyncAmaiClient, plans: list[BlockPlan], recorder: Recorder
) -> None:
    """Each block of the lane is its own task; they take the lane's server in turn."""
    turn = asyncio.Lock()

    async def one(plan: BlockPlan) -> None:
        async with turn:
            mark = lane.begin(plan, recorder)
            result = await arun_block(client, plan)
            result.seen = recorder.since(lane.port, mark)
            lane.results.append(result)

    await asyncio.gather(*(one(plan) for plan in plans))
    lane.fake.reset_faults()
    lane.ledger_before_replay = lane.fake.spends
    if lane.journaled:
        lane.pending = await client.pending_spends()
        lane.replayed = await client.replay_pending()
        lane.pending_after = await client.pending_spends()
    else:
        lane.replayed = [
            await client.spend(error.tool, error.units, reference=error.reference)
            for error in lane.spend_failures()
        ]
