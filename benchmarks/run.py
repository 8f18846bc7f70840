"""How much the SDK costs beyond the network, measured against raw httpx in one run.

    python benchmarks/run.py                 # the full run, a few minutes; prints the table
    python benchmarks/run.py --only journal  # one group of rows (repeatable)
    python benchmarks/run.py --smoke         # every row once with tiny counts, a few seconds

Each figure is measured side by side with its baseline: the two are interleaved, round
after round, so that a noisy neighbour slows both, and each side keeps its best round
(noise only ever adds time). Import times come from fresh interpreters, as the median of
several. The table says, per row, whether its target is met; a full run exits with
status 1 when one is not. A smoke run proves that every row still runs and judges none.

The spend journal's rows need PostgreSQL: the server at `$AMAI_BENCH_POSTGRES` (a
connection string) when set, else a throwaway cluster made by `scripts/postgres` and
removed at the end. Either way the rows run in a database made for the run and dropped
after it. A row that cannot run says why, and makes any run, a smoke run too, exit with
status 1.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import itertools
import json
import os
import platform
import secrets
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from types import FrameType
from typing import Any

import httpx

from amaimedia import AmaiClient, AsyncAmaiClient, Charge, Quote, SpendJournal

HERE = Path(__file__).resolve().parent
KEY = "amai_live_benchmark_0123456789abcdef"
BASE_URL = "https://api.amaimedia.com"
CONCURRENCY = 32
# A balance no run can spend: every answer quotes the same one, and admission counts the
# charges settled while a quote was on its way, so that a smaller balance would see blocks
# refused once a second of them had charged more than it (benchmarks/server.py's too).
BALANCE = 10**15
QUOTE = json.dumps({"ok": True, "allowed": True, "cost_tokens": 5, "balance_after": BALANCE})
CHARGE = json.dumps({"ok": True, "charged": 5, "balance_after": BALANCE - 5})
# The headers the SDK sets, for the raw baseline to send too.
HEADERS = {
    "Accept": "application/json",
    "Content-Type": "application/json",
    "Authorization": f"Bearer {KEY}",
}
CHECK_BODY = b'{"tool":"chat","units":1}'


@dataclass(frozen=True)
class Settings:
    """How long each kind of measurement runs."""

    rounds: int  # interleaved rounds per figure; each side keeps its best
    calls: int  # calls per round, in process
    seconds: float  # length of a round over loopback
    imports: int  # fresh interpreters per import statement
    memory: tuple[int, int]  # calls before the first and the second reading

    @classmethod
    def full(cls, rounds: int) -> Settings:
        return cls(rounds=rounds, calls=2_000, seconds=1.5, imports=15, memory=(1_000, 50_000))

    @classmethod
    def smoke(cls) -> Settings:
        return cls(rounds=1, calls=20, seconds=0.05, imports=1, memory=(100, 200))


X = "\N{MULTIPLICATION SIGN}"


@dataclass(frozen=True)
class Row:
    """One line of the table: the SDK's figure, its baseline's, and the target."""

    figure: str
    sdk: str
    baseline: str
    ratio: float | None
    target: str
    met: bool | None  # None: a figure given for reference, with no target
    ran: bool = True  # False: a prerequisite is missing, and `sdk` says which

    def cells(self, judged: bool) -> list[str]:
        ratio = "" if self.ratio is None else f"{self.ratio:.2f}{X}"
        if not self.ran:
            result = "**not run**"
        elif self.met is None:
            result = "(reference)"
        elif not judged:
            result = "(smoke)"
        else:
            result = "met" if self.met else "**missed**"
        return [self.figure, self.sdk, self.baseline, ratio, self.target, result]


def at_most(figure: str, sdk: str, baseline: str, ratio: float, limit: float) -> Row:
    return Row(figure, sdk, baseline, ratio, f"≤ {limit:.2f}{X}", ratio <= limit)


def at_least(figure: str, sdk: str, baseline: str, ratio: float, limit: float) -> Row:
    return Row(figure, sdk, baseline, ratio, f"≥ {limit:.2f}{X}", ratio >= limit)


def reference(figure: str, sdk: str, baseline: str, ratio: float) -> Row:
    return Row(figure, sdk, baseline, ratio, "", None)


def not_run(figure: str, target: str, reason: str) -> Row:
    """A row whose figure could not be measured: it counts as a missed target."""
    reason = " ".join(reason.split())  # one line of the table
    return Row(figure, f"not run: {reason}", "", None, target, False, ran=False)


# --- measuring ------------------------------------------------------------------------------


def interleaved(
    rounds: int, sides: dict[str, Callable[[], float]], best: Callable[[list[float]], float]
) -> dict[str, float]:
    """Run each side once per round, alternating the order; keep each side's best value."""
    values: dict[str, list[float]] = {name: [] for name in sides}
    names = list(sides)
    for index in range(rounds):
        for name in names if index % 2 == 0 else reversed(names):
            values[name].append(sides[name]())
    return {name: best(found) for name, found in values.items()}


def per_call(function: Callable[[], object], calls: int) -> float:
    """Microseconds per call of `function`, over `calls` calls after a short warm-up."""
    for _ in range(min(calls, 50)):
        function()
    start = time.perf_counter()
    for _ in range(calls):
        function()
    return (time.perf_counter() - start) / calls * 1e6


def mock_transport() -> httpx.MockTransport:
    """Answers like the API, in process, with bodies built once."""
    quote, charge = QUOTE.encode(), CHARGE.encode()
    headers = [("content-type", "application/json")]

    def handler(request: httpx.Request) -> httpx.Response:
        body = quote if request.url.path.endswith("/check") else charge
        return httpx.Response(200, headers=headers, content=body)

    return httpx.MockTransport(handler)


def in_process_rows(settings: Settings) -> list[Row]:
    """`check()` and `metered()` through `httpx.MockTransport`: the SDK's own cost."""
    transport = mock_transport()
    raw = httpx.Client(transport=transport)
    client = AmaiClient(api_key=KEY, http_client=httpx.Client(transport=transport))
    check_url, spend_url = f"{BASE_URL}/api/v1/tools/check", f"{BASE_URL}/api/v1/tools/spend"

    def raw_check() -> Quote:
        return Quote.model_validate_json(
            raw.post(check_url, content=CHECK_BODY, headers=HEADERS).content
        )

    def sdk_check() -> Quote:
        return client.check("chat")

    jobs = iter(range(10**9))

    def raw_metered() -> Charge:
        quote = raw_check()
        assert quote.allowed
        reference = f"job-{next(jobs)}"
        body = f'{{"tool":"chat","units":1,"reference":"{reference}"}}'
        answer = raw.post(spend_url, content=body, headers=HEADERS)
        return Charge.model_validate_json(answer.content, context={"reference": reference})

    def sdk_metered() -> None:
        with client.metered("chat"):
            pass

    calls = settings.calls
    checks = interleaved(
        settings.rounds,
        {"sdk": lambda: per_call(sdk_check, calls), "raw": lambda: per_call(raw_check, calls)},
        min,
    )
    metered = interleaved(
        settings.rounds,
        {
            "sdk": lambda: per_call(sdk_metered, calls // 2),
            "raw": lambda: per_call(raw_metered, calls // 2),
        },
        min,
    )
    client.close()
    raw.close()
    return [
        at_most(
            "`check()` per call, `httpx.MockTransport`",
            f"{checks['sdk']:.1f} µs",
            f"{checks['raw']:.1f} µs: `httpx.Client.post` + `Quote.model_validate_json`",
            checks["sdk"] / checks["raw"],
            1.10,
        ),
        at_most(
            "`metered()` block (check + spend), `httpx.MockTransport`",
            f"{metered['sdk']:.1f} µs",
            f"{metered['raw']:.1f} µs: the same two raw calls",
            metered["sdk"] / metered["raw"],
            1.15,
        ),
    ]


# --- OpenTelemetry --------------------------------------------------------------------------

TELEMETRY_FIGURE = "`check()` per call, OpenTelemetry API installed, no SDK configured"
TELEMETRY_TARGET = 1.05


def telemetry_row(settings: Settings) -> Row:
    """`check()` with OpenTelemetry's no-op providers, against the same call without it.

    Both clients run in this process, on one transport. The baseline's observer is made
    to find OpenTelemetry absent (its one look-up, on its first call, answers `None`), so
    it runs exactly the code of an install without `amaimedia[otel]`.
    """
    target = f"≤ {TELEMETRY_TARGET:.2f}{X}"
    try:
        from opentelemetry import trace
    except ImportError:
        return not_run(TELEMETRY_FIGURE, target, 'needs opentelemetry-api: "amaimedia[otel]"')
    if not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        return not_run(TELEMETRY_FIGURE, target, "an OpenTelemetry SDK is configured globally")
    import amaimedia._telemetry as telemetry

    transport = mock_transport()
    traced = AmaiClient(api_key=KEY, http_client=httpx.Client(transport=transport))
    bare = AmaiClient(api_key=KEY, http_client=httpx.Client(transport=transport))
    traced.check("chat")
    found = telemetry.recorder_for
    telemetry.recorder_for = lambda tracer_provider, meter_provider: None
    try:
        bare.check("chat")
    finally:
        telemetry.recorder_for = found
    assert traced._observer.recorder() is not None  # noqa: SLF001 - what is measured
    assert bare._observer.recorder() is None  # noqa: SLF001
    calls = settings.calls
    found_us = interleaved(
        settings.rounds,
        {
            "traced": lambda: per_call(lambda: traced.check("chat"), calls),
            "bare": lambda: per_call(lambda: bare.check("chat"), calls),
        },
        min,
    )
    traced.close()
    bare.close()
    return at_most(
        TELEMETRY_FIGURE,
        f"{found_us['traced']:.1f} µs",
        f"{found_us['bare']:.1f} µs: the same call, OpenTelemetry absent",
        found_us["traced"] / found_us["bare"],
        TELEMETRY_TARGET,
    )


# --- admission ------------------------------------------------------------------------------

ADMISSION_FIGURE = "`metered()` block, admission on against off, `httpx.MockTransport`"
ADMISSION_TARGET = 1.05
FLEET_BOOK_FIGURE = (
    "PostgreSQL-journaled `metered()` block with the fleet's reservation book, "
    "against the same block with `admission=False`, database over loopback"
)
FLEET_BOOK_TARGET = 1.50


def metered_pair(
    cleanups: ExitStack, journals: Callable[[], SpendJournal | None]
) -> dict[str, Callable[[], None]]:
    """One metered block with admission on, one with it off, each on a client of its own."""
    transport = mock_transport()

    def block(admission: bool) -> Callable[[], None]:
        client = AmaiClient(
            api_key=KEY,
            http_client=httpx.Client(transport=transport),
            spend_journal=journals(),
            admission=admission,
        )
        cleanups.callback(client.close)

        def metered() -> None:
            with client.metered("chat"):
                pass

        return metered

    return {"on": block(True), "off": block(False)}


def admission_row(settings: Settings) -> Row:
    """A metered block admitted by this process's book, against the block without it.

    Both clients run on one transport, so that the book (a reservation on entry, its
    release and the charge remembered on exit) is all that differs. The book's settled
    charges pile up as a steady load would pile them: by the thousand.
    """
    calls = settings.calls // 2
    with ExitStack() as cleanups:
        blocks = metered_pair(cleanups, lambda: None)
        found = interleaved(
            settings.rounds,
            {name: functools.partial(per_call, block, calls) for name, block in blocks.items()},
            min,
        )
    return at_most(
        ADMISSION_FIGURE,
        f"{found['on']:.1f} µs",
        f"{found['off']:.1f} µs: the same block, `admission=False`",
        found["on"] / found["off"],
        ADMISSION_TARGET,
    )


def fleet_book_row(settings: Settings, database: Database | NotRun) -> Row:
    """A PostgreSQL-journaled block admitted by the fleet's book, against one without it.

    Each side has a journal of its own on the run's database; the book's admission is a
    round trip to that database, in a transaction under the scope's advisory lock, and
    its release is sent by the book's thread. The baseline, `admission=False`, has no
    book at all, this process's included.
    """
    target = f"≤ {FLEET_BOOK_TARGET:.2f}{X}"
    if isinstance(database, NotRun):
        return not_run(FLEET_BOOK_FIGURE, target, str(database))
    calls = settings.calls // 4
    with ExitStack() as cleanups:
        blocks = metered_pair(cleanups, lambda: postgres_journal(cleanups, database))
        found = interleaved(
            settings.rounds,
            {name: functools.partial(per_call, block, calls) for name, block in blocks.items()},
            min,
        )
    return at_most(
        FLEET_BOOK_FIGURE,
        f"{found['on']:.0f} µs",
        f"{found['off']:.0f} µs: the same journaled block, `admission=False`",
        found["on"] / found["off"],
        FLEET_BOOK_TARGET,
    )


# --- over loopback --------------------------------------------------------------------------


@contextmanager
def loopback_server() -> Iterator[tuple[str, str]]:
    """The uvicorn server of `server.py` in a subprocess: yields its URL and its parser."""
    process = subprocess.Popen(
        [sys.executable, str(HERE / "server.py")],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        port, parser = process.stdout.readline().split()
        url = f"http://127.0.0.1:{port}"
        for _ in range(100):  # until uvicorn accepts
            try:
                httpx.post(url + "/api/v1/tools/check", content=b"{}", timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.05)
        yield url, parser
    finally:
        process.terminate()
        process.wait(timeout=10)


def sync_rate(call: Callable[[], object], seconds: float) -> float:
    """Sequential calls per second for `seconds`, after a warm-up."""
    for _ in range(20):
        call()
    count, start = 0, time.perf_counter()
    deadline = start + seconds
    while True:
        call()
        count += 1
        now = time.perf_counter()
        if now >= deadline:
            return count / (now - start)


async def async_rate(call: Callable[[], Awaitable[object]], seconds: float) -> float:
    """Calls per second with `CONCURRENCY` tasks calling for `seconds`, after a warm-up."""
    await asyncio.gather(*(call() for _ in range(2 * CONCURRENCY)))
    count = 0
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal count
        while time.perf_counter() < deadline:
            await call()
            count += 1

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    return count / (time.perf_counter() - start)


def sync_loopback(url: str, settings: Settings) -> dict[str, float]:
    check_url = url + "/api/v1/tools/check"

    def raw() -> float:
        with httpx.Client() as http:
            return sync_rate(
                lambda: Quote.model_validate_json(
                    http.post(check_url, content=CHECK_BODY, headers=HEADERS).content
                ),
                settings.seconds,
            )

    def sdk() -> float:
        with AmaiClient(api_key=KEY, base_url=url) as client:
            return sync_rate(lambda: client.check("chat"), settings.seconds)

    return interleaved(settings.rounds, {"sdk": sdk, "raw": raw}, max)


def async_loopback(url: str, settings: Settings) -> dict[str, float]:
    import aiohttp

    check_url = url + "/api/v1/tools/check"

    async def raw_httpx() -> float:
        async with httpx.AsyncClient() as http:

            async def call() -> Quote:
                answer = await http.post(check_url, content=CHECK_BODY, headers=HEADERS)
                return Quote.model_validate_json(answer.content)

            return await async_rate(call, settings.seconds)

    async def raw_aiohttp() -> float:
        async with aiohttp.ClientSession() as session:

            async def call() -> Quote:
                async with session.post(check_url, data=CHECK_BODY, headers=HEADERS) as answer:
                    return Quote.model_validate_json(await answer.read())

            return await async_rate(call, settings.seconds)

    async def sdk(transport: Any) -> float:
        async with AsyncAmaiClient(api_key=KEY, base_url=url, transport=transport) as client:
            return await async_rate(lambda: client.check("chat"), settings.seconds)

    sides: dict[str, Callable[[], float]] = {
        "sdk": lambda: asyncio.run(sdk("aiohttp")),
        "raw": lambda: asyncio.run(raw_httpx()),
        "sdk_httpx": lambda: asyncio.run(sdk("httpx")),
        "aiohttp": lambda: asyncio.run(raw_aiohttp()),
    }
    return interleaved(settings.rounds, sides, max)


def async_metered_loopback(url: str, settings: Settings) -> dict[str, float]:
    """`metered()` blocks per second, `CONCURRENCY` at a time, against raw aiohttp.

    The SDK's block has admission on (the default) and no journal; the raw block is the
    two calls it makes: a check whose quote allows the work, then a spend with a fresh
    reference, each body parsed into its model.
    """
    import aiohttp

    check_url, spend_url = url + "/api/v1/tools/check", url + "/api/v1/tools/spend"
    jobs = iter(range(10**9))

    async def raw() -> float:
        async with aiohttp.ClientSession() as session:

            async def block() -> Charge:
                async with session.post(check_url, data=CHECK_BODY, headers=HEADERS) as answer:
                    quote = Quote.model_validate_json(await answer.read())
                assert quote.allowed
                reference = f"job-{next(jobs)}"
                body = f'{{"tool":"chat","units":1,"reference":"{reference}"}}'
                async with session.post(spend_url, data=body, headers=HEADERS) as answer:
                    content = await answer.read()
                return Charge.model_validate_json(content, context={"reference": reference})

            return await async_rate(block, settings.seconds)

    async def sdk() -> float:
        async with AsyncAmaiClient(api_key=KEY, base_url=url, transport="aiohttp") as client:

            async def block() -> None:
                async with client.metered("chat"):
                    pass

            return await async_rate(block, settings.seconds)

    sides: dict[str, Callable[[], float]] = {
        "sdk": lambda: asyncio.run(sdk()),
        "raw": lambda: asyncio.run(raw()),
    }
    return interleaved(settings.rounds, sides, max)


def server_name(parser: str) -> str:
    return f"uvicorn {version('uvicorn')} ({parser}), one process"


def loopback_rows(settings: Settings) -> tuple[list[Row], str]:
    with loopback_server() as (url, parser):
        sync = sync_loopback(url, settings)
        rates = async_loopback(url, settings)
        blocks = async_metered_loopback(url, settings)
    server = server_name(parser)
    async_figure = f"async `check()` at concurrency {CONCURRENCY} over loopback"
    rows = [
        at_least(
            "sequential sync `check()` over loopback",
            f"{sync['sdk']:,.0f} calls/s",
            f"{sync['raw']:,.0f} calls/s: raw `httpx.Client`",
            sync["sdk"] / sync["raw"],
            0.90,
        ),
        at_least(
            f'{async_figure}, `transport="aiohttp"`',
            f"{rates['sdk']:,.0f} calls/s",
            f"{rates['raw']:,.0f} calls/s: raw `httpx.AsyncClient`",
            rates["sdk"] / rates["raw"],
            2.5,
        ),
        at_least(
            f'{async_figure}, `transport="aiohttp"`, against the ceiling',
            f"{rates['sdk']:,.0f} calls/s",
            f"{rates['aiohttp']:,.0f} calls/s: raw `aiohttp`",
            rates["sdk"] / rates["aiohttp"],
            0.65,
        ),
        at_least(
            f"async `metered()` blocks at concurrency {CONCURRENCY} over loopback, "
            '`transport="aiohttp"`, against the ceiling',
            f"{blocks['sdk']:,.0f} blocks/s",
            f"{blocks['raw']:,.0f} blocks/s: two raw `aiohttp` calls per block",
            blocks["sdk"] / blocks["raw"],
            0.60,
        ),
        reference(
            f"{async_figure}, default transport (httpx's own)",
            f"{rates['sdk_httpx']:,.0f} calls/s",
            f"{rates['raw']:,.0f} calls/s: raw `httpx.AsyncClient`",
            rates["sdk_httpx"] / rates["raw"],
        ),
    ]
    return rows, server


# --- the spend journal ----------------------------------------------------------------------

POSTGRES_VARIABLE = "AMAI_BENCH_POSTGRES"
POSTGRES_SCRIPT = HERE.parent / "scripts" / "postgres"
POSTGRES_TIMEOUT_S = 120
# Connections the PostgreSQL journal may open in the concurrency row: the SDK's default.
POSTGRES_CONNECTIONS = 4
JOURNALED_BLOCK = 1.50  # at most this many times the block and one bare durable write
JOURNALED_RATE = 0.70  # at least this share of the unjournaled blocks per second
# The reference rows' figure, after the backend's name.
TOGETHER = "journaled `metered()` block, against the block and the bare write run together"


class NotRun(Exception):
    """What a row needs is missing; the message says what, and how to provide it."""


@dataclass(frozen=True)
class Database:
    """The PostgreSQL database made for this run."""

    conninfo: str  # holds the password: never printed
    description: str  # the server's version and where it runs


def open_postgres(cleanups: ExitStack) -> Database:
    """A new database for this run, on `$AMAI_BENCH_POSTGRES` or a throwaway server.

    What is started or made here is stopped or dropped when `cleanups` closes, whatever
    happens in between.

    Raises:
        NotRun: psycopg or PostgreSQL is missing, or the server cannot be used.
    """
    try:
        import psycopg
        from psycopg import sql
    except ImportError:
        raise NotRun("psycopg is not installed: pip install 'amaimedia[postgres]'") from None
    given = os.environ.get(POSTGRES_VARIABLE, "").strip()
    if given:
        server, where = given, f"the server at `{POSTGRES_VARIABLE}`"
    else:
        server = start_postgres(cleanups)
        where = "a throwaway cluster of `scripts/postgres` (fsync on), over loopback"
    name = f"amai_bench_{os.getpid()}_{secrets.token_hex(4)}"
    try:
        with psycopg.connect(server, autocommit=True, connect_timeout=10) as admin:
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
            cleanups.callback(drop_database, server, name)
            row = admin.execute("SHOW server_version").fetchone()
    except psycopg.Error as error:
        raise NotRun(f"cannot make a database on {where}: {error}") from None
    server_version = "?" if row is None else str(row[0]).split()[0]
    conninfo = psycopg.conninfo.make_conninfo(server, dbname=name)
    return Database(conninfo, f"PostgreSQL {server_version}, {where}")


def start_postgres(cleanups: ExitStack) -> str:
    """Start a throwaway server with `scripts/postgres`; its connection string."""
    script = str(POSTGRES_SCRIPT)
    if subprocess.run([script, "bindir"], capture_output=True, check=False).returncode != 0:
        raise NotRun(
            f"PostgreSQL is not installed and {POSTGRES_VARIABLE} is not set: install it "
            f"(apt-get install postgresql) or set {POSTGRES_VARIABLE} to a server's URL"
        )
    # Directly in /tmp: as root, the server runs as `postgres`, which must reach it.
    directory = tempfile.mkdtemp(prefix="amai-bench-postgres-", dir="/tmp")
    cleanups.callback(stop_postgres, directory)
    started = subprocess.run(
        [script, "start", directory],
        capture_output=True,
        text=True,
        timeout=POSTGRES_TIMEOUT_S,
        check=False,
    )
    if started.returncode != 0:
        reason = started.stderr.strip().removeprefix("scripts/postgres: ")
        raise NotRun(f"the throwaway PostgreSQL server did not start: {reason}")
    return started.stdout.strip()


def stop_postgres(directory: str) -> None:
    stopped = subprocess.run(
        [str(POSTGRES_SCRIPT), "stop", directory],
        capture_output=True,
        text=True,
        timeout=POSTGRES_TIMEOUT_S,
        check=False,
    )
    if stopped.returncode != 0:
        print(f"could not stop the PostgreSQL server in {directory}:", file=sys.stderr)
        print(stopped.stderr.strip(), file=sys.stderr)


def drop_database(server: str, name: str) -> None:
    import psycopg
    from psycopg import sql

    try:
        with psycopg.connect(server, autocommit=True, connect_timeout=10) as admin:
            drop = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")
            admin.execute(drop.format(sql.Identifier(name)))
    except psycopg.Error as error:
        print(f"could not drop the database {name}: {error}", file=sys.stderr)


def bare_sqlite(path: Path) -> Callable[[], object]:
    """One durable SQLite commit: an INSERT in autocommit, WAL mode, synchronous=FULL."""
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("CREATE TABLE scratch (id INTEGER PRIMARY KEY, note TEXT NOT NULL)")
    notes = itertools.count()
    return lambda: db.execute("INSERT INTO scratch (note) VALUES (?)", (f"job-{next(notes)}",))


def bare_postgres(cleanups: ExitStack, conninfo: str) -> Callable[[], object]:
    """One `INSERT` round trip, committed (autocommit) on a connection kept open."""
    import psycopg

    db = cleanups.enter_context(psycopg.connect(conninfo, autocommit=True))
    db.execute("CREATE TABLE scratch (id SERIAL PRIMARY KEY, note TEXT NOT NULL)")
    notes = itertools.count()
    return lambda: db.execute("INSERT INTO scratch (note) VALUES (%s)", (f"job-{next(notes)}",))


def postgres_journal(
    cleanups: ExitStack, database: Database, max_connections: int = POSTGRES_CONNECTIONS
) -> SpendJournal:
    from amaimedia import PostgresSpendJournal

    journal = PostgresSpendJournal(database.conninfo, max_connections=max_connections)
    cleanups.callback(journal.close)
    return journal


def journal_block_rows(
    settings: Settings, directory: Path, database: Database | NotRun
) -> list[Row]:
    """Journaled `metered()` blocks in process, against the block and one bare write.

    The judged baseline adds the unjournaled block and the bare write, each timed on its
    own. The reference rows time the two one after the other in one loop instead: on some
    machines (virtual ones) a write that follows other work costs more than the same write
    repeated back to back, and a journaled block's writes always follow other work.
    """
    transport = mock_transport()
    cleanups = ExitStack()

    def block(journal: Path | SpendJournal | None) -> Callable[[], None]:
        client = AmaiClient(
            api_key=KEY, http_client=httpx.Client(transport=transport), spend_journal=journal
        )
        cleanups.callback(client.close)

        def metered() -> None:
            with client.metered("chat"):
                pass

        return metered

    def timed(function: Callable[[], object]) -> Callable[[], float]:
        return lambda: per_call(function, settings.calls // 4)

    def then(first: Callable[[], object], second: Callable[[], object]) -> Callable[[], None]:
        def both() -> None:
            first()
            second()

        return both

    with cleanups:
        plain = block(None)
        commit = bare_sqlite(directory / "bare.sqlite3")
        sides = {
            "plain": timed(plain),
            "sqlite": timed(block(directory / "blocks.sqlite3")),
            "sqlite_write": timed(commit),
            "sqlite_together": timed(then(plain, commit)),
        }
        if isinstance(database, Database):
            insert = bare_postgres(cleanups, database.conninfo)
            sides["postgres"] = timed(block(postgres_journal(cleanups, database)))
            sides["postgres_write"] = timed(insert)
            sides["postgres_together"] = timed(then(plain, insert))
        found = interleaved(settings.rounds, sides, min)
    rows = block_rows(found, "sqlite", "SQLite", "one bare durable SQLite commit", "same disk")
    figure = (
        "PostgreSQL-journaled `metered()` block, `httpx.MockTransport`, database over loopback"
    )
    if isinstance(database, NotRun):
        rows.append(not_run(figure, f"≤ {JOURNALED_BLOCK:.2f}{X}", str(database)))
        rows.append(not_run(f"PostgreSQL-{TOGETHER}", "", str(database)))
    else:
        write = "one bare `INSERT` round trip"
        rows += block_rows(found, "postgres", "PostgreSQL", write, "same server")
    return rows


def block_rows(found: dict[str, float], key: str, name: str, write: str, where: str) -> list[Row]:
    """The judged row of one backend's journaled block, and its reference row."""
    figure = f"{name}-journaled `metered()` block"
    suffix = ", database over loopback" if key == "postgres" else ""
    journaled, plain = found[key], found["plain"]
    alone, together = found[f"{key}_write"], found[f"{key}_together"]
    baseline = plain + alone
    return [
        at_most(
            f"{figure}, `httpx.MockTransport`{suffix}",
            f"{journaled:.0f} µs",
            f"{baseline:.0f} µs: the unjournaled block ({plain:.0f} µs) + {write} "
            f"({alone:.0f} µs), {where}",
            journaled / baseline,
            JOURNALED_BLOCK,
        ),
        reference(
            f"{name}-{TOGETHER}",
            f"{journaled:.0f} µs",
            f"{together:.0f} µs: an unjournaled block then {write}, in one loop",
            journaled / together,
        ),
    ]


def journal_rate_rows(
    settings: Settings, url: str, directory: Path, database: Database | NotRun
) -> list[Row]:
    """Journaled blocks per second, `CONCURRENCY` at a time, against unjournaled ones."""
    from amaimedia import SQLiteSpendJournal

    async def rate(journal: SpendJournal | None) -> float:
        async with AsyncAmaiClient(
            api_key=KEY, base_url=url, transport="aiohttp", spend_journal=journal
        ) as client:

            async def block() -> None:
                async with client.metered("chat"):
                    pass

            return await async_rate(block, settings.seconds)

    def side(journal: SpendJournal | None) -> Callable[[], float]:
        return lambda: asyncio.run(rate(journal))

    with ExitStack() as cleanups:
        sides = {
            "plain": side(None),
            "sqlite": side(SQLiteSpendJournal(directory / "concurrent.sqlite3")),
        }
        if isinstance(database, Database):
            sides["postgres"] = side(postgres_journal(cleanups, database))
        found = interleaved(settings.rounds, sides, max)
    plain = f"{found['plain']:,.0f} blocks/s: unjournaled"
    figure = (
        f"async journaled `metered()` blocks at concurrency {CONCURRENCY} over loopback, "
        '`transport="aiohttp"`'
    )
    target = f"≥ {JOURNALED_RATE:.2f}{X}"
    postgres = f"{figure}, PostgreSQL journal (`max_connections={POSTGRES_CONNECTIONS}`)"
    rows = []
    if isinstance(database, NotRun):
        rows.append(not_run(postgres, target, str(database)))
    else:
        rows.append(
            at_least(
                postgres,
                f"{found['postgres']:,.0f} blocks/s",
                plain,
                found["postgres"] / found["plain"],
                JOURNALED_RATE,
            )
        )
    rows.append(
        reference(
            f"{figure}, SQLite journal",
            f"{found['sqlite']:,.0f} blocks/s",
            plain,
            found["sqlite"] / found["plain"],
        )
    )
    return rows


def journal_rows(settings: Settings) -> tuple[list[Row], str, list[str]]:
    """The spend journal's rows, the loopback server's name, and lines on the storage."""
    with ExitStack() as cleanups:
        try:
            database: Database | NotRun = open_postgres(cleanups)
        except NotRun as reason:
            database = reason
        directory = Path(
            cleanups.enter_context(
                tempfile.TemporaryDirectory(
                    prefix="amai-bench-journal-", ignore_cleanup_errors=True
                )
            )
        )
        rows = journal_block_rows(settings, directory, database)
        rows.append(fleet_book_row(settings, database))
        with loopback_server() as (url, parser):
            rows += journal_rate_rows(settings, url, directory, database)
        storage = [
            f"- SQLite {sqlite3.sqlite_version}: the journals and the bare commit's file in "
            f"{directory.parent}, on {filesystem(directory)}"
        ]
        if isinstance(database, Database):
            storage.append(f"- {database.description}; psycopg {version('psycopg')}")
    return rows, server_name(parser), storage


def filesystem(path: Path) -> str:
    """The device and type of the filesystem holding `path`, from /proc/mounts."""
    best, found = "", "an unknown filesystem"
    try:
        mounts = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return found
    for line in mounts:
        fields = line.split()
        if len(fields) < 3:
            continue
        device, point, kind = fields[:3]
        inside = str(path) == point or str(path).startswith(point.rstrip("/") + "/")
        if inside and len(point) > len(best):
            best, found = point, f"{device} ({kind})"
    return found


# --- import time ------------------------------------------------------------------------------

IMPORT_TIMER = "import time; t = time.perf_counter(); {}; print(time.perf_counter() - t)"
# `import amaimedia` alone loads only the version: the SDK loads with its first name.
SDK_IMPORT = "from amaimedia import AmaiClient"
RAW_IMPORT = "import httpx, pydantic, tenacity"


def import_seconds(statement: str) -> float:
    """Seconds that an import statement takes in a fresh interpreter."""
    out = subprocess.run(
        [sys.executable, "-c", IMPORT_TIMER.format(statement)],
        capture_output=True,
        text=True,
        check=True,
        cwd=HERE,  # the installed package, as users import it
    ).stdout
    return float(out)


def import_row(settings: Settings) -> Row:
    times: dict[str, list[float]] = {"sdk": [], "raw": []}
    for index in range(settings.imports):
        order = ["sdk", "raw"] if index % 2 == 0 else ["raw", "sdk"]
        for side in order:
            times[side].append(import_seconds(SDK_IMPORT if side == "sdk" else RAW_IMPORT))
    sdk, raw = statistics.median(times["sdk"]), statistics.median(times["raw"])
    return at_most(
        f"`{SDK_IMPORT}`, fresh interpreter (median)",
        f"{sdk * 1000:.0f} ms",
        f"{raw * 1000:.0f} ms: `{RAW_IMPORT}`",
        sdk / raw,
        1.05,
    )


# --- memory -------------------------------------------------------------------------------------


def memory_child(first: int, second: int) -> None:
    """In a fresh interpreter: traced memory after `first` and after `second` calls."""
    import gc
    import tracemalloc

    client = AmaiClient(api_key=KEY, http_client=httpx.Client(transport=mock_transport()))
    tracemalloc.start()
    readings = []
    done = 0
    for target in (first, second):
        # A metered block is two calls: a check and a spend.
        while done < target:
            with client.metered("chat"):
                pass
            done += 2
        gc.collect()
        readings.append(tracemalloc.get_traced_memory()[0])
    print(json.dumps(readings))


def memory_row(settings: Settings) -> Row:
    first, second = settings.memory
    out = subprocess.run(
        [sys.executable, __file__, "--memory-child", str(first), str(second)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    before, after = json.loads(out)
    growth = after - before
    return Row(
        f"memory growth on one client, {first:,} to {second:,} calls (`metered()` blocks)",
        f"{growth / 1024:+,.1f} KiB",
        f"{before / 1024:,.0f} KiB traced after {first:,} calls",
        None,
        "growth < 1 MiB",
        growth < 1024 * 1024,
    )


# --- the table -----------------------------------------------------------------------------------


def load_average() -> str:
    """The 1-minute load average, where the system keeps one."""
    try:
        return f"{os.getloadavg()[0]:.1f}"
    except (AttributeError, OSError):
        return "unknown"


def machine(server: str, storage: list[str], load: tuple[str, str]) -> list[str]:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    libraries = ", ".join(
        f"{name} {version(name)}"
        for name in ("amaimedia", "httpx", "httpcore", "pydantic", "tenacity", "aiohttp")
    )
    return [
        f"- Machine: {cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}",
        f"- Python {platform.python_version()} ({platform.python_implementation()}); {libraries}",
        f"- Loopback server: {server}",
        *storage,
        f"- Load average (1 minute): {load[0]} at the start, {load[1]} at the end",
    ]


def table(rows: list[Row], judged: bool) -> list[str]:
    header = ["Figure", "SDK", "Baseline, same run", "Ratio", "Target", "Result"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row.cells(judged)) + " |" for row in rows]
    return lines


GROUPS = ("in-process", "loopback", "import", "memory", "journal")


def terminated(signum: int, frame: FrameType | None) -> None:
    """SIGTERM as an exit: what the run started (a PostgreSQL server) is cleaned up."""
    del frame
    sys.exit(128 + signum)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="every row once, tiny counts")
    parser.add_argument("--rounds", type=int, default=7, help="interleaved rounds per figure")
    parser.add_argument(
        "--only",
        choices=GROUPS,
        action="append",
        help="run only these groups of rows (repeatable); all by default",
    )
    parser.add_argument("--memory-child", nargs=2, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.memory_child:
        memory_child(*args.memory_child)
        return 0
    # Loopback traffic must not go through a proxy from the environment, on either side.
    for name in list(os.environ):
        if name.lower() in ("http_proxy", "https_proxy", "all_proxy"):
            del os.environ[name]
    signal.signal(signal.SIGTERM, terminated)
    settings = Settings.smoke() if args.smoke else Settings.full(args.rounds)
    groups = args.only or GROUPS
    started, load = time.perf_counter(), load_average()
    rows: list[Row] = []
    server = "not run"
    storage: list[str] = []
    if "in-process" in groups:
        rows += in_process_rows(settings)
        rows.append(telemetry_row(settings))
        rows.append(admission_row(settings))
    if "loopback" in groups:
        loopback, server = loopback_rows(settings)
        rows += loopback
    if "import" in groups:
        rows.append(import_row(settings))
    if "memory" in groups:
        rows.append(memory_row(settings))
    if "journal" in groups:
        journal, server, storage = journal_rows(settings)
        rows += journal
    judged = not args.smoke
    print("\n".join(table(rows, judged)))
    print()
    print("\n".join(machine(server, storage, (load, load_average()))))
    print(f"- {settings.rounds} rounds, best of each side; {time.perf_counter() - started:.0f} s")
    # A row that did not run fails a smoke run too: the smoke run exists to prove they run.
    missing = [row.figure for row in rows if not row.ran]
    missed = [row.figure for row in rows if row.ran and row.met is False]
    if missing:
        print(f"\nnot run: {'; '.join(missing)}", file=sys.stderr)
    if judged and missed:
        print(f"\nmissed: {'; '.join(missed)}", file=sys.stderr)
    return 1 if missing or (judged and missed) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
