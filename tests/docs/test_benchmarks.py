"""`benchmarks/run.py --smoke`: every row of the performance table still runs.

Timings are never asserted here: a test machine's speed proves nothing about the SDK's.
The full run, with its targets, is `python benchmarks/run.py` (docs/performance.md).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

RUN = Path(__file__).resolve().parents[2] / "benchmarks" / "run.py"

ROWS = [
    "`check()` per call",
    "`metered()` block (check + spend)",
    "sequential sync `check()` over loopback",
    'async `check()` at concurrency 32 over loopback, `transport="aiohttp"` |',
    "against the ceiling",
    "default transport (httpx's own)",
    "`import amaimedia`",
    "memory growth on one client",
]


@pytest.mark.slow
def test_smoke_run_prints_every_row() -> None:
    done = subprocess.run(
        [sys.executable, str(RUN), "--smoke"], capture_output=True, text=True, timeout=120
    )
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
