"""The transactional outbox: a job's result and the spend it owes commit together.

A worker subtitles a queue of jobs and saves each result in PostgreSQL. In the same
transaction it writes the spend the job owes to the spend journal (`add_pending_spend`),
so that a saved result is always billed and an unsaved one never is: both commit, or
neither does. After the commit, `replay_pending()` sends what is owed.

The first run fails one job halfway (its transaction rolls back: no result, no spend),
then dies right after committing another, before it could send that one's spend. The
restarted worker starts with a replay, which bills the job the dead one left owed. The
ledger ends with exactly one charge per saved result.

    DATABASE_URL=postgresql://user:password@localhost/app python examples/outbox_worker.py

It needs a PostgreSQL database it may create a table in (`pip install "amaimedia[postgres]"`)
and talks to the SDK's offline server, never to the real API.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

import psycopg

from amaimedia import AmaiClient
from amaimedia.testing import FakeAmaiServer


@dataclass(frozen=True)
class Job:
    id: str
    minutes: int


QUEUE = [Job("s1", 2), Job("s2", 1), Job("s3", 4), Job("s4", 3), Job("s5", 1)]


class WorkerDied(Exception):
    """Stands in for a crash, an OOM kill or a deploy."""


class SubtitlesFailed(Exception):
    """The work itself failed, after part of its result was written."""


def subtitle(job: Job) -> str:
    if job.id == "s2":
        raise SubtitlesFailed(f"the audio of {job.id} is unreadable")
    return f"subtitles of {job.id} ({job.minutes} min)"


def run_worker(client: AmaiClient, db: psycopg.Connection, *, die_after: str | None) -> None:
    # What a dead worker left owed goes out first.
    replayed = client.replay_pending()
    if replayed:
        print(f"  replay: billed {len(replayed)} spend(s) left owed by the last run")
    for job in QUEUE:
        if db.execute("SELECT 1 FROM subtitles WHERE job_id = %s", (job.id,)).fetchone():
            continue  # done by an earlier run
        try:
            with db.transaction():
                db.execute("INSERT INTO subtitles (job_id, text) VALUES (%s, '')", (job.id,))
                text = subtitle(job)
                db.execute("UPDATE subtitles SET text = %s WHERE job_id = %s", (text, job.id))
                # Owed in this transaction: billed if and only if the result is saved.
                client.add_pending_spend(db, "dub", job.minutes, reference=f"subtitles-{job.id}")
        except SubtitlesFailed as exc:
            print(f"  {job.id}: failed ({exc}); nothing saved, nothing owed")
            continue
        if job.id == die_after:
            raise WorkerDied(f"died after saving {job.id}, before sending its spend")
        charges = client.replay_pending()
        print(f"  {job.id}: saved, billed {sum(c.charged for c in charges)} tokens")


def main() -> int:
    url = os.environ.get("DATABASE_URL")
    if not url:
        print("set DATABASE_URL to a PostgreSQL database, such as", file=sys.stderr)
        print("  DATABASE_URL=postgresql://user:password@localhost/app", file=sys.stderr)
        return 2
    fake = FakeAmaiServer()
    key = fake.create_key(balance=10_000)
    with fake.serve() as base_url, psycopg.connect(url, autocommit=True) as db:
        db.execute("DROP TABLE IF EXISTS subtitles")
        db.execute("CREATE TABLE subtitles (job_id TEXT PRIMARY KEY, text TEXT NOT NULL)")
        with AmaiClient(api_key=key, base_url=base_url, spend_journal=url) as client:
            print("first run:")
            try:
                run_worker(client, db, die_after="s3")
            except WorkerDied as exc:
                print(f"  {exc}")
        # A new process, in real life: a new client on the same database.
        with AmaiClient(api_key=key, base_url=base_url, spend_journal=url) as client:
            print("restarted worker:")
            run_worker(client, db, die_after=None)
            left = len(client.pending_spends())
        saved = [row[0] for row in db.execute("SELECT job_id FROM subtitles ORDER BY job_id")]
        billed = sorted(spend.reference.removeprefix("subtitles-") for spend in fake.spends)
        print(f"results saved: {', '.join(saved)}")
        print(f"ledger: {len(fake.spends)} charges, for {', '.join(billed)}; {left} left owed")
        return 0 if saved == billed and left == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
