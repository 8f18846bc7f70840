"""Generate the sync client from the async one, so the twins cannot drift.

    python scripts/unasync.py           # rewrite amaimedia/_client.py
    python scripts/unasync.py --check   # fail if amaimedia/_client.py is out of date

Each rule replaces whole words or phrases only; docstrings in the async sources are
worded so that these small rules make them right for the sync twin. Lines that end with
`# async only`, and the `transport` argument (the async client's choice of aiohttp) in
signatures and docstrings, are left out of the sync twin. The async file is the source
of truth: edit it, then run this script.

The script fails, in both modes, when a rule matches nothing in any async source (the
code it was written for is gone: remove the rule), or when a generated file still holds
a word of asyncio (`await`, `asyncio`, `coroutine`, ...): a docstring was reworded in a
way no rule covers.
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
    (
        "from typing import TYPE_CHECKING, Any, Literal, TypeVar",
        "from typing import TYPE_CHECKING, Any, TypeVar",
    ),
    ("Callable[[float], Awaitable[None]]", "Callable[[float], None]"),
    ("Awaitable[RawResponse[Charge]]", "RawResponse[Charge]"),
    ("Awaitable[RawResponse[Quote]]", "RawResponse[Quote]"),
    ("import asyncio\n", "import time\n"),
    ("Callable[_P, Awaitable[_R]]", "Callable[_P, _R]"),
    (
        "from ._offload import claim_in_thread, run_in_thread, run_shielded",
        "from ._offload import claim_inline, run_inline",
    ),
    ("from amaimedia._async_metered import", "from amaimedia._metered import"),
    ("from ._async_metered import", "from ._metered import"),
    ("in asyncio code", "in ordinary, blocking code"),
    ("is_async=True", "is_async=False"),
    ("coroutine functions", "plain functions"),
    ("async context manager", "context manager"),
    ("AsyncRawResponseClient", "RawResponseClient"),
    ("AsyncMeteredBlock", "MeteredBlock"),
    ("new_async_transport", "new_transport"),
    ("areplay_journal", "replay_journal"),
    ("from ._async_client import AsyncAmaiClient", "from ._client import AmaiClient"),
    ("on a coroutine function", "on a plain function"),
    ("run_in_thread", "run_inline"),
    ("psycopg.AsyncConnection", "psycopg.Connection"),
    ("add_in_async", "add_in"),
    ("claim_in_thread", "claim_inline"),
    ("run_shielded", "run_inline"),
    ("between tasks", "between threads"),
    ("httpx.AsyncClient", "httpx.Client"),
    ("AsyncAmaiClient", "AmaiClient"),
    ("async_retry", "retry"),
    ("asyncio.sleep", "time.sleep"),
    ("__aenter__", "__enter__"),
    ("__aexit__", "__exit__"),
    ("async with ", "with "),
    ("async def ", "def "),
    ("await ", ""),
    ("aclose", "close"),
    ("aread", "read"),
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


# Words that must not survive into a sync twin.
LEFTOVER = re.compile(
    r"\b(?:asyncio|async|await|awaited|awaitable|coroutines?|aclose|aenter|aexit)\b", re.I
)


def unasync(source: str, name: str, used: set[str] | None = None) -> str:
    """The sync twin of an async module's source; the rules that matched go in `used`."""
    source = ASYNC_ONLY.sub("", source)

    def replace(match: re.Match[str]) -> str:
        if used is not None:
            used.add(match.group(0))
        return _NEW[match.group(0)]

    return HEADER.format(source=name) + _PATTERN.sub(replace, source)


def leftovers(text: str) -> list[str]:
    """`line N: ...` for each line of a generated file that still speaks of asyncio."""
    return [
        f"line {number}: {line.strip()}"
        for number, line in enumerate(text.splitlines(), start=1)
        if LEFTOVER.search(line)
    ]


def main(argv: list[str]) -> int:
    check = "--check" in argv
    stale, problems = [], []
    used: set[str] = set()
    for source, target in PAIRS:
        wanted = unasync(source.read_text(), source.name, used)
        relative = target.relative_to(ROOT)
        problems += [f"{relative}, {where}" for where in leftovers(wanted)]
        if target.exists() and target.read_text() == wanted:
            continue
        if check:
            stale.append(target)
        else:
            target.write_text(wanted)
            print(f"wrote {relative}")
    problems += [
        f"the rule {old!r} matches nothing: remove it" for old, _ in RULES if old not in used
    ]
    for problem in problems:
        print(f"unasync: {problem}", file=sys.stderr)
    if stale:
        names = ", ".join(str(path.relative_to(ROOT)) for path in stale)
        print(f"out of date: {names}; run: python scripts/unasync.py", file=sys.stderr)
    return 1 if stale or problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
