"""The spend journal: spends committed to storage before they are sent.

The dangerous window of a metered block lies between "the work finished" and "the
server recorded the spend": a crash, an outage or a deploy there would lose the charge.
With a journal, each spend is committed before it is sent and marked done once the
server confirmed it; whatever is still pending can be sent again later, from this
process or another, with `replay_pending()`.

- `_protocol.py`: `SpendJournal`, the interface a backend implements, and its entries.
- `_scoped.py`: `ScopedJournal`, one client's entries in a backend, and the rules the
  metered blocks follow with it.
- `_sqlite.py`: the SQLite file backend.

Importing this package loads no backend: sqlite3 loads with the first client that keeps
a journal.
"""

from __future__ import annotations

import os

from ._protocol import EntryId, JournalEntry, PendingSpend, SpendJournal
from ._scoped import ScopedJournal, journal_scope

__all__ = [
    "EntryId",
    "JournalEntry",
    "PendingSpend",
    "ScopedJournal",
    "SpendJournal",
    "journal_scope",
    "open_journal",
]


def open_journal(path: str | os.PathLike[str]) -> SpendJournal:
    """The backend for a client's `spend_journal` argument: today, an SQLite file.

    Raises:
        TypeError: `path` is not a path.
        SpendJournalError: The file is corrupt, not a spend journal, or not writable.
    """
    from ._sqlite import SQLiteSpendJournal

    return SQLiteSpendJournal(path)
