"""Rows as the SDK seals them, for tests that must write a row the way the SDK would.

A test that ages an entry cannot simply rewrite its `created_at`: the row's code covers
it, and the SDK refuses the row as tampered with (which `tests/journal/test_integrity.py`
checks). `age_entry` rewrites the time and the code together, holding the key, as the SDK
would have written the row at that time. `seal` gives the code of any row, for tests that
build rows by hand (a journal of layout 1 being upgraded, a row flipped back to pending).
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from amaimedia._auth import ApiKey
from amaimedia._journal._integrity import JournalKeys
from amaimedia._journal._protocol import PendingSpend

DEFAULT_BASE_URL = "https://api.amaimedia.com"


def keys(key: str, base_url: str = DEFAULT_BASE_URL) -> JournalKeys:
    """The journal keys a client of `key` on `base_url` uses."""
    return JournalKeys(ApiKey(key), httpx.URL(base_url))


def salt_of(target: Path | str) -> str:
    """The salt of the journal at `target` (a path, or a PostgreSQL URL)."""
    [(salt,)] = _fetch(
        target,
        "SELECT value FROM journal_meta WHERE name = 'salt'",
        "SELECT salt FROM amaimedia_schema WHERE name = 'spends'",
    )
    return str(salt)


def scope_of(target: Path | str, key: str, base_url: str = DEFAULT_BASE_URL) -> str:
    """The scope of `key`'s entries in the journal at `target`."""
    return keys(key, base_url).scope(salt_of(target))


def seal(
    scope: str,
    key: str,
    tool: str,
    units: float,
    reference: str,
    created_at: datetime,
    state: str = "pending",
    *,
    base_url: str = DEFAULT_BASE_URL,
) -> str:
    """The code a client of `key` gives a row holding these values."""
    spend = PendingSpend(tool, units, reference, created_at, 0, None, None)
    return keys(key, base_url).seal(scope, spend, state)


def age_entry(
    target: Path | str,
    key: str,
    reference: str,
    created_at: datetime,
    *,
    base_url: str = DEFAULT_BASE_URL,
) -> None:
    """Make the pending entry of `reference` look written at `created_at`, sealed anew."""
    sqlite = not str(target).startswith("postgres")
    table = "spends" if sqlite else "amaimedia_spends"
    [(entry, scope, tool, units)] = _fetch(
        target,
        f"SELECT id, scope, tool, units FROM {table} WHERE reference = ? AND state = 'pending'",
        None,
        reference,
    )
    mac = seal(scope, key, tool, json.loads(units), reference, created_at, base_url=base_url)
    moment: object = created_at.isoformat() if sqlite else created_at
    _fetch(
        target,
        f"UPDATE {table} SET created_at = ?, mac = ? WHERE id = ?",
        None,
        moment,
        mac,
        entry,
    )


def _fetch(
    target: Path | str, sqlite_sql: str, postgres_sql: str | None, *parameters: Any
) -> list[tuple[Any, ...]]:
    if str(target).startswith("postgres"):
        import psycopg

        sql = (postgres_sql or sqlite_sql).replace("?", "%s")
        with psycopg.connect(str(target), autocommit=True) as db:
            cursor = db.execute(sql, parameters)
            return cursor.fetchall() if cursor.description is not None else []
    with contextlib.closing(sqlite3.connect(target)) as db, db:
        return db.execute(sqlite_sql, parameters).fetchall()
