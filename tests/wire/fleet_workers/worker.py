"""One worker of the fleet test: metered jobs handed out on stdin, one PostgreSQL journal.

Usage: python worker.py JOURNAL_URL IDENT [--async]

The key and the server come from `AMAI_API_KEY` and `AMAI_BASE_URL`; the working
directory is the worker's machine, where nothing but `completed.log` is written. Every
request carries `x-fleet-worker: IDENT` (the worker and its incarnation, `w2.3`), so that
the test's server knows whose spend it is holding.

The worker talks to the test one line at a time:

- it prints `ready` once its client is built, then replays what the journal holds
  (`replayed REF...`, or `replay-failed` when the journal cannot be read);
- it prints `next` whenever it wants a job, and reads `job N SECONDS` (run job N, its work
  taking that long) or `stop` (exit 0);
- for job N it prints `work N` inside the metered block, as the work starts; the last
  statement of the block appends `job-N` to `completed.log` (flushed and fsynced), so
  that the test knows which blocks' work completed; after the block it prints `done N`
  (charged) or `spend-failed N`.

Warnings of the SDK (a journal that cannot be written, say) go to stderr, timestamped.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import time

import httpx

from amaimedia import AmaiClient, AsyncAmaiClient, SpendFailedError, SpendJournalError

TOOL = "dub"
UNITS = 3
COMPLETED = "completed.log"


def say(line: str) -> None:
    print(line, flush=True)


def record_completion(reference: str) -> None:
    """Append the job's reference to this machine's log, durably."""
    with open(COMPLETED, "a", encoding="utf-8") as log:
        log.write(f"{reference}\n")
        log.flush()
        os.fsync(log.fileno())


def parse_job(line: str) -> tuple[int, float] | None:
    """`(n, seconds)` for a `job N SECONDS` line; `None` for `stop` (or the end of stdin)."""
    words = line.split()
    if not words or words[0] == "stop":
        return None
    if words[0] != "job" or len(words) != 3:
        raise SystemExit(f"unexpected line from the test: {line!r}")
    return int(words[1]), float(words[2])


def run_sync(journal: str, headers: dict[str, str]) -> None:
    with (
        httpx.Client(headers=headers) as http,
        AmaiClient(spend_journal=journal, http_client=http) as client,
    ):
        say("ready")
        try:
            report = client.replay_pending()
        except SpendJournalError as exc:
            logging.getLogger("fleet").warning("replay at start failed: %s", exc)
            say("replay-failed")
        else:
            say(" ".join(["replayed", *(charge.reference for charge in report)]))
        while True:
            say("next")
            job = parse_job(sys.stdin.readline())
            if job is None:
                return
            n, seconds = job
            reference = f"job-{n}"
            try:
                with client.metered(TOOL, UNITS, reference=reference):
                    say(f"work {n}")
                    time.sleep(seconds)
                    record_completion(reference)
            except SpendFailedError as exc:
                logging.getLogger("fleet").warning("job %s: %s", n, exc)
                say(f"spend-failed {n}")
            else:
                say(f"done {n}")


async def run_async(journal: str, headers: dict[str, str]) -> None:
    async with (
        httpx.AsyncClient(headers=headers) as http,
        AsyncAmaiClient(spend_journal=journal, http_client=http) as client,
    ):
        say("ready")
        try:
            report = await client.replay_pending()
        except SpendJournalError as exc:
            logging.getLogger("fleet").warning("replay at start failed: %s", exc)
            say("replay-failed")
        else:
            say(" ".join(["replayed", *(charge.reference for charge in report)]))
        while True:
            say("next")
            job = parse_job(await asyncio.to_thread(sys.stdin.readline))
            if job is None:
                return
            n, seconds = job
            reference = f"job-{n}"
            try:
                async with client.metered(TOOL, UNITS, reference=reference):
                    say(f"work {n}")
                    await asyncio.sleep(seconds)
                    record_completion(reference)
            except SpendFailedError as exc:
                logging.getLogger("fleet").warning("job %s: %s", n, exc)
                say(f"spend-failed {n}")
            else:
                say(f"done {n}")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("journal")
    parser.add_argument("ident")
    parser.add_argument("--async", dest="use_async", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.WARNING,
        format=f"%(created).6f {args.ident} %(name)s %(levelname)s %(message)s",
    )
    headers = {"x-fleet-worker": args.ident}
    if args.use_async:
        asyncio.run(run_async(args.journal, headers))
    else:
        run_sync(args.journal, headers)
    return 0


if __name__ == "__main__":
    sys.exit(main())
