"""The dependency floors allow no release with a known hole, and scripts/test-lowest proves each.

h11 below 0.16 accepts a chunk of a chunked body that does not end in CRLF, a leniency that
allows request smuggling (CVE-2025-43859). httpx's default transport (httpcore) speaks HTTP/1.1
through h11, so the SDK declares a floor on it, although it never imports it.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import Version

if sys.version_info >= (3, 11):
    import tomllib
else:  # coverage[toml] brings tomli, the same parser, on 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[2]


def runtime_requirements() -> dict[str, Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    requirements = [Requirement(line) for line in project["dependencies"]]
    return {requirement.name: requirement for requirement in requirements}


def lowest_pins() -> dict[str, Version]:
    """The `name==version` pins of the LOWEST array in scripts/test-lowest."""
    script = (ROOT / "scripts" / "test-lowest").read_text(encoding="utf-8")
    [array] = re.findall(r"^LOWEST=\((.*?)\)$", script, flags=re.MULTILINE | re.DOTALL)
    pins = re.findall(r'"([A-Za-z0-9_.-]+)==([^"]+)"', array)
    assert pins, "scripts/test-lowest pins nothing"
    return {name: Version(version) for name, version in pins}


def floor(requirement: Requirement) -> Version:
    [lower] = [Version(s.version) for s in requirement.specifier if s.operator == ">="]
    return lower


def test_no_h11_open_to_request_smuggling_is_allowed() -> None:
    h11 = runtime_requirements()["h11"].specifier
    for vulnerable in ("0.13.0", "0.14.0", "0.15.0"):
        assert not h11.contains(vulnerable), vulnerable
    assert h11.contains("0.16.0")


def test_the_product_dependencies_stay_the_product_dependencies() -> None:
    # h11 is a floor on a transitive dependency, never imported: it has no upper bound,
    # so that it never holds back httpcore.
    requirements = runtime_requirements()
    assert set(requirements) == {"httpx", "pydantic", "tenacity", "h11"}
    assert [str(s) for s in requirements["h11"].specifier] == [">=0.16"]


def test_scripts_test_lowest_installs_every_floor() -> None:
    pins = lowest_pins()
    for name, requirement in runtime_requirements().items():
        assert pins.get(name) == floor(requirement), name


def test_the_lowest_httpcore_is_the_first_that_takes_the_h11_floor() -> None:
    # httpcore 1.0.8 and older require h11 < 0.15; 1.0.9 is the first that accepts 0.16.
    assert lowest_pins()["httpcore"] == Version("1.0.9")
