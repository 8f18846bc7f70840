"""Every example runs, offline, as a user would run it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = sorted((Path(__file__).parent.parent / "examples").glob("*.py"))


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda path: path.name)
def test_example_runs(path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(path)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip(), "an example should show what it did"


def test_quickstart_does_the_round_trip() -> None:
    path = next(path for path in EXAMPLES if path.name == "quickstart.py")
    out = subprocess.run(
        [sys.executable, str(path)], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    assert "1. check" in out
    assert "3. spend" in out
    assert "InsufficientCreditsError: 402 insufficient_credits" in out
    assert "demo_not_a_real_key" not in out  # even a fake key is never printed in full
