"""References derived from job ids: a restarted worker cannot charge a job twice.

A worker dubs a queue of jobs. Its first run dies halfway, after some jobs were charged
but before it could record them as finished, so the restarted worker does those jobs
again. Because each spend's reference is derived from the job id, the server recognises
the repeats and charges nothing more: the ledger ends with exactly one charge per job.

    python examples/own_reference.py
"""

from __future__ import annotations

from dataclasses import dataclass

from amaimedia import AmaiClient
from amaimedia.testing import FakeAmaiServer


@dataclass(frozen=True)
class Job:
    id: str
    minutes: float


QUEUE = [Job("a41", 2), Job("a42", 1.5), Job("a43", 3), Job("a44", 1), Job("a45", 2.5)]


class WorkerDied(Exception):
    """Stands in for a crash, an OOM kill or a deploy."""


def dub_reference(job: Job) -> str:
    """The spend's reference: the same for every run of one job."""
    return f"dub-{job.id}"


def run_worker(client: AmaiClient, finished: set[str], *, die_after: int | None) -> int:
    # The reference is a function of the job, so every run of the same job uses the same one.
    @client.metered("dub", reference=dub_reference)
    def dub(job: Job) -> str:
        return f"{job.id}.mp4"  # the real work would go here

    done = 0
    for job in QUEUE:
        if job.id in finished:
            continue
        dub(job)  # charged here, once the work succeeded
        done += 1
        if die_after is not None and done == die_after:
            raise WorkerDied(f"died after {job.id} was charged, before it was marked finished")
        finished.add(job.id)
    return done


def main() -> None:
    fake = FakeAmaiServer()
    key = fake.create_key(balance=1_000)
    finished: set[str] = set()  # the worker's own record, lost with the first run's last job

    with fake.client(key) as client:
        try:
            run_worker(client, finished, die_after=3)
        except WorkerDied as exc:
            print(f"first run:  {exc}")
        print(f"            ledger has {len(fake.spends)} charges; finished: {sorted(finished)}")
        redone = run_worker(client, finished, die_after=None)
        print(f"second run: did {redone} jobs, one of them for the second time")

    references = [row.reference for row in fake.spends]
    print(f"ledger:     {len(references)} charges, one per job: {references}")
    spent = sum(row.charged for row in fake.spends)
    print(f"balance:    {fake.balance(key)} of 1000 ({spent} spent)")
    assert sorted(references) == [f"dub-{job.id}" for job in QUEUE]


if __name__ == "__main__":
    main()
