"""Running `exit_clean.py` in a fresh interpreter, and checking what it charged."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from amaimedia.testing import FakeAmaiServer

from .faults import SEED, TIMEOUT, random_fault

__all__ = ["check_exit_run", "run_exit_script"]

EXIT_SCRIPT = Path(__file__).parent / "exit_clean.py"


def run_exit_script(
    fake: FakeAmaiServer, key: str, base_url: str, journal: Path, **env: str
) -> subprocess.CompletedProcess[str]:
    """Run the script with `-X dev -W error` against `fake`, faults queued for its first
    requests; `env` adds variables (such as `AMAI_LOG`)."""
    rng = random.Random(f"{SEED}-exit")
    for endpoint in ("check", "spend"):
        for _ in range(40):
            fake.fail_next(endpoint, **random_fault(rng).options)
    environment = {
        **os.environ,
        "AMAI_API_KEY": key,
        "AMAI_BASE_URL": base_url,
        "AMAI_TEST_JOURNAL": str(journal),
        "AMAI_TEST_TIMEOUT": str(TIMEOUT),
        **env,
    }
    return subprocess.run(
        [sys.executable, "-X", "dev", "-W", "error", str(EXIT_SCRIPT)],
        capture_output=True,
        text=True,
        env=environment,
        timeout=120,
        check=False,
    )


def check_exit_run(fake: FakeAmaiServer, key: str, stdout: str) -> dict[str, Any]:
    """Exactly-once over the script's blocks, once its failed spends are replayed here."""
    result: dict[str, Any] = json.loads(stdout.splitlines()[-1])
    fake.reset_faults()
    with fake.client(key) as client:
        for tool, units, reference in result["spend_failed"]:
            client.spend(tool, units, reference=reference)
    ledger = Counter(row.reference for row in fake.spends)
    wanted = set(result["charged"]) | {reference for _, _, reference in result["spend_failed"]}
    assert set(ledger) == wanted
    assert set(ledger.values()) == {1}
    assert not set(ledger) & set(result["not_charged"])
    assert set(result["pools_after_close"]) == {0}
    return result
