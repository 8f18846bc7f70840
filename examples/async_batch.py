"""Many metered jobs at once on one `AsyncAmaiClient`.

Forty transcriptions run concurrently. Each is its own metered block: quoted before it
starts, charged once when it succeeds, and not charged at all when it fails (every
seventh job fails here, on purpose). Runs against the SDK's offline server over loopback
HTTP.

    python examples/async_batch.py
"""

from __future__ import annotations

import asyncio
import random

from amaimedia import AsyncAmaiClient
from amaimedia.testing import FakeAmaiServer

JOBS = 40


class TranscriptionFailed(Exception):
    pass


async def transcribe(aclient: AsyncAmaiClient, job: int, minutes: float) -> str:
    async with aclient.metered("speech2text", units=minutes, reference=f"batch-7-job-{job}"):
        await asyncio.sleep(random.uniform(0.01, 0.05))  # the real work would go here
        if job % 7 == 3:
            raise TranscriptionFailed(f"job {job}: unreadable audio")
        return f"transcript of job {job}"


async def main() -> None:
    random.seed(7)
    fake = FakeAmaiServer()
    key = fake.create_key(balance=10_000)
    minutes = {job: random.choice([1, 2, 2.5, 4]) for job in range(JOBS)}

    with fake.serve() as base_url:
        async with AsyncAmaiClient(api_key=key, base_url=base_url) as aclient:
            results = await asyncio.gather(
                *(transcribe(aclient, job, minutes[job]) for job in range(JOBS)),
                return_exceptions=True,
            )

    done = [r for r in results if isinstance(r, str)]
    failed = [r for r in results if isinstance(r, TranscriptionFailed)]
    expected = sum(
        fake.prices["speech2text"] * minutes[job] for job in range(JOBS) if job % 7 != 3
    )
    charged = sum(row.charged for row in fake.spends)
    print(f"{len(done)} jobs succeeded and {len(failed)} failed, out of {JOBS}, all at once")
    print(f"{len(fake.spends)} charges in the ledger, one per successful job: {charged} tokens")
    print(f"expected {expected:g} tokens; balance {fake.balance(key)} of 10000")
    assert len(fake.spends) == len(done)
    assert charged == expected
    assert {row.reference for row in fake.spends} == {
        f"batch-7-job-{job}" for job in range(JOBS) if job % 7 != 3
    }


if __name__ == "__main__":
    asyncio.run(main())
