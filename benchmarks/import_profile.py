"""Where the time of loading the SDK goes, beyond `import httpx, pydantic, tenacity`.

    python benchmarks/import_profile.py [--runs N]

First the wall time of a few import statements, each the median of fresh interpreters,
so that the steps between them show: the baseline, pydantic's model machinery (which
`import pydantic` alone does not load), one model with one field, and the whole SDK, which
loads with the first name used from the package (`import amaimedia` alone loads only its
version). Then `python -X importtime` of that, keeping only the modules that the
baseline does not load, grouped by who brings them in, with the heaviest listed. Self
times from `-X importtime` include its own overhead: read them as shares, and the
medians above as the time.
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
BASELINE = "import httpx, pydantic, tenacity"
SDK = "from amaimedia import AmaiClient"
STEPS = [
    ("baseline", BASELINE),
    ("+ pydantic.BaseModel", f"{BASELINE}; from pydantic import BaseModel"),
    # Any model with a field, even one whose schema is built later, loads pydantic.fields,
    # pydantic.types and annotated_types: the floor for a package with models at import.
    (
        "+ one deferred model",
        f"{BASELINE}; from pydantic import BaseModel; "
        "exec('class M(BaseModel, defer_build=True): x: int')",
    ),
    ("first use of amaimedia", SDK),
]
TIMER = "import time; t = time.perf_counter(); {}; print(time.perf_counter() - t)"
LINE = re.compile(r"import time:\s+(\d+) \|\s+\d+ \|(\s*)(\S+)")


def wall_ms(statement: str) -> float:
    out = subprocess.run(
        [sys.executable, "-c", TIMER.format(statement)],
        capture_output=True,
        text=True,
        check=True,
        cwd=HERE,
    ).stdout
    return float(out) * 1000


def self_times(statement: str) -> dict[str, int]:
    """Microseconds of each module's own import, from `-X importtime`."""
    err = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", statement],
        capture_output=True,
        text=True,
        check=True,
        cwd=HERE,
    ).stderr
    return {m.group(3): int(m.group(1)) for m in map(LINE.match, err.splitlines()) if m}


def group(module: str) -> str:
    top = module.split(".")[0]
    if module == "amaimedia._models" or top in ("pydantic", "annotated_types"):
        # A model module's own time is mostly pydantic building its models.
        return "pydantic: its model machinery, and building the SDK's models"
    if top == "amaimedia":
        return "the SDK's other modules"
    if top in ("importlib", "zipfile", "csv", "_csv", "sysconfig", "email") or (
        top.startswith("_sysconfigdata")
    ):
        return "pydantic's plugin lookup (package metadata)"
    return "other standard library"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=11, help="fresh interpreters per step")
    runs = parser.parse_args().runs

    times: dict[str, list[float]] = defaultdict(list)
    for _ in range(runs):
        for name, statement in STEPS:
            times[name].append(wall_ms(statement))
    base = statistics.median(times["baseline"])
    print(f"Wall time, median of {runs} fresh interpreters:")
    for name, _ in STEPS:
        median = statistics.median(times[name])
        print(f"  {name:22} {median:6.1f} ms  {median / base:.2f}x the baseline")

    sdk = self_times(SDK)
    baseline = self_times(BASELINE)
    extra = {module: us for module, us in sdk.items() if module not in baseline}
    total = sum(extra.values())
    print(f"\nModules loaded beyond the baseline: {len(extra)}, {total / 1000:.1f} ms self time")
    groups: dict[str, int] = defaultdict(int)
    for module, us in extra.items():
        groups[group(module)] += us
    for name, us in sorted(groups.items(), key=lambda item: -item[1]):
        print(f"  {us / total:5.0%}  {us / 1000:5.1f} ms  {name}")
    print("\nHeaviest:")
    for module, us in sorted(extra.items(), key=lambda item: -item[1])[:12]:
        print(f"  {us / 1000:5.1f} ms  {module}")


if __name__ == "__main__":
    main()
