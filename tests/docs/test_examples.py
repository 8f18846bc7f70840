"""Every example runs, offline, as a user would run it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES_DIR = Path(__file__).resolve().parents[2] / "examples"
EXAMPLES = sorted(EXAMPLES_DIR.glob("*.py"))
SCRIPTS = [path for path in EXAMPLES if not path.name.startswith("test_")]
TEST_FILES = [path for path in EXAMPLES if path.name.startswith("test_")]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    # The user's environment, minus any real key: examples must run offline.
    env = {name: value for name, value in os.environ.items() if not name.startswith("AMAI_")}
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, timeout=120, check=False, env=env
    )


def test_the_examples_named_in_the_docs_exist() -> None:
    names = {path.name for path in EXAMPLES}
    assert {"quickstart.py", "async_batch.py", "own_reference.py", "test_my_app.py"} <= names


@pytest.mark.parametrize("path", SCRIPTS, ids=lambda path: path.name)
def test_example_runs(path: Path) -> None:
    result = run(str(path))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip(), "an example should show what it did"
    assert "Traceback" not in result.stderr


@pytest.mark.slow
@pytest.mark.parametrize("path", TEST_FILES, ids=lambda path: path.name)
def test_example_test_file_passes_under_pytest(path: Path) -> None:
    # Run from the examples directory, as a user would run their own suite: the
    # amai_fake fixture must come from the installed plugin, not from this repo's tests.
    result = run("-m", "pytest", "-q", "-p", "no:cacheprovider", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert " passed" in result.stdout
    assert "failed" not in result.stdout


def test_quickstart_does_the_round_trip_over_loopback() -> None:
    out = run(str(EXAMPLES_DIR / "quickstart.py")).stdout
    assert "offline AMAImedia server at http://127.0.0.1:" in out
    assert "1. check   dub x3: costs 120 tokens, allowed=True" in out
    assert "3. spend   charged 120 tokens, balance now 80" in out
    assert "4. replay  the same reference again: charged 120 as before, balance still 80" in out
    assert "InsufficientCreditsError: 402 insufficient_credits" in out
    assert "ledger    1 charge(s) recorded by the offline server, balance 80 of 200" in out
    assert "amai_live_" not in out  # not even the throwaway key is printed


def test_async_batch_charges_only_the_jobs_that_succeeded() -> None:
    out = run(str(EXAMPLES_DIR / "async_batch.py")).stdout
    assert "34 jobs succeeded and 6 failed, out of 40" in out
    assert "34 charges in the ledger" in out


def test_own_reference_charges_each_job_once_across_a_restart() -> None:
    out = run(str(EXAMPLES_DIR / "own_reference.py")).stdout
    assert "first run:  died after a43 was charged" in out
    assert "ledger has 3 charges" in out
    assert "ledger:     5 charges, one per job" in out
