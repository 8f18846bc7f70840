"""The version lives in one place, and the changelog and packaging agree with it."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import amaimedia

if sys.version_info >= (3, 11):
    import tomllib
else:  # coverage[toml] brings tomli, the same parser, on 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[2]


def changelog_sections() -> list[str]:
    text = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    return re.findall(r"^## \[([^\]]+)\]", text, flags=re.MULTILINE)


def test_the_changelog_opens_with_unreleased_then_the_current_version() -> None:
    sections = changelog_sections()
    assert sections[0] == "Unreleased"
    released = sections[1:]
    assert released, "CHANGELOG.md has no released version"
    assert released[0] == amaimedia.__version__


def test_every_released_section_is_dated_and_linked() -> None:
    text = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    for version in changelog_sections()[1:]:
        assert re.search(rf"^## \[{re.escape(version)}\] - \d{{4}}-\d{{2}}-\d{{2}}$", text, re.M)
        assert re.search(rf"^\[{re.escape(version)}\]: https://", text, re.M)


def test_the_build_reads_the_version_from_the_package() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert "version" not in project["project"]
    assert project["project"]["dynamic"] == ["version"]
    assert project["tool"]["hatch"]["version"]["path"] == "amaimedia/_version.py"


def test_the_version_is_a_plain_release_number() -> None:
    assert re.fullmatch(r"\d+\.\d+\.\d+((a|b|rc)\d+)?", amaimedia.__version__)
