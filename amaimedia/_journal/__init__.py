"""The spend journal: spends committed to storage before they are sent.

The dangerous window of a metered block lies between "the work finished" and "the
server recorded the spend": a crash, an outage or a deploy there would lose the charge.
With a journal, each spend is committed before it is sent and marked done once the
server confirmed it; whatever is still pending can be sent again later, from this
process or another, with `replay_pending()`.

- `_protocol.py`: `SpendJournal`, the interface a backend implements, and its entries.
- `_scoped.py`: `ScopedJournal`, one client's entries in a backend, and the rules the
  metered blocks follow with it; `JournalOpening`, a journal opened now or on first use.
- `_integrity.py`: the rows' authentication codes and the scopes, derived from the key.
- `_sqlite.py`: the SQLite file backend, for one machine.
- `_postgres.py`: the PostgreSQL backend (psycopg 3, extra `postgres`), for a fleet.

Importing this package loads no backend: sqlite3 or psycopg loads with the first client
that keeps a journal.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TypeAlias, TypeGuard

from ._integrity import JournalKeys
from ._protocol import EntryId, JournalEntry, PendingSpend, RefusedSpend, SpendJournal
from ._scoped import JournalOpening, ScopedJournal, journal_keys, previous_journal_keys

__all__ = [
    "EntryId",
    "JournalEntry",
    "JournalKeys",
    "JournalOpening",
    "JournalTarget",
    "PendingSpend",
    "RefusedSpend",
    "ScopedJournal",
    "SpendJournal",
    "describe_journal",
    "is_database_url",
    "journal_keys",
    "open_journal",
    "previous_journal_keys",
]

_POSTGRES_SCHEMES = ("postgresql://", "postgres://")


JournalTarget: TypeAlias = "str | os.PathLike[str] | SpendJournal"
"""What a client's `spend_journal` argument may be: a path, a database URL, or a backend."""


def open_journal(target: JournalTarget) -> SpendJournal:
    """The backend for a client's `spend_journal` argument.

    A `postgresql://` or `postgres://` URL opens the PostgreSQL journal, any other str or
    path the SQLite file, and an object that implements `SpendJournal` is used as it is
    (a journal built once and shared by several clients, say).

    Raises:
        TypeError: `target` is none of those.
        ImportError: The URL needs psycopg, which is not installed.
        SpendJournalError: The journal cannot be used: a corrupt file, a database that
            cannot be reached, a place the process cannot write.
    """
    try:
        if is_database_url(target):
            from ._postgres import PostgresSpendJournal

            return PostgresSpendJournal(target)
        if isinstance(target, str | os.PathLike):
            from ._sqlite import SQLiteSpendJournal

            return SQLiteSpendJournal(target)
    except BaseException:
        # A connection string may hold a password: the frames of a failure, which error
        # trackers show with their variables, must not keep it.
        del target
        raise
    if isinstance(target, SpendJournal):
        return target
    raise TypeError(
        "spend_journal must be a path, a postgresql:// URL or a SpendJournal, "
        f"got {type(target).__name__}"
    )


def describe_journal(target: str | os.PathLike[str]) -> str:
    """Where `open_journal(target)` would open a journal, without opening it.

    For a path: the absolute path it resolves to now (so that opening it later, from
    another working directory, opens the same file). For a URL: the URL without its
    password. Touches no database and takes no lock.

    Raises:
        ImportError: The URL needs psycopg, which is not installed.
        SpendJournalError: The URL cannot be parsed (it is not shown).
    """
    try:
        if is_database_url(target):
            from ._postgres import describe

            return describe(target)
    except BaseException:
        del target  # see open_journal()
        raise
    return str(Path(target).expanduser().resolve())


def is_database_url(target: object) -> TypeGuard[str]:
    """Whether `open_journal(target)` opens a PostgreSQL journal (a `postgresql://` URL)."""
    return isinstance(target, str) and target.startswith(_POSTGRES_SCHEMES)
