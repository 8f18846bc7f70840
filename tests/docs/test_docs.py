"""Every ```python block of the docs and the README runs, as a reader would run it.

The blocks of one page run in order in one namespace, like cells of a notebook: a later
block may use the names an earlier one defined. `AMAI_API_KEY` and `AMAI_BASE_URL` hold
a funded key on an offline `FakeAmaiServer` served over loopback HTTP, the working
directory is empty, and a block may use top-level `await` (all the awaits of one page
share one event loop, as in a notebook).

A line just above a block can say more about it:

- `<!-- docs: production -->`: it needs the real API; skipped, visibly (`pytest -ra`).
- `<!-- docs: pytest -->`: it is a test module of the reader's (it uses `amai_fake`);
  it is saved to a file and run by pytest in a subprocess, where every test must pass.

A block whose first line names a file (`# app.py`) is also saved under that name in the
working directory, so that later blocks, and the test modules, can import it. A page whose
blocks read `DATABASE_URL` gets one: a fresh database on the suite's PostgreSQL server.
"""

from __future__ import annotations

import ast
import asyncio
import functools
import gc
import inspect
import logging
import os
import re
import subprocess
import sys
import traceback
import warnings
import xml.etree.ElementTree as ElementTree
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from amaimedia import AmaiClient, AsyncAmaiClient
from amaimedia.testing import FakeAmaiServer

ROOT = Path(__file__).resolve().parents[2]
PAGES = [*sorted((ROOT / "docs").glob("*.md")), ROOT / "README.md"]

# The balance of the key each page runs with: the fake's default, as the docs show it.
FUNDED = 10_000
PRODUCTION = "production"
PYTEST = "pytest"
MARKERS = frozenset({PRODUCTION, PYTEST})

_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})[ \t]*(?P<info>[^`\n]*)$")
# Lenient on purpose: anything that looks like a marker is checked, so a typo
# (`<!-- doc: production -->`) fails a test instead of silently running the block.
_MARKER_LIKE = re.compile(r"<!--\s*docs?\b", re.IGNORECASE)
_MARKER = re.compile(r"^<!-- docs: (?P<name>[a-z-]+) -->$")
_FILE_NAME = re.compile(r"^# (?P<name>[A-Za-z_][A-Za-z0-9_]*\.py)\s*$")


@dataclass(frozen=True)
class Block:
    """One fenced code block of a page."""

    path: Path
    line: int  # of the first line of code, 1-based
    language: str
    code: str
    marker: str | None

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"

    @property
    def file_name(self) -> str | None:
        """The file the block says it is (`# app.py` on its first line), if any."""
        first = self.code.split("\n", 1)[0]
        match = _FILE_NAME.match(first)
        return match["name"] if match else None

    @property
    def is_python(self) -> bool:
        return self.language in ("python", "py")


def read_blocks(path: Path) -> list[Block]:
    """Every fenced block of a page, with its language and its marker, in order."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks = []
    index = 0
    while index < len(lines):
        opening = _FENCE.match(lines[index])
        if opening is None:
            index += 1
            continue
        indent, fence = opening["indent"], opening["fence"]
        info = opening["info"].strip().lstrip("{").lstrip(".")
        language = info.split()[0].lower() if info else ""
        body = []
        index += 1
        while index < len(lines):
            text = lines[index]
            stripped = text.strip()
            if stripped.startswith(fence) and not stripped.strip(fence[0]):
                break
            body.append(text[len(indent) :] if text.startswith(indent) else text.lstrip())
            index += 1
        start = index - len(body) + 1  # 1-based line of the first line of code
        blocks.append(
            Block(path, start, language, "\n".join(body) + "\n", _marker_above(lines, start - 2))
        )
        index += 1
    return blocks


def _marker_above(lines: list[str], fence_index: int) -> str | None:
    for text in reversed(lines[:fence_index]):
        if text.strip():
            match = _MARKER.match(text.strip())
            return match["name"] if match else None
    return None


def python_blocks(path: Path) -> list[Block]:
    return [block for block in read_blocks(path) if block.is_python]


ALL_BLOCKS = [block for page in PAGES for block in python_blocks(page)]
RUN_PAGES = [page for page in PAGES if any(b.marker is None for b in python_blocks(page))]
PRODUCTION_BLOCKS = [block for block in ALL_BLOCKS if block.marker == PRODUCTION]
PYTEST_BLOCKS = [block for block in ALL_BLOCKS if block.marker == PYTEST]


def page_id(page: Path) -> str:
    return str(page.relative_to(ROOT))


def block_id(block: Block) -> str:
    return block.where


# --- running a page ----------------------------------------------------------------------


class PageRunner:
    """Runs the blocks of one page in one namespace, with one event loop for awaits.

    Every client the page builds is kept until the page ends, then closed if the page
    left it open: a page may rebind `client` as a reader's session would, and the client
    it drops must not leave its sockets to the garbage collector mid-page.
    """

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.namespace: dict[str, Any] = {"__name__": "__main__"}
        self.loop: asyncio.AbstractEventLoop | None = None
        self.clients: list[AmaiClient | AsyncAmaiClient] = []
        for cls in (AmaiClient, AsyncAmaiClient):
            monkeypatch.setattr(cls, "__init__", self._tracking(cls.__init__))

    def _tracking(self, init: Any) -> Any:
        @functools.wraps(init)
        def tracked_init(client: AmaiClient | AsyncAmaiClient, *args: Any, **kwargs: Any) -> None:
            init(client, *args, **kwargs)
            self.clients.append(client)

        return tracked_init

    def run(self, block: Block) -> None:
        code = compile_block(block)
        if code.co_flags & inspect.CO_COROUTINE:
            if self.loop is None:
                self.loop = asyncio.new_event_loop()
            self.loop.run_until_complete(eval(code, self.namespace))
        else:
            exec(code, self.namespace)

    def close(self) -> None:
        """Close what the page left open, as the end of a reader's script would."""
        open_clients = [client for client in self.clients if not client.is_closed]
        aclients = [c for c in open_clients if isinstance(c, AsyncAmaiClient)]
        for client in open_clients:
            if isinstance(client, AmaiClient):
                client.close()
        if aclients or self.loop is not None:
            loop = self.loop or asyncio.new_event_loop()
            try:
                for aclient in aclients:
                    loop.run_until_complete(aclient.aclose())
                loop.run_until_complete(loop.shutdown_asyncgens())
            finally:
                loop.close()
        self.namespace.clear()
        self.clients.clear()
        # What else the page dropped unclosed (an httpx pool of its own) is collected here,
        # rather than in whichever test runs next.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ResourceWarning)
            gc.collect()


def compile_block(block: Block) -> Any:
    """Compile a block so that its tracebacks name the page and its lines."""
    flags = ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
    tree = compile(block.code, str(block.path), "exec", flags=flags | ast.PyCF_ONLY_AST)
    ast.increment_lineno(tree, block.line - 1)
    return compile(tree, str(block.path), "exec", flags=flags, dont_inherit=True)


@contextmanager
def isolated_process_state(directory: Path) -> Iterator[None]:
    """Undo what a page may change for the whole process.

    That is the environment, logging, and the modules it saved in `directory` and imported.
    """
    environ = dict(os.environ)
    root, sdk = logging.getLogger(), logging.getLogger("amaimedia")
    saved = [(logger, logger.level, list(logger.handlers)) for logger in (root, sdk)]
    modules = set(sys.modules)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(environ)
        for logger, level, handlers in saved:
            logger.setLevel(level)
            logger.handlers[:] = handlers
        for name in set(sys.modules) - modules:
            module_file = getattr(sys.modules[name], "__file__", None) or ""
            if Path(module_file).parent == directory:
                del sys.modules[name]


@pytest.fixture
def offline_api(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeAmaiServer]:
    """A funded key on an offline server over loopback, in AMAI_API_KEY / AMAI_BASE_URL."""
    fake = FakeAmaiServer()
    key = fake.create_key(balance=FUNDED)
    with fake.serve() as base_url:
        monkeypatch.setenv("AMAI_API_KEY", key)
        monkeypatch.setenv("AMAI_BASE_URL", base_url)
        yield fake


@pytest.mark.parametrize("page", RUN_PAGES, ids=page_id)
@pytest.mark.usefixtures("offline_api")
def test_page_runs(
    page: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    monkeypatch.chdir(tmp_path)
    # A saved `# app.py` block imports as `import app`, as the reader's own module would.
    monkeypatch.syspath_prepend(str(tmp_path))
    blocks = [block for block in python_blocks(page) if block.marker is None]
    if any("DATABASE_URL" in block.code for block in blocks):
        monkeypatch.setenv("DATABASE_URL", request.getfixturevalue("postgres_url"))
    runner = PageRunner(monkeypatch)
    with isolated_process_state(tmp_path):
        try:
            for block in blocks:
                save_file(block, tmp_path)
                failure = None
                try:
                    runner.run(block)
                except Exception as exc:
                    failure = f"{block.where}: the block raised\n\n{block_traceback(exc, block)}"
                if failure is not None:  # outside the except: the report shows no chain
                    pytest.fail(failure, pytrace=False)
        finally:
            runner.close()


def block_traceback(exc: Exception, block: Block) -> str:
    """The traceback from the page's own lines on, without the runner's frames."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename != str(block.path):
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(exc), exc, tb or exc.__traceback__))


def save_file(block: Block, directory: Path) -> None:
    if block.file_name is not None:
        (directory / block.file_name).write_text(block.code, encoding="utf-8")


@pytest.mark.parametrize("block", PRODUCTION_BLOCKS, ids=block_id)
def test_production_block(block: Block) -> None:
    pytest.skip(f"{block.where}: needs the production API (<!-- docs: production -->)")


# --- test modules shown in the docs --------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("block", PYTEST_BLOCKS, ids=block_id)
def test_test_module_passes_under_pytest(block: Block, tmp_path: Path) -> None:
    # The page's files first (`# app.py`), which the test module may import.
    for other in python_blocks(block.path):
        if other.marker != PYTEST:
            save_file(other, tmp_path)
    name = block.file_name or f"test_docs_line_{block.line}.py"
    assert name.startswith("test_"), f"{block.where}: a test module's name starts with test_"
    (tmp_path / name).write_text(block.code, encoding="utf-8")
    expected = count_test_functions(block)
    assert expected, f"{block.where}: a <!-- docs: pytest --> block defines no test function"

    report = tmp_path / "report.xml"
    # The reader's environment, minus any key: the fixture brings its own server.
    env = {name: value for name, value in os.environ.items() if not name.startswith("AMAI_")}
    pytest_command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
    result = subprocess.run(
        [*pytest_command, "-W", "error", f"--junitxml={report}", name],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"{block.where}: pytest failed\n{output}"
    suite = ElementTree.parse(report).getroot().find("testsuite")
    assert suite is not None, output
    counts = {key: int(suite.get(key, "0")) for key in ("tests", "failures", "errors", "skipped")}
    assert counts == {"tests": expected, "failures": 0, "errors": 0, "skipped": 0}, (
        f"{block.where}: expected {expected} passing tests\n{output}"
    )


def count_test_functions(block: Block) -> int:
    tree = ast.parse(block.code)
    return sum(
        isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name.startswith("test")
        for node in tree.body
    )


# --- the conventions themselves -----------------------------------------------------------


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_every_marker_is_known_and_precedes_a_python_block(page: Path) -> None:
    lines = page.read_text(encoding="utf-8").splitlines()
    python_starts = {block.line for block in python_blocks(page)}
    problems = []
    for number, text in enumerate(lines, start=1):
        if not _MARKER_LIKE.search(text):
            continue
        where = f"{page_id(page)}:{number}"
        match = _MARKER.match(text.strip())
        if match is None or match["name"] not in MARKERS:
            known = ", ".join(f"<!-- docs: {name} -->" for name in sorted(MARKERS))
            problems.append(f"{where}: unknown marker {text.strip()!r}; known: {known}")
            continue
        following = [n for n in range(number, len(lines)) if lines[n].strip()]
        # `following[0]` is the 0-based index of the next non-blank line, the fence;
        # the block's code starts on the line after it (1-based: index + 2).
        if not following or following[0] + 2 not in python_starts:
            problems.append(f"{where}: {text.strip()} is not followed by a ```python block")
    assert not problems, "\n".join(problems)


def test_the_collector_reads_tabs_markers_and_nested_fences(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "# A page\n"
        "\n"
        "<!-- docs: production -->\n"
        "```python\n"
        "a = 1\n"
        "```\n"
        "\n"
        '=== "Async"\n'
        "\n"
        "    ```python\n"
        "    async def f():\n"
        "        return 2\n"
        "    ```\n"
        "\n"
        "````markdown\n"
        "```python\n"
        "shown, not run\n"
        "```\n"
        "````\n"
        "\n"
        "```bash\n"
        "echo not python\n"
        "```\n",
        encoding="utf-8",
    )
    blocks = read_blocks(page)
    assert [(b.language, b.line, b.marker) for b in blocks] == [
        ("python", 5, PRODUCTION),
        ("python", 11, None),
        ("markdown", 16, None),
        ("bash", 22, None),
    ]
    assert blocks[0].code == "a = 1\n"
    assert blocks[1].code == "async def f():\n    return 2\n"
    assert [b.line for b in python_blocks(page)] == [5, 11]


def test_a_block_runs_with_top_level_await_and_its_page_lines(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    page = tmp_path / "page.md"
    page.write_text("```python\nimport asyncio\n\nawait asyncio.sleep(0)\nx = 1 / 0\n```\n")
    [block] = read_blocks(page)
    runner = PageRunner(monkeypatch)
    try:
        with pytest.raises(ZeroDivisionError) as caught:
            runner.run(block)
        assert runner.loop is not None  # the await ran, on the page's own loop
        assert "asyncio" in runner.namespace
    finally:
        runner.close()
    trace = block_traceback(caught.value, block)
    assert f'File "{page}", line 5' in trace


def test_the_reader_can_find_every_block() -> None:
    # The collector itself: a page with python blocks yields them, with their lines.
    assert ALL_BLOCKS, "no ```python block found in docs/*.md or README.md"
    for block in ALL_BLOCKS:
        line = block.path.read_text(encoding="utf-8").splitlines()[block.line - 1]
        first = block.code.split("\n", 1)[0]
        assert line.strip() == first.strip(), block.where


def test_the_api_reference_lists_every_public_name() -> None:
    import amaimedia
    import amaimedia.testing

    reference = (ROOT / "docs" / "reference.md").read_text(encoding="utf-8")
    documented = set(re.findall(r"^::: (\S+)", reference, flags=re.MULTILINE))
    public = {f"amaimedia.{name}" for name in amaimedia.__all__ if name != "__version__"}
    public |= {f"amaimedia.testing.{name}" for name in amaimedia.testing.__all__}
    assert sorted(public - documented) == []
    private = [path for path in documented if any(p.startswith("_") for p in path.split("."))]
    assert private == []
