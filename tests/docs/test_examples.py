"""Every example runs, offline, as a user would run it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES_DIR = Path(__file__).resolve().parents[2] / "examples"
EXAMPLES = sorted(EXAMPLES_DIR.glob("*.py"))
# Examples that need a PostgreSQL database, given to them in DATABASE_URL.
NEEDS_DATABASE = {"outbox_worker.py"}
SCRIPTS = [
    path
    for path in EXAMPLES
    if not path.name.startswith("test_") and path.name not in NEEDS_DATABASE
]
TEST_FILES = [path for path in EXAMPLES if path.name.startswith("test_")]


def run(*args: str, **variables: str) -> subprocess.CompletedProcess[str]:
    # The user's environment, minus any real key: examples must run offline.
    env = {name: value for name, value in os.environ.items() if not name.startswith("AMAI_")}
    env.pop("DATABASE_URL", None)
    env.update(variables)
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, timeout=120, check=False, env=env
    )


def test_the_examples_named_in_the_docs_exist() -> None:
    names = {path.name for path in EXAMPLES}
    named = {"quickstart.py", "async_batch.py", "own_reference.py", "test_my_app.py"}
    assert named | NEEDS_DATABASE <= names


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


def test_the_outbox_worker_bills_each_saved_result_once(postgres_url: str) -> None:
    result = run(str(EXAMPLES_DIR / "outbox_worker.py"), DATABASE_URL=postgres_url)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "s2: failed (the audio of s2 is unreadable); nothing saved, nothing owed" in out
    assert "died after saving s3, before sending its spend" in out
    assert "replay: billed 1 spend(s) left owed by the last run" in out
    assert "results saved: s1, s3, s4, s5" in out
    assert "ledger: 4 charges, for s1, s3, s4, s5; 0 left owed" in out
    password = postgres_url.split("//", 1)[1].split("@", 1)[0].split(":", 1)[1]
    assert password not in out + result.stderr


def test_the_outbox_worker_says_what_it_needs_without_a_database() -> None:
    result = run(str(EXAMPLES_DIR / "outbox_worker.py"))
    assert result.returncode == 2
    assert "set DATABASE_URL to a PostgreSQL database" in result.stderr
