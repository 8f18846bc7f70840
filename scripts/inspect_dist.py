"""Check what `python -m build` produced before it could reach PyPI.

    python scripts/inspect_dist.py dist

Fails (exit 1, one line per problem) when the wheel lacks `py.typed`, ships anything from
`tests/`, has incomplete metadata or no LICENSE, or carries a version other than the one
in `amaimedia/_version.py`; or when the sdist leaves out what a rebuild needs.
"""

from __future__ import annotations

import ast
import re
import sys
import tarfile
import zipfile
from email.message import Message
from email.parser import HeaderParser
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CLASSIFIERS_WANTED = ("Typing :: Typed", "Programming Language :: Python :: 3.10")
EXTRAS_WANTED = ("aiohttp", "postgres", "dev")
URLS_WANTED = ("Homepage", "Documentation", "Changelog", "Source", "Issues")
RELATIVE_LINK = re.compile(r"\]\((?!https?://|#)([^)]+)\)")


def source_version() -> str:
    tree = ast.parse((ROOT / "amaimedia" / "_version.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "__version__":
            value = node.value
            assert isinstance(value, ast.Constant)
            return str(value.value)
    raise SystemExit("amaimedia/_version.py has no __version__")


def check_metadata(meta: Message, version: str) -> list[str]:
    problems = []
    if meta["Name"] != "amaimedia":
        problems.append(f"Name is {meta['Name']!r}")
    if meta["Version"] != version:
        problems.append(f"Version {meta['Version']} != amaimedia/_version.py {version}")
    for field in ("Summary", "Requires-Python", "License-Expression", "Author"):
        if not meta[field]:
            problems.append(f"metadata lacks {field}")
    if meta["Description-Content-Type"] != "text/markdown":
        problems.append("the description is not the README as Markdown")
    description = str(meta.get_payload() or "")
    if "quote" not in description:
        problems.append("the description body is empty or not the README")
    # PyPI shows the README away from the repository, where a relative link leads nowhere.
    problems += [
        f"relative link in the README: {link}" for link in RELATIVE_LINK.findall(description)
    ]
    classifiers = meta.get_all("Classifier") or []
    problems += [f"classifier missing: {c}" for c in CLASSIFIERS_WANTED if c not in classifiers]
    extras = meta.get_all("Provides-Extra") or []
    problems += [f"extra missing: {e}" for e in EXTRAS_WANTED if e not in extras]
    urls = [u.split(",")[0] for u in meta.get_all("Project-URL") or []]
    problems += [f"project URL missing: {u}" for u in URLS_WANTED if u not in urls]
    requires = " ".join(meta.get_all("Requires-Dist") or [])
    problems += [
        f"dependency missing: {d}" for d in ("httpx", "pydantic", "tenacity") if d not in requires
    ]
    return problems


def check_wheel(path: Path, version: str) -> list[str]:
    with zipfile.ZipFile(path) as wheel:
        names = wheel.namelist()
        info = next(n for n in names if n.endswith(".dist-info/METADATA"))
        meta = HeaderParser().parsestr(wheel.read(info).decode())
        entry_points = wheel.read(info.replace("METADATA", "entry_points.txt")).decode()
    problems = check_metadata(meta, version)
    if "amaimedia/py.typed" not in names:
        problems.append("py.typed is missing: type checkers would ignore the annotations")
    problems += [f"test file shipped: {n}" for n in names if n.startswith("tests/")]
    top = {n.split("/")[0] for n in names}
    problems += [
        f"unexpected top-level entry: {t}"
        for t in top
        if t != "amaimedia" and not t.endswith(".dist-info")
    ]
    for needed in ("amaimedia/testing/pytest_plugin.py", "amaimedia/_client.py"):
        if needed not in names:
            problems.append(f"{needed} is missing")
    if not any(n.endswith(".dist-info/licenses/LICENSE") for n in names):
        problems.append("the wheel does not ship the LICENSE")
    if "amaimedia = amaimedia._cli:main" not in entry_points:
        problems.append("the `amaimedia` command is not declared")
    if "amaimedia = amaimedia.testing.pytest_plugin" not in entry_points:
        problems.append("the pytest plugin is not declared")
    print(f"{path.name}: {len(names)} files, version {meta['Version']}")
    return problems


def check_sdist(path: Path) -> list[str]:
    with tarfile.open(path) as sdist:
        names = {n.split("/", 1)[1] for n in sdist.getnames() if "/" in n}
    print(f"{path.name}: {len(names)} files")
    wanted = (
        "pyproject.toml",
        "README.md",
        "CHANGELOG.md",
        "LICENSE",
        "amaimedia/py.typed",
        "tests/conftest.py",
    )
    problems = [f"sdist lacks {w}" for w in wanted if w not in names]
    problems += [f"sdist ships {n}" for n in names if n.startswith((".venv", ".git/", "dist/"))]
    return problems


def main() -> int:
    dist = Path(sys.argv[1] if len(sys.argv) > 1 else "dist")
    version = source_version()
    wheels = sorted(dist.glob("amaimedia-*.whl"))
    sdists = sorted(dist.glob("amaimedia-*.tar.gz"))
    if len(wheels) != 1 or len(sdists) != 1:
        print(f"expected one wheel and one sdist in {dist}, found {wheels + sdists}")
        return 1
    problems = check_wheel(wheels[0], version) + check_sdist(sdists[0])
    for problem in problems:
        print(f"inspect_dist: {problem}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
