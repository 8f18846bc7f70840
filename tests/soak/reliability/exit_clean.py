"""Use both clients hard, under faults, then exit: nothing may be left to clean up.

Run as `python -X dev -W error exit_clean.py` with AMAI_API_KEY and AMAI_BASE_URL set to
a `FakeAmaiServer` that has faults queued, and AMAI_TEST_JOURNAL / AMAI_TEST_TIMEOUT.
16 threads share one `AmaiClient` with a spend journal, then 100 tasks share one
`AsyncAmaiClient` with one, over httpx's transport and then over aiohttp's; every fourth
block raises. Prints one JSON line: the references charged, the failed spends to replay
(`[tool, units, reference]`), those never charged, and the connections each client still
held after closing.

Anything on stderr is a failure of the test that runs this: with `-X dev -W error`, an
unclosed socket or transport, or a loop closed under a live connection, prints there.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import logging
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal

import amaimedia._retry
from amaimedia import AiohttpTransport, AmaiClient, AmaiError, AsyncAmaiClient, SpendFailedError

THREADS, SYNC_BLOCKS, TASKS = 16, 48, 100

# The SDK logs a WARNING for each spend that failed for good, and the faults make some
# fail: an app with logging set up keeps them in its logs, as this handler does, so that
# stderr shows only what the interpreter itself prints at exit.
SDK_RECORDS: list[logging.LogRecord] = []


class _Keep(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        SDK_RECORDS.append(record)


logging.getLogger("amaimedia").addHandler(_Keep())


class Planned(Exception):
    """The work failing on purpose."""


def record(outcome: dict[str, list[Any]], reference: str, exc: BaseException | None) -> None:
    if exc is None:
        outcome["charged"].append(reference)
    elif isinstance(exc, SpendFailedError):
        outcome["spend_failed"].append([exc.tool, exc.units, exc.reference])
    elif isinstance(exc, Planned | AmaiError):
        outcome["not_charged"].append(reference)
    else:
        raise exc


def sync_part(outcome: dict[str, list[Any]], options: dict[str, Any]) -> int:
    with AmaiClient(**options) as client:

        def block(n: int) -> None:
            reference = f"sync-{n}"
            try:
                with client.metered("chat", reference=reference):
                    if n % 4 == 3:
                        raise Planned(reference)
            except (Planned, AmaiError) as exc:
                record(outcome, reference, exc)
            else:
                record(outcome, reference, None)

        with ThreadPoolExecutor(max_workers=THREADS) as pool:
            list(pool.map(block, range(SYNC_BLOCKS)))
        # The pools of the client's routes, kept to count what they hold once closed.
        routes = list(client._http._transport._routes.values())  # type: ignore[attr-defined]
    return sum(len(route._pool.connections) for route in routes)


async def async_part(
    outcome: dict[str, list[Any]], options: dict[str, Any], transport: Literal["httpx", "aiohttp"]
) -> int:
    # -X dev turns on asyncio's debug mode, which logs any step slower than 0.1 s: on a
    # loaded machine that is noise, not a resource left open.
    asyncio.get_running_loop().slow_callback_duration = 60.0
    async with AsyncAmaiClient(**options, transport=transport) as client:

        async def one(n: int) -> None:
            reference = f"{transport}-{n}"
            try:
                async with client.metered("sfx", reference=reference):
                    await asyncio.sleep(0)
                    if n % 4 == 3:
                        raise Planned(reference)
            except (Planned, AmaiError) as exc:
                record(outcome, reference, exc)
            else:
                record(outcome, reference, None)

        await asyncio.gather(*(one(n) for n in range(TASKS)))
        # This loop's state of the client's transport, kept to see what it holds once closed.
        own: Any = client._http._transport
        states = own._loops._states if hasattr(own, "_loops") else own._sessions._states
        (state, _) = states[asyncio.get_running_loop()]
    if isinstance(own, AiohttpTransport):
        return 0 if state.session.closed else 1  # its session holds its connections
    return sum(len(bounded._inner._pool.connections) for bounded in state.values())


def main() -> int:
    # Milliseconds between retries, as in the test suites; the rules stay the same. (With
    # setattr: _retry imports these names from _constants rather than exporting them.)
    setattr(amaimedia._retry, "INITIAL_RETRY_DELAY", 0.001)  # noqa: B010
    setattr(amaimedia._retry, "MAX_RETRY_DELAY", 0.004)  # noqa: B010
    options = {
        "timeout": float(os.environ["AMAI_TEST_TIMEOUT"]),
        "max_retries": 2,
        "max_retry_after": 1.0,
        "spend_journal": os.environ["AMAI_TEST_JOURNAL"],
    }
    outcome: dict[str, list[Any]] = {"charged": [], "spend_failed": [], "not_charged": []}
    pools = [sync_part(outcome, options), asyncio.run(async_part(outcome, options, "httpx"))]
    if importlib.util.find_spec("aiohttp") is not None:  # the amaimedia[aiohttp] extra
        pools.append(asyncio.run(async_part(outcome, options, "aiohttp")))
    print(json.dumps({**outcome, "pools_after_close": pools}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
