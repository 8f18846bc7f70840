"""`benchmarks/run.py --smoke`: every row of the performance table still runs.

Timings are never asserted here: a test machine's speed proves nothing about the SDK's.
The full run, with its targets, is `python benchmarks/run.py` (docs/performance.md).
The spend journal's rows run on the session's PostgreSQL server (`tests/postgres.py`),
given to the benchmark as `AMAI_BENCH_POSTGRES`, so that it starts no server of its own.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.postgres import PostgresServer, drop_database, fresh_database

RUN = Path(__file__).resolve().parents[2] / "benchmarks" / "run.py"

ROWS = [
    "`check()` per call, `httpx.MockTransport`",
    "`metered()` block (check + spend)",
    "`check()` per call, OpenTelemetry API installed, no SDK configured",
    "`metered()` block, admission on against off, `httpx.MockTransport`",
    "sequential sync `check()` over loopback",
    'async `check()` at concurrency 32 over loopback, `transport="aiohttp"` |',
    'async `check()` at concurrency 32 over loopback, `transport="aiohttp"`, against the ceiling',
    "async `metered()` blocks at concurrency 32 over loopback",
    "default transport (httpx's own)",
    "`from amaimedia import AmaiClient`",
    "memory growth on one client",
    "SQLite-journaled `metered()` block, `httpx.MockTransport` |",
    "SQLite-journaled `metered()` block, against the block and the bare write run together",
    "PostgreSQL-journaled `metered()` block, `httpx.MockTransport`, database over loopback",
    "PostgreSQL-journaled `metered()` block, against the block and the bare write run together",
    "PostgreSQL-journaled `metered()` block with the fleet's reservation book",
    'at concurrency 32 over loopback, `transport="aiohttp"`, PostgreSQL journal',
    'at concurrency 32 over loopback, `transport="aiohttp"`, SQLite journal',
]


@pytest.mark.slow
def test_smoke_run_prints_every_row(postgres_server: PostgresServer) -> None:
    database = fresh_database(postgres_server)
    try:
        done = subprocess.run(
            [sys.executable, str(RUN), "--smoke"],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "AMAI_BENCH_POSTGRES": database},
        )
    finally:
        drop_database(postgres_server, database)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    table = [line for line in lines if line.startswith("| ")]
    assert table[0].startswith("| Figure |")
    for row in ROWS:
        assert sum(row in line for line in table) == 1, row
    assert len(table) == 1 + len(ROWS)
    # Nothing is judged in a smoke run; rows with a target say so.
    assert all(line.endswith(("| (smoke) |", "| (reference) |")) for line in table[1:])
    assert any(line.startswith("- Machine: ") for line in lines)
    assert any(line.startswith("- Loopback server: uvicorn ") for line in lines)
    # The journal's rows ran on the server given, and its password was never printed.
    server = [line for line in lines if line.startswith("- PostgreSQL ")]
    assert len(server) == 1, server
    assert "the server at `AMAI_BENCH_POSTGRES`" in server[0]
    password = urlsplit(database).password
    assert not password or password not in done.stdout + done.stderr
