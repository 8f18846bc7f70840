"""Generate the sync client from the async one, so the twins cannot drift.

    python scripts/unasync.py           # rewrite amaimedia/_client.py
    python scripts/unasync.py --check   # fail if amaimedia/_client.py is out of date

Each rule replaces whole words only. Lines that end with `# async only`, and the
`transport` argument (the async client's choice of aiohttp) in signatures and docstrings,
are left out of the sync twin. The async file is the source of truth: edit it, then run
this script.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PAIRS = [
    (ROOT / "amaimedia" / "_async_client.py", ROOT / "amaimedia" / "_client.py"),
    (ROOT / "amaimedia" / "_async_metered.py", ROOT / "amaimedia" / "_metered.py"),
]

# Longest first, so that a rule never eats part of a longer one.
RULES = [
    ("from collections.abc import Awaitable, Callable", "from collections.abc import Callable"),
    ("from typing import Literal, TypeVar", "from typing import TypeVar"),
    ("Callable[[float], Awaitable[None]]", "Callable[[float], None]"),
    (
        "The asyncio client; `_client.py`, the sync one, is generated from this file.",
        "The synchronous client, generated from `_async_client.py`.",
    ),
    (
        "Metered blocks in asyncio code; `_metered.py` is generated from this file.",
        "Metered blocks in blocking code, generated from `_async_metered.py`.",
    ),
    ("import asyncio\nimport os\n", "import os\nimport time\n"),
    ("Callable[_P, Awaitable[_R]]", "Callable[_P, _R]"),
    (
        "from ._async_metered import AsyncMeteredBlock, areplay_journal",
        "from ._metered import MeteredBlock, replay_journal",
    ),
    ("in asyncio code", "in ordinary, blocking code"),
    ("is_async=True", "is_async=False"),
    ("coroutine functions", "plain functions"),
    ("async context manager", "context manager"),
    ("AsyncMeteredBlock", "MeteredBlock"),
    ("areplay_journal", "replay_journal"),
    ("from ._async_client import AsyncAmaiClient", "from ._client import AmaiClient"),
    ("on a coroutine function", "on a plain function"),
    ("run_in_thread", "run_inline"),
    ("between tasks", "between threads"),
    ("httpx.AsyncClient", "httpx.Client"),
    ("AsyncAmaiClient", "AmaiClient"),
    ("async_retry", "retry"),
    ("asyncio.sleep", "time.sleep"),
    ("import asyncio", "import time"),
    ("__aenter__", "__enter__"),
    ("__aexit__", "__exit__"),
    ("async with ", "with "),
    ("async for ", "for "),
    ("async def ", "def "),
    ("await ", ""),
    ("aclose", "close"),
    ("aclient", "client"),
]
ASYNC_ONLY = re.compile(
    r"^.*  # async only\n"
    # The argument in a signature (one line), or its entry in Args (and the lines under it).
    r"|^ {8}transport: .*\n(?: {12}.*\n)*",
    re.MULTILINE,
)
HEADER = (
    "# Generated from {source} by scripts/unasync.py: edit that file, then run the\n"
    "# script. scripts/test fails while this file is out of date.\n"
)


def _word(old: str) -> str:
    # Whole words only: "aclose" must not match inside "xaclose", nor "await " in "awaited".
    end = r"(?!\w)" if old[-1].isalnum() or old[-1] == "_" else ""
    return r"(?<!\w)" + re.escape(old) + end


_PATTERN = re.compile("|".join(_word(old) for old, _ in RULES))
_NEW = dict(RULES)


def unasync(source: str, name: str) -> str:
    """The sync twin of an async module's source."""
    source = ASYNC_ONLY.sub("", source)
    return HEADER.format(source=name) + _PATTERN.sub(lambda match: _NEW[match.group(0)], source)


def main(argv: list[str]) -> int:
    check = "--check" in argv
    stale = []
    for source, target in PAIRS:
        wanted = unasync(source.read_text(), source.name)
        if target.exists() and target.read_text() == wanted:
            continue
        if check:
            stale.append(target)
        else:
            target.write_text(wanted)
            print(f"wrote {target.relative_to(ROOT)}")
    if stale:
        names = ", ".join(str(path.relative_to(ROOT)) for path in stale)
        print(f"out of date: {names}; run: python scripts/unasync.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
