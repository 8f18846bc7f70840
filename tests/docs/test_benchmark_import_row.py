"""The import row of benchmarks/run.py times what loads the SDK, not the package's shell.

`import amaimedia` loads only the version (so that pytest's loading of the SDK's plugin
costs nothing); the clients, models and errors load with the first name used. A row that
timed `import amaimedia` would time almost nothing and meet its target for no reason.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

RUN = Path(__file__).resolve().parents[2] / "benchmarks" / "run.py"


def load_run(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    spec = importlib.util.spec_from_file_location("benchmark_run", RUN)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "benchmark_run", module)  # its dataclasses look it up
    spec.loader.exec_module(module)
    return module


def test_the_import_row_times_a_statement_that_loads_the_clients(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    run = load_run(monkeypatch)
    timed: list[str] = []

    def seconds(statement: str) -> float:
        timed.append(statement)
        return 1.0

    monkeypatch.setattr(run, "import_seconds", seconds)
    row = run.import_row(run.Settings.smoke())
    [sdk] = [statement for statement in timed if "amaimedia" in statement]
    probe = f"{sdk}\nimport sys\nassert 'amaimedia._client' in sys.modules\n"
    subprocess.run([sys.executable, "-c", probe], check=True)
    assert sdk in row.figure
