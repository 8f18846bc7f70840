"""Event loops over real sockets: one client used from one `asyncio.run()` after another
and from loops in several threads, a caller's pool from an ended loop, the slow setup of
the first request kept off the loop, and a total deadline cutting a slow answer.

Everything talks to the offline `FakeAmaiServer` over loopback: only a real connection is
bound to an event loop.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from amaimedia import (
    AmaiClient,
    APITimeoutError,
    AsyncAmaiClient,
)
from amaimedia.testing import FakeAmaiServer
from tests.conftest import Harness

KEY = "amai_live_test_0123456789abcdefWXYZ"
BASE_URL = "https://api.amaimedia.com"
CHECK_URL = BASE_URL + "/api/v1/tools/check"
SPEND_URL = BASE_URL + "/api/v1/tools/spend"
QUOTE = {"ok": True, "allowed": True, "cost_tokens": 5, "balance_after": 9995}
CHARGE = {"ok": True, "charged": 5, "balance_after": 9990}


def test_total_timeout_over_loopback_ends_a_slow_answer(harness: Harness) -> None:
    fake = FakeAmaiServer()
    key = fake.create_key()
    fake.fail_next("check", delay=3.0)
    with fake.serve() as base_url:
        client = harness.client(
            http_client=None, api_key=key, base_url=base_url, timeout=30, total_timeout=0.3
        )
        with pytest.raises(APITimeoutError) as caught:
            harness.run(client.check("chat"))
        harness.run(client.aclose() if harness.is_async else client.close())
    # The read was cut to the 0.3 s left, and the retry's wait would end past the deadline.
    assert caught.value.retryable is False
    assert "total_timeout of 0.3 s is spent after 1 attempt" in str(caught.value)
    assert len(fake.requests) == 1


# --- event loops, one after another ---------------------------------------------------


@pytest.fixture
def served() -> Iterator[tuple[FakeAmaiServer, str, str]]:
    fake = FakeAmaiServer()
    key = fake.create_key(balance=100_000)
    with fake.serve() as base_url:
        yield fake, key, base_url


@pytest.mark.parametrize("transport", ["httpx", "aiohttp"])
def test_one_client_serves_one_event_loop_after_another(
    served: tuple[FakeAmaiServer, str, str], transport: Any, caplog: pytest.LogCaptureFixture
) -> None:
    fake, key, base_url = served
    client = AsyncAmaiClient(api_key=key, base_url=base_url, transport=transport)

    async def job(units: int) -> tuple[int, int]:
        quote = await client.check("chat", units=units)
        charge = await client.spend("chat", units=units, reference=f"job-{units}")
        return quote.cost_tokens, charge.charged

    with caplog.at_level(logging.DEBUG, logger="asyncio"):
        results = [asyncio.run(job(units)) for units in (1, 2, 3)]
        asyncio.run(client.aclose())
        gc.collect()  # a connection left open would warn here, and fail the test
    assert results == [(5, 5), (10, 10), (15, 15)]
    assert [spend.reference for spend in fake.spends] == ["job-1", "job-2", "job-3"]
    assert "never retrieved" not in caplog.text


@pytest.mark.parametrize("transport", ["httpx", "aiohttp"])
def test_loops_in_several_threads_share_one_client(
    served: tuple[FakeAmaiServer, str, str], transport: Any
) -> None:
    _, key, base_url = served
    client = AsyncAmaiClient(api_key=key, base_url=base_url, transport=transport)
    results: dict[int, list[int]] = {}

    async def calls(worker: int) -> list[int]:
        quotes = await asyncio.gather(*(client.check("chat", units=worker) for _ in range(10)))
        return [quote.cost_tokens for quote in quotes]

    def run(worker: int) -> None:
        results[worker] = asyncio.run(calls(worker))

    threads = [threading.Thread(target=run, args=(worker,)) for worker in range(1, 5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    asyncio.run(client.aclose())
    gc.collect()
    assert results == {worker: [5 * worker] * 10 for worker in range(1, 5)}


# Run in a process of its own: the pool left behind holds a connection of the ended loop,
# which nothing can close, and its socket warns when collected. That is the caller's pool,
# and the point of the message.
DEAD_LOOP_SCRIPT = """
import asyncio, json, sys, httpx
from amaimedia import AsyncAmaiClient, APIConnectionError
key, base_url = sys.argv[1:]
made = []

async def first():
    http = httpx.AsyncClient()
    client = AsyncAmaiClient(api_key=key, base_url=base_url, http_client=http, max_retries=3)
    made.append(client)
    return (await client.check("chat")).cost_tokens

async def second():
    try:
        await made[0].spend("chat", reference="job-late")
    except APIConnectionError as exc:
        return {"error": type(exc).__name__, "retryable": exc.retryable,
                "reference": exc.reference, "message": str(exc)}
    return {"error": None}

print(json.dumps({"first": asyncio.run(first()), "second": asyncio.run(second())}))
"""


@pytest.mark.slow
def test_a_pool_of_your_own_from_an_ended_loop_is_explained(
    served: tuple[FakeAmaiServer, str, str],
) -> None:
    fake, key, base_url = served
    done = subprocess.run(
        [sys.executable, "-c", DEAD_LOOP_SCRIPT, key, base_url],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    outcome = json.loads(done.stdout.splitlines()[-1])
    assert outcome["first"] == 5
    second = outcome["second"]
    assert second["error"] == "APIConnectionError"
    assert second["retryable"] is False
    assert second["reference"] == "job-late"
    assert "the http_client's connections belong to an event loop" in second["message"]
    assert "Create the httpx.AsyncClient inside the loop that uses it" in second["message"]
    # The request may have left on the dead connection before its answer could be read:
    # the reference the error carries replays it, and it is charged once.
    with AmaiClient(api_key=key, base_url=base_url) as client:
        client.spend("chat", reference=second["reference"])
    assert [spend.reference for spend in fake.spends] == ["job-late"]


def test_the_slow_setup_of_an_async_pool_runs_off_the_event_loop(
    served: tuple[FakeAmaiServer, str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Loading certificates takes tens of milliseconds: never on the loop's thread."""
    from amaimedia._transports import _tls

    _tls._context.cache_clear()
    loaded_on: list[str] = []
    create = ssl.create_default_context

    def recording(*args: Any, **kwargs: Any) -> ssl.SSLContext:
        loaded_on.append(threading.current_thread().name)
        return create(*args, **kwargs)

    monkeypatch.setattr(ssl, "create_default_context", recording)
    _, key, base_url = served

    async def main() -> str:
        async with AsyncAmaiClient(api_key=key, base_url=base_url) as client:
            await client.check("chat")
        return threading.current_thread().name

    loop_thread = asyncio.run(main())
    assert loaded_on
    assert loop_thread not in loaded_on


AIOHTTP_IMPORT_SCRIPT = """
import asyncio, json, sys, threading, time
key, base_url = sys.argv[1:]
imported_on = []

def audit(event, args):
    if event == "import" and args[0].split(".")[0] == "aiohttp":
        imported_on.append(threading.current_thread().name)

sys.addaudithook(audit)
from amaimedia import AsyncAmaiClient

async def main():
    gaps, stop = [], asyncio.Event()

    async def ticker():
        last = time.monotonic()
        while not stop.is_set():
            await asyncio.sleep(0.005)
            now = time.monotonic()
            gaps.append(now - last)
            last = now

    tick = asyncio.create_task(ticker())
    await asyncio.sleep(0.02)
    async with AsyncAmaiClient(api_key=key, base_url=base_url, transport="aiohttp") as client:
        await client.check("chat")
    stop.set()
    await tick
    return threading.current_thread().name, max(gaps)

loop_thread, longest = asyncio.run(main())
print(json.dumps({"loop": loop_thread, "imported_on": imported_on, "longest_gap": longest}))
"""


@pytest.mark.slow
def test_aiohttp_is_imported_off_the_event_loop(served: tuple[FakeAmaiServer, str, str]) -> None:
    _, key, base_url = served
    done = subprocess.run(
        [sys.executable, "-c", AIOHTTP_IMPORT_SCRIPT, key, base_url],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    outcome = json.loads(done.stdout.splitlines()[-1])
    assert outcome["imported_on"], "aiohttp was never imported"
    assert outcome["loop"] not in outcome["imported_on"]
    # Shown with -s, for the record; timing is the benchmark's to judge.
    print(
        f"longest event-loop gap while building and first using the client: "
        f"{outcome['longest_gap'] * 1000:.1f} ms"
    )
