"""An SQLite journal is its owner's alone: files 0600 and directories 0700, whatever the
umask, and a journal someone else could write is refused before it is read.

The suite runs as root, which ignores permission bits when it opens a file; what is
tested is the SDK's own code, which reads the modes and owners and sets them. A file
"owned by another user" is given to `nobody` with `os.chown`, which needs root: those
tests are skipped when not running as root (and on Windows, where the journal leaves
permissions to the directory's ACL).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import stat
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from amaimedia import SpendJournalError
from amaimedia._journal._sqlite import SQLiteSpendJournal
from tests.answers import api_router
from tests.conftest import Harness
from tests.journal.ledger import Ledger, journal_client, run_block

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX permissions")

NOBODY = 65534
SIDE_FILES = ["-wal", "-shm", "-claims"]


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@contextlib.contextmanager
def umask(value: int) -> Iterator[None]:
    previous = os.umask(value)
    try:
        yield
    finally:
        os.umask(previous)


def needs_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("giving a file to another user (os.chown) needs root")


@pytest.mark.parametrize("mask", [0o022, 0o002, 0o000, 0o077], ids=oct)
def test_the_journal_and_what_it_creates_are_owner_only_whatever_the_umask(
    harness: Harness, tmp_path: Path, mask: int
) -> None:
    outer = tmp_path / "outer"
    outer.mkdir()
    outer.chmod(0o755)
    path = outer / "state" / "app" / "spends.sqlite3"
    with umask(mask):
        client = journal_client(harness, Ledger(), path)
        run_block(harness, client, "job-1")  # the write-ahead log and its index exist now

        modes = {name: mode(Path(f"{path}{name}")) for name in ["", *SIDE_FILES]}

    # Before: 0644 for the file, -wal and -shm under every umask, 0755 / 0777 directories.
    assert modes == {"": 0o600, "-wal": 0o600, "-shm": 0o600, "-claims": 0o600}
    assert mode(path.parent) == mode(path.parent.parent) == 0o700
    assert mode(outer) == 0o755  # a directory it did not make is left as it is


def test_a_directory_that_exists_keeps_its_mode(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o755)

    SQLiteSpendJournal(shared / "spends.sqlite3")

    assert mode(shared) == 0o755


def test_a_journal_an_older_sdk_left_readable_by_all_is_made_private(tmp_path: Path) -> None:
    path = tmp_path / "spends.sqlite3"
    SQLiteSpendJournal(path)
    for name in ["", "-claims"]:
        Path(f"{path}{name}").chmod(0o644)

    SQLiteSpendJournal(path)

    assert mode(path) == mode(Path(f"{path}-claims")) == 0o600


@pytest.mark.parametrize("name", ["", *SIDE_FILES, "-journal"])
@pytest.mark.parametrize("bits", [0o666, 0o620, 0o602], ids=["world", "group", "other"])
def test_a_journal_file_others_can_write_is_refused_before_it_is_read(
    harness: Harness, tmp_path: Path, name: str, bits: int
) -> None:
    path = tmp_path / "spends.sqlite3"
    SQLiteSpendJournal(path)
    planted = Path(f"{path}{name}")
    planted.touch()
    planted.chmod(bits)
    api = api_router()

    with pytest.raises(SpendJournalError) as caught:
        harness.client(api, spend_journal=path)

    message = str(caught.value)
    assert f"{planted} can be written by other users (mode {bits:#o})" in message
    assert f"chmod 600 {planted}" in message
    assert "chooses what your key is charged" in message
    assert api.calls.call_count == 0


def test_a_world_writable_journal_planted_in_a_shared_directory_is_refused(
    harness: Harness, tmp_path: Path
) -> None:
    """The issue's case: another user made `spends.sqlite3` first, writable by all."""
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    planted = shared / "spends.sqlite3"
    with contextlib.closing(sqlite3.connect(planted)) as db:
        db.execute("PRAGMA user_version = 0")
    planted.chmod(0o666)
    before = planted.read_bytes()

    with pytest.raises(SpendJournalError, match="can be written by other users"):
        harness.client(api_router(), spend_journal=planted)

    assert planted.read_bytes() == before  # not even made a journal
    assert mode(planted) == 0o666


@pytest.mark.parametrize("name", ["", *SIDE_FILES])
def test_a_journal_file_owned_by_another_user_is_refused(
    harness: Harness, tmp_path: Path, name: str
) -> None:
    needs_root()
    path = tmp_path / "spends.sqlite3"
    SQLiteSpendJournal(path)
    planted = Path(f"{path}{name}")
    planted.touch()
    planted.chmod(0o600)
    os.chown(planted, NOBODY, NOBODY)
    if name == "-claims":
        # This process opened the claims file with the journal above and keeps it: a new
        # process is what meets the file someone else made.
        from amaimedia._journal import _sqlite

        _sqlite._registry.pop(path.resolve(), None)

    with pytest.raises(SpendJournalError) as caught:
        harness.client(api_router(), spend_journal=path)

    message = str(caught.value)
    assert f"{planted} is owned by another user (uid {NOBODY}" in message
    assert f"chown {os.geteuid()} {planted}" in message


@pytest.mark.parametrize("name", SIDE_FILES)
def test_a_side_file_that_is_a_symbolic_link_is_refused(
    harness: Harness, tmp_path: Path, name: str
) -> None:
    path = tmp_path / "journal" / "spends.sqlite3"
    SQLiteSpendJournal(path)
    target = tmp_path / "elsewhere"
    target.write_bytes(b"")
    link = Path(f"{path}{name}")
    link.unlink(missing_ok=True)
    link.symlink_to(target)

    with pytest.raises(SpendJournalError, match="is a symbolic link"):
        harness.client(api_router(), spend_journal=path)

    assert target.read_bytes() == b""


def test_a_side_file_that_is_not_a_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "spends.sqlite3"
    Path(f"{path}-wal").mkdir()

    with pytest.raises(SpendJournalError, match="-wal is not a regular file"):
        SQLiteSpendJournal(path)


def test_the_claims_file_is_checked_on_the_descriptor_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The claims file, opened once per process, is checked with `fstat` on its descriptor."""
    needs_root()
    from amaimedia._journal import _sqlite

    path = tmp_path / "spends.sqlite3"
    claims = Path(f"{path}-claims")
    claims.touch()
    os.chown(claims, NOBODY, NOBODY)
    # As if it were given away between the checks of the paths and the opening.
    monkeypatch.setattr(_sqlite, "_refuse_shared", lambda path: None)

    with pytest.raises(SpendJournalError, match="owned by another user"):
        SQLiteSpendJournal(path)
    assert path.resolve() not in _sqlite._registry
