"""The work a forked child does with the client it inherited, and what it reports.

Each child asks for units of its own, so that an answer meant for another process shows:
`cost_tokens` (or `charged`) is the price of the units this child asked for, or it is
someone else's answer.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from amaimedia import AmaiClient, AsyncAmaiClient

__all__ = [
    "Job",
    "Report",
    "adopt",
    "arun_job",
    "pool_job",
    "run_any",
    "run_async_job",
    "run_job",
    "run_metered",
]

_T = TypeVar("_T")


@dataclass(frozen=True)
class Job:
    """One child's share: `checks` quotes and `spends` charges, all of `units` chat."""

    child: int
    units: int
    price: int  # tokens per unit of chat, as the fake charges it
    tag: str  # keeps the references of one test apart from another's
    checks: int = 40
    spends: int = 5

    @property
    def cost(self) -> int:
        return self.price * self.units

    def references(self) -> list[str]:
        return [f"{self.tag}-child{self.child}-{n}" for n in range(self.spends)]

    def calls(self) -> list[str | None]:
        """What to send, in order: `None` for a check, a reference for a spend."""
        calls: list[str | None] = [None] * self.checks
        gap = self.checks // (self.spends + 1)
        for n, reference in enumerate(self.references(), start=1):
            calls.insert(n * gap + n - 1, reference)  # spread among the checks
        return calls


@dataclass
class Report:
    """What one child saw: every answer that was not its own, every exception."""

    child: int
    pid: int = field(default_factory=os.getpid)
    calls: int = 0
    crossed: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    # The local ports of the connections to the server that the child did not inherit.
    own_connections: list[int] = field(default_factory=list)

    def answered(self, what: str, cost: int, due: int) -> None:
        self.calls += 1
        if cost != due:
            self.crossed.append(f"child {self.child}, {what}: {cost} tokens where {due} was due")

    def failed(self, what: str, exc: BaseException) -> None:
        self.calls += 1
        self.errors.append(f"child {self.child}, {what}: {type(exc).__name__}: {exc}"[:300])


def run_job(client: AmaiClient, job: Job) -> Report:
    report = Report(job.child)
    for reference in job.calls():
        what = "check" if reference is None else f"spend {reference}"
        try:
            if reference is None:
                cost = client.check("chat", job.units).cost_tokens
            else:
                cost = client.spend("chat", job.units, reference=reference).charged
        except Exception as exc:
            report.failed(what, exc)
        else:
            report.answered(what, cost, job.cost)
    return report


async def arun_job(client: AsyncAmaiClient, job: Job) -> Report:
    report = Report(job.child)
    for reference in job.calls():
        what = "check" if reference is None else f"spend {reference}"
        try:
            if reference is None:
                cost = (await client.check("chat", job.units)).cost_tokens
            else:
                cost = (await client.spend("chat", job.units, reference=reference)).charged
        except Exception as exc:
            report.failed(what, exc)
        else:
            report.answered(what, cost, job.cost)
    return report


def run_async_job(client: AsyncAmaiClient, job: Job) -> Report:
    """`arun_job` in `asyncio.run`, as a child forked from a running loop can."""
    return in_fresh_loop(arun_job(client, job))


def run_any(client: AmaiClient | AsyncAmaiClient, job: Job) -> Report:
    """`job` with either client."""
    if isinstance(client, AmaiClient):
        return run_job(client, job)
    return run_async_job(client, job)


def run_metered(client: AmaiClient, job: Job) -> Report:
    """One metered block (a check, then a spend) per reference of `job`, nothing else."""
    report = Report(job.child)
    for reference in job.references():
        what = f"metered {reference}"
        try:
            with client.metered("chat", units=job.units, reference=reference) as meter:
                pass
        except Exception as exc:
            report.failed(what, exc)
        else:
            charged = -1 if meter.charge is None else meter.charge.charged
            report.answered(what, charged, job.cost)
    return report


def in_fresh_loop(coroutine: Coroutine[Any, Any, _T]) -> _T:
    """Run `coroutine` with `asyncio.run` in a thread of its own.

    A child forked inside the parent's `asyncio.run` is still inside it: on Python 3.10
    and 3.11 its main thread counts the parent's loop as running, and refuses another.
    """
    with ThreadPoolExecutor(max_workers=1) as thread:
        return thread.submit(asyncio.run, coroutine).result()


# --- multiprocessing.Pool ---------------------------------------------------------------

_adopted: list[AmaiClient | AsyncAmaiClient] = []


def adopt(client: AmaiClient | AsyncAmaiClient) -> None:
    """A pool's initializer: keep the parent's client, inherited by the fork (not pickled).

    With the `fork` start method a worker's `initargs` are the parent's own objects.
    """
    _adopted.append(client)


def pool_job(job: Job) -> Report:
    """A pool's task: `job`, with the client `adopt` kept in this worker."""
    (client,) = _adopted
    return run_any(client, job)
