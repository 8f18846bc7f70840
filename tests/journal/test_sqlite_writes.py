"""The SQLite journal's write of an entry, when it fails halfway.

An entry and its claim are taken in one transaction; a commit that fails must leave
neither: no entry that nobody claimed, no claim on an entry that does not exist.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from amaimedia import SpendJournalError
from amaimedia._journal._sqlite import SQLiteSpendJournal


class FailingCommit:
    """A connection that fails at COMMIT, as a full or failing disk makes it."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
        if sql == "COMMIT":
            raise sqlite3.OperationalError("disk I/O error")
        return self._db.execute(sql, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._db, name)


def test_a_commit_that_fails_leaves_no_entry_and_no_claim(tmp_path: Path) -> None:
    journal = SQLiteSpendJournal(tmp_path / "spends.sqlite3")
    entry = journal.add("scope", "dub", 3, "job-0")  # opens this thread's connection
    mine = journal._local.connection
    mine.db = FailingCommit(mine.db)

    with pytest.raises(SpendJournalError, match=r"cannot write the spend journal .*disk I/O"):
        journal.add_and_claim("scope", "dub", 3, "job-1")

    # The failed connection was closed and is opened afresh: the entry was rolled back,
    # and the id it would have had is not claimed.
    assert [e.spend.reference for e in journal.pending("scope")] == ["job-0"]
    assert journal.claim(entry + 1)
    journal.release(entry + 1)


def test_an_interrupt_while_claiming_rolls_the_entry_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    journal = SQLiteSpendJournal(tmp_path / "spends.sqlite3")

    def interrupted(self: SQLiteSpendJournal, entry: int) -> bool:
        raise KeyboardInterrupt

    monkeypatch.setattr(SQLiteSpendJournal, "claim", interrupted)
    with pytest.raises(KeyboardInterrupt):
        journal.add_and_claim("scope", "dub", 3, "job-1")
    monkeypatch.undo()
    assert journal.pending("scope") == []


@pytest.mark.parametrize("value", [123, b"spends.sqlite3", None])
def test_a_journal_file_is_named_by_a_path(value: Any) -> None:
    with pytest.raises(TypeError, match="spend_journal must be a path"):
        SQLiteSpendJournal(value)
