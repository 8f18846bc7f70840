"""The SQLite spend journal: one file, shared by every client and process that opens it.

SQLite's WAL mode and busy timeout serialize the writes of several processes. While a
process sends a spend it holds a claim on the entry: an exclusive lock on one byte of a
side file (`<journal>-claims`), at the entry's id. Another process skips a claimed entry.
The operating system drops the locks of a process that dies, so what a killed process
left behind can be replayed at once, with no lease to expire.

The journal is its owner's alone. The file, its side files (`-wal`, `-shm`, `-claims`)
and the directories the journal creates are made owner-only (0600, 0700) whatever the
umask, and a journal file or side file that another user owns, that others may write, or
that is a symbolic link is refused when the journal is opened: whoever can write a
journal chooses what is replayed from it (the rows' codes, `_integrity.py`, are the
second line of that defence). On Windows the permissions are left to the directory's ACL.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import stat
import sys
import threading
import time
import weakref
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from amaimedia._exceptions import APIError, SpendJournalError
from amaimedia._logging import logger
from amaimedia._types import Units

from ._integrity import encode_units, new_salt
from ._protocol import EntryId, StoredEntry, read_entry

if TYPE_CHECKING:
    from ._sqlite_book import SQLiteReservationBook

__all__ = ["SQLiteSpendJournal"]

# Layout 2 (amaimedia 0.2): each row carries its authentication code (`mac`), and the
# journal its salt (`journal_meta`). Layout 1 (0.1) is upgraded when the journal opens.
_SCHEMA_VERSION = 2
_BUSY_TIMEOUT_MS = 10_000
# Done entries are kept for a while as an audit trail, then pruned when a journal opens.
_KEEP_DONE = timedelta(days=7)

# Everything a rewritten entry gets afresh: its units, time and code, and its history.
_ADD = (
    "INSERT INTO spends (scope, tool, units, reference, created_at, mac) "
    "VALUES (?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (scope, tool, reference) DO UPDATE SET "
    "units = excluded.units, created_at = excluded.created_at, mac = excluded.mac, "
    "state = 'pending', done_at = NULL, charged = NULL, "
    "attempts = 0, last_error = NULL, error_code = NULL"
)
_ENTRY = "SELECT id FROM spends WHERE scope = ? AND tool = ? AND reference = ?"
_PENDING = (
    "SELECT id, tool, units, reference, created_at, attempts, last_error, error_code, mac "
    "FROM spends WHERE scope = ? AND state = 'pending' ORDER BY id"
)
# Owner-only, whatever the umask; what others may write, or another user owns, is refused.
_FILE_MODE = 0o600
_DIRECTORY_MODE = 0o700
_OTHERS_WRITE = stat.S_IWGRP | stat.S_IWOTH
_OTHERS_ANY = 0o077
_SIDE_FILES = ("-wal", "-shm", "-journal", "-claims")
_CHECKS_OWNERS = hasattr(os, "geteuid")
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)

_META = "CREATE TABLE journal_meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)"
_SCHEMA = """
CREATE TABLE spends (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    scope TEXT NOT NULL,
    tool TEXT NOT NULL,
    units TEXT NOT NULL,
    reference TEXT NOT NULL,
    created_at TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    error_code TEXT,
    state TEXT NOT NULL DEFAULT 'pending',
    charged INTEGER,
    done_at TEXT,
    mac TEXT,
    UNIQUE (scope, tool, reference)
)
"""


class SQLiteSpendJournal:
    """An SQLite file of spends, shared by every client (and process) that opens it.

    The SQLite implementation of the `SpendJournal` protocol.

    Args:
        path: The file; `~` is expanded and missing parent directories are created
            (owner-only). A new file is created owner-only too.

    Raises:
        SpendJournalError: The file is corrupt, not a spend journal, not writable, or
            not its owner's alone: another user owns it or one of its side files, or
            others may write them (the message says which file, and how to fix it).
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        if not isinstance(path, str | os.PathLike):
            raise TypeError(f"spend_journal must be a path, got {type(path).__name__}")
        self.path = Path(path).expanduser().resolve()
        self._local = threading.local()
        self._books: dict[int, SQLiteReservationBook] = {}
        self._books_lock = threading.Lock()
        directory_existed = self.path.parent.is_dir()
        try:
            _make_directories(self.path.parent)
            existed = not _create_private(self.path)
            # Before a byte of the file is read: a journal others may write is not used.
            _refuse_shared(self.path)
            with self._connect() as db:
                self._salt = _prepare(db, self.path)
            # The write-ahead log and its index exist now; SQLite made them as private
            # as the file, unless someone else had made them first.
            _refuse_shared(self.path)
            _claims_for(self.path)  # the side file, opened now so that it fails now
            _make_private(self.path)
        except (OSError, sqlite3.Error, SpendJournalError) as exc:
            self._close_mine()
            raise SpendJournalError(f"cannot use {self.path} as a spend journal: {exc}") from exc
        if not existed:
            # A journal that vanished with the disk it was on shows here, in the logs.
            made = "" if directory_existed else ", and its directory"
            logger.info(
                "created a new, empty spend journal at %s%s; entries left pending in an "
                "earlier journal are not in it",
                self.path,
                made,
            )

    def __repr__(self) -> str:
        return f"SQLiteSpendJournal({str(self.path)!r})"

    @property
    def location(self) -> str:
        """The file's absolute path."""
        return str(self.path)

    @property
    def salt(self) -> str:
        """The journal's random salt, made with the file."""
        return self._salt

    def reservation_book(self) -> SQLiteReservationBook:
        """This process's view of the reservation book in the journal's file.

        One per journal and process, with a thread and a connection of its own
        (`_sqlite_book.py`). A child of `fork()` gets a new one; the parent's is left
        alone there.
        """
        from ._sqlite_book import SQLiteReservationBook

        pid = os.getpid()
        with self._books_lock:
            book = self._books.get(pid)
            if book is None:
                book = SQLiteReservationBook(self.path)
                self._books = {pid: book}
            return book

    def _close_mine(self) -> None:
        """Close this thread's connection now, if it has one: a journal refused is not kept."""
        mine: _Connection | None = getattr(self._local, "connection", None)
        self._local.connection = None
        if mine is not None and mine.pid == os.getpid():
            mine.db.close()

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        """This thread's connection to the file, opened on first use.

        One per thread, since a connection is not shared between threads, and per
        process: a child of `fork()` opens its own, and never touches (or closes) the
        parent's. A connection that failed is closed and opened again next time.
        """
        mine: _Connection | None = getattr(self._local, "connection", None)
        if mine is not None and mine.pid != os.getpid():  # pragma: no cover - a forked child
            _inherited.append(mine)  # the parent's: kept, never closed from here
            mine = None
        if mine is None:
            mine = self._local.connection = _Connection(self.path)
        try:
            yield mine.db
        except sqlite3.Error:
            self._local.connection = None
            mine.db.close()
            raise

    def _execute(
        self, what: str, *statements: tuple[str, tuple[object, ...]]
    ) -> list[tuple[object, ...]]:
        """Run statements on one connection; the rows of the last."""
        try:
            with self._connect() as db:
                for sql, parameters in statements:
                    rows = db.execute(sql, parameters).fetchall()
                return rows
        except sqlite3.Error as exc:
            raise SpendJournalError(f"cannot {what} the spend journal {self.path}: {exc}") from exc

    def _record(self, sql: str, parameters: tuple[object, ...]) -> None:
        """Write an outcome without waiting for the disk.

        In WAL mode, `synchronous=NORMAL` commits without syncing: the write survives
        a killed process, and the next durable commit syncs it too. A power cut may lose
        it, which only leads to a replay that the API answers without charging again.
        """
        self._execute(
            "write",
            ("PRAGMA synchronous=NORMAL", ()),
            (sql, parameters),
            ("PRAGMA synchronous=FULL", ()),
        )

    def add(
        self,
        scope: str,
        tool: str,
        units: Units,
        reference: str,
        *,
        created_at: datetime | None = None,
        mac: str | None = None,
    ) -> EntryId:
        """Commit a pending spend, and return its entry id.

        Writing the same `(scope, tool, reference)` again makes that entry pending again,
        with the new units, time and code and a fresh history, rather than adding a
        second one.
        """
        row = _row(scope, tool, units, reference, created_at, mac)
        rows = self._execute("write", (_ADD, row), (_ENTRY, (scope, tool, reference)))
        return int(str(rows[0][0]))

    def add_and_claim(
        self,
        scope: str,
        tool: str,
        units: Units,
        reference: str,
        *,
        created_at: datetime | None = None,
        mac: str | None = None,
    ) -> tuple[EntryId, bool]:
        """Commit a pending spend and claim it before the commit makes it visible."""
        claimed = False
        entry: EntryId | None = None
        row = _row(scope, tool, units, reference, created_at, mac)
        try:
            with self._connect() as db:
                db.execute("BEGIN IMMEDIATE")
                try:
                    db.execute(_ADD, row)
                    entry = int(db.execute(_ENTRY, (scope, tool, reference)).fetchone()[0])
                    claimed = self.claim(entry)
                    db.execute("COMMIT")
                except BaseException:
                    if db.in_transaction:
                        db.execute("ROLLBACK")
                    raise
        except BaseException as exc:
            if claimed and entry is not None:
                self.release(entry)
            if isinstance(exc, sqlite3.Error):
                raise SpendJournalError(
                    f"cannot write the spend journal {self.path}: {exc}"
                ) from exc
            raise
        return entry, claimed

    def mark_done(self, entry: EntryId, charged: int, *, mac: str | None = None) -> None:
        """Record that the server confirmed the spend (lazily: see `_record`).

        The pending row's code is replaced by the done row's (`None` leaves none): a row
        flipped back to pending by hand matches no code.
        """
        self._record(
            "UPDATE spends SET state = 'done', charged = ?, done_at = ?, mac = ? WHERE id = ?",
            (charged, _now(), mac, entry),
        )

    def mark_failed(self, entry: EntryId, error: BaseException) -> None:
        """Record a failed attempt; the entry stays pending."""
        code = error.error if isinstance(error, APIError) else None
        self._record(
            "UPDATE spends SET attempts = attempts + 1, last_error = ?, error_code = ? "
            "WHERE id = ?",
            (str(error), code, entry),
        )

    def mark_refused(self, entry: EntryId, reason: str) -> None:
        """Record why a pending entry is not sent, as its `last_error` (lazily)."""
        self._record(
            "UPDATE spends SET last_error = ? WHERE id = ? AND state = 'pending'", (reason, entry)
        )

    def rescope(self, entry: EntryId, scope: str, mac: str) -> bool:
        """Move a pending entry to another scope with its code there; see `SpendJournal`."""
        try:
            rows = self._execute(
                "write",
                (
                    "UPDATE spends SET scope = ?, mac = ? WHERE id = ? AND state = 'pending'",
                    (scope, mac, entry),
                ),
                ("SELECT changes()", ()),
            )
        except SpendJournalError as exc:
            if isinstance(exc.__cause__, sqlite3.IntegrityError):
                return False  # that scope has an entry of this tool and reference
            raise
        return rows[0][0] == 1

    def pending(self, scope: str) -> list[StoredEntry]:
        """The pending entries of one scope, oldest first; see `SpendJournal`."""
        rows = self._execute("read", (_PENDING, (scope,)))
        return [read_entry(row, _time) for row in rows]

    def is_pending(self, entry: EntryId) -> bool:
        """Whether an entry is still pending (another process may have finished it)."""
        rows = self._execute("read", ("SELECT state FROM spends WHERE id = ?", (entry,)))
        return bool(rows) and rows[0][0] == "pending"

    def claim_pending(self, entry: EntryId) -> bool:
        """Claim an entry if it is still pending; `False` if it is taken or settled."""
        if not self.claim(entry):
            return False
        try:
            if self.is_pending(entry):
                return True
        except BaseException:
            self.release(entry)
            raise
        self.release(entry)
        return False

    def claim(self, entry: EntryId) -> bool:
        """Take the exclusive right to send an entry; `False` if someone else holds it."""
        return _claims_for(self.path).acquire(entry)

    def release(self, entry: EntryId) -> None:
        """Give a claim back."""
        _claims_for(self.path).release(entry)


def _prepare(db: sqlite3.Connection, path: Path) -> str:
    """Make the file a journal of this layout, or check that it is one; its salt.

    BEGIN IMMEDIATE takes the write lock before the file is inspected, so that clients
    opening a new journal at once take turns: none sees another's half-made schema. It
    also makes a file we could read but not write fail here, when the client is built,
    and not later when a spend needs it.
    """
    db.execute("BEGIN IMMEDIATE")
    version = db.execute("PRAGMA user_version").fetchone()[0]
    tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    empty = version == 0 and not tables - {"sqlite_sequence"}
    if not empty and "spends" in tables and version > _SCHEMA_VERSION:
        raise SpendJournalError(
            f"it is a spend journal of layout version {version}, written by a newer "
            f"amaimedia (this one reads version {_SCHEMA_VERSION}): upgrade amaimedia"
        )
    current = version == _SCHEMA_VERSION and {"spends", "journal_meta"} <= tables
    older = version == 1 and "spends" in tables
    if not (empty or current or older):
        raise SpendJournalError("the file is an SQLite database, but not a spend journal")
    check = db.execute("PRAGMA quick_check").fetchone()[0]
    if check != "ok":
        raise SpendJournalError(f"the database is damaged: {check}")
    if empty:
        db.execute(_SCHEMA)
        db.execute(_META)
        db.execute("INSERT INTO journal_meta (name, value) VALUES ('salt', ?)", (new_salt(),))
    elif older:
        _upgrade_from_1(db, path)
    db.execute(f"PRAGMA user_version = {_SCHEMA_VERSION}")
    cutoff = (datetime.now(timezone.utc) - _KEEP_DONE).isoformat()
    db.execute("DELETE FROM spends WHERE state = 'done' AND done_at < ?", (cutoff,))
    found = db.execute("SELECT value FROM journal_meta WHERE name = 'salt'").fetchone()
    if found is None or not str(found[0]):
        raise SpendJournalError("the journal is damaged: it has lost its salt")
    db.execute("COMMIT")
    _use_wal(db)
    return str(found[0])


def _upgrade_from_1(db: sqlite3.Connection, path: Path) -> None:
    """Layout 1 to 2: a code column (empty for the old rows), and the journal's salt.

    The rows 0.1 wrote carry no code and keep their old scope: nothing here can tell
    whether someone changed them, so they are kept, reported and never sent until a
    client adopts them explicitly (`replay_pending(adopt_unauthenticated=True)`).
    """
    db.execute("ALTER TABLE spends ADD COLUMN mac TEXT")
    db.execute(_META)
    db.execute("INSERT INTO journal_meta (name, value) VALUES ('salt', ?)", (new_salt(),))
    (pending,) = db.execute("SELECT count(*) FROM spends WHERE state = 'pending'").fetchone()
    log = logger.warning if pending else logger.info
    log(
        "upgraded the spend journal %s to layout 2, whose rows are authenticated with the "
        "API key; %d pending entr%s written by amaimedia 0.1 carry no authentication: they are "
        "kept, and not sent until adopted (replay_pending(adopt_unauthenticated=True), or "
        "amaimedia replay --adopt-unauthenticated)",
        path,
        pending,
        "y" if pending == 1 else "ies",
    )


def _use_wal(db: sqlite3.Connection) -> None:
    """Put the journal in WAL mode, which then stays set in the file.

    The mode cannot change inside a transaction, so this runs once the file is known to
    be ours. The switch does not wait on the busy timeout: while another client holds
    the write lock to create the schema, it fails at once, and is tried again here.
    """
    deadline = time.monotonic() + _BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            break
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)
    if mode != "wal":
        raise SpendJournalError(f"it cannot be put in WAL mode (journal_mode is {mode})")


def _row(
    scope: str,
    tool: str,
    units: Units,
    reference: str,
    created_at: datetime | None,
    mac: str | None,
) -> tuple[object, ...]:
    moment = _now() if created_at is None else created_at.isoformat()
    return (scope, tool, encode_units(units), reference, moment, mac)


def _time(value: object) -> datetime:
    moment = datetime.fromisoformat(str(value))
    if moment.tzinfo is None:
        raise ValueError(f"a time without its zone: {str(value)[:40]!r}")
    return moment


def _text(data: bytes) -> str:
    # A row someone wrote with bytes that are not UTF-8 reads as text all the same (and
    # then matches no code), instead of failing the whole listing.
    return data.decode("utf-8", "replace")


# -- owner-only files ----------------------------------------------------------------


def _make_directories(directory: Path) -> None:
    """Create the missing directories above the journal, owner-only whatever the umask."""
    missing: list[Path] = []
    while not directory.exists():
        missing.append(directory)
        directory = directory.parent
    for made in reversed(missing):
        try:
            made.mkdir(mode=_DIRECTORY_MODE)
        except FileExistsError:
            continue  # another opener made it a moment ago; it is theirs to set
        if _CHECKS_OWNERS:
            os.chmod(made, _DIRECTORY_MODE)


def _create_private(path: Path) -> bool:
    """Create the journal file owner-only unless it exists; whether it was created.

    SQLite creates the side files with the file's own permissions, so they are private
    too.
    """
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | _NOFOLLOW, _FILE_MODE)
    except FileExistsError:
        return False
    try:
        if _CHECKS_OWNERS:
            os.fchmod(fd, _FILE_MODE)  # whatever the umask
    finally:
        os.close(fd)
    return True


def _refuse_shared(path: Path) -> None:
    """Refuse a journal whose file or side files are not this user's alone.

    Raises:
        SpendJournalError: One is a symbolic link, not a file, owned by another user, or
            writable by its group or by everyone.
    """
    if not _CHECKS_OWNERS:  # pragma: no cover - Windows: the directory's ACL decides
        return
    for name in ("", *_SIDE_FILES):
        file = Path(f"{path}{name}")
        try:
            status = os.lstat(file)
        except FileNotFoundError:
            continue
        if stat.S_ISLNK(status.st_mode):
            raise SpendJournalError(
                f"{file} is a symbolic link, which could send the journal's writes anywhere: "
                "remove it, and keep the journal in a directory of your own"
            )
        if not stat.S_ISREG(status.st_mode):
            if not name:
                continue  # the journal path itself: SQLite says what is wrong with it
            raise SpendJournalError(f"{file} is not a regular file: remove it")
        _refuse_foreign(file, status)


def _refuse_foreign(file: Path, status: os.stat_result) -> None:
    """Refuse a file that another user owns, or that others may write."""
    if not _CHECKS_OWNERS:  # pragma: no cover - Windows: the directory's ACL decides
        return
    me = os.geteuid()
    if status.st_uid != me:
        raise SpendJournalError(
            f"{file} is owned by another user (uid {status.st_uid}, this process runs as "
            f"uid {me}), who could have chosen the spends in it: keep the journal in a "
            "directory of your own, or, if the file is yours, give it back to you "
            f"(chown {me} {file})"
        )
    mode = stat.S_IMODE(status.st_mode)
    if mode & _OTHERS_WRITE:
        raise SpendJournalError(
            f"{file} can be written by other users (mode {mode:#o}), and whoever can write "
            f"a journal chooses what your key is charged: make it yours alone (chmod 600 "
            f"{file}) if you trust what it holds, or remove it"
        )


def _make_private(path: Path) -> None:
    """Take the read bits of others off the journal's files, which are ours (checked)."""
    if not _CHECKS_OWNERS:  # pragma: no cover - Windows: the directory's ACL decides
        return
    for name in ("", *_SIDE_FILES):
        file = Path(f"{path}{name}")
        try:
            mode = stat.S_IMODE(os.lstat(file).st_mode)
            if mode & _OTHERS_ANY:
                # An older SDK made it 0644 under the usual umask: readable by anyone.
                # (Not a link: `_refuse_shared` checked them all a moment ago.)
                os.chmod(file, mode & ~_OTHERS_ANY)
        except FileNotFoundError:
            continue


def _now() -> str:
    return datetime.now(timezone.utc).isoformat()


class _Connection:
    """One thread's connection to a journal file.

    It closes when its thread ends or its journal is collected (the thread-local that
    holds it goes), in the process that opened it only: a forked child never closes its
    parent's connections.
    """

    __slots__ = ("__weakref__", "db", "pid")

    def __init__(self, path: Path) -> None:
        # Used by one thread only; closed from whichever thread collects it.
        self.db = sqlite3.connect(
            path, timeout=_BUSY_TIMEOUT_MS / 1000, isolation_level=None, check_same_thread=False
        )
        self.db.text_factory = _text
        try:
            # FULL: a committed entry survives a power cut, not only a killed process.
            self.db.execute("PRAGMA synchronous=FULL")
        except BaseException:
            self.db.close()  # a file SQLite cannot open (a directory, say) leaves nothing open
            raise
        self.pid = os.getpid()
        weakref.finalize(self, _close_in, self.pid, self.db)


def _close_in(pid: int, db: sqlite3.Connection) -> None:
    if os.getpid() == pid:  # pragma: no branch - another pid: in a forked child
        db.close()


class _Claims:
    """The entries this process is sending, for one journal file.

    POSIX record locks belong to the process, not to a thread or a file descriptor, and
    closing any descriptor of the file drops them all: so each process keeps one
    descriptor per journal, never closed, and tracks its own threads' claims in a set.
    A forked child starts with none (`_forget_claims`): it holds none of the parent's
    locks, and a journal opened before the fork looks its claims up afresh there.
    """

    def __init__(self, path: Path) -> None:
        self._lock = threading.Lock()
        self._held: set[int] = set()
        self._fd = _open_lock_file(Path(f"{path}-claims"))

    def acquire(self, entry_id: int) -> bool:
        with self._lock:
            if entry_id in self._held or not _lock_byte(self._fd, entry_id):
                return False
            self._held.add(entry_id)
            return True

    def release(self, entry_id: EntryId) -> None:
        with self._lock:
            if entry_id in self._held:
                self._held.discard(entry_id)
                _unlock_byte(self._fd, entry_id)


if sys.platform != "win32":
    import fcntl

    def _open_lock_file(path: Path) -> int:
        flags = os.O_RDWR | os.O_NOFOLLOW
        try:
            fd = os.open(path, flags | os.O_CREAT | os.O_EXCL, _FILE_MODE)
        except FileExistsError:
            fd = os.open(path, flags)
            try:
                # Checked on the descriptor that is kept: nothing can swap the file now.
                _refuse_foreign(path, os.fstat(fd))
            except BaseException:
                os.close(fd)
                raise
        else:
            os.fchmod(fd, _FILE_MODE)  # whatever the umask
        return fd

    def _lock_byte(fd: int, offset: int) -> bool:
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, offset)
        except OSError:
            return False
        return True

    def _unlock_byte(fd: int, offset: int) -> None:
        fcntl.lockf(fd, fcntl.LOCK_UN, 1, offset)

    def _forget_claims() -> None:  # pragma: no cover - runs in a forked child
        # A forked child inherits the descriptors but none of the parent's locks.
        global _registry_lock
        _registry.clear()
        _registry_lock = threading.Lock()

    os.register_at_fork(after_in_child=_forget_claims)

else:  # pragma: no cover - Windows: claims coordinate the threads of one process only

    def _open_lock_file(path: Path) -> int:
        return -1

    def _lock_byte(fd: int, offset: int) -> bool:
        return True

    def _unlock_byte(fd: int, offset: int) -> None:
        pass


_registry: dict[Path, _Claims] = {}
# Connections a forked child inherited from its parent: closing one there could disturb
# the parent's use of the file, so the child keeps them, unused, until it exits.
_inherited: list[_Connection] = []
_registry_lock = threading.Lock()


def _claims_for(path: Path) -> _Claims:
    with _registry_lock:
        claims = _registry.get(path)
        if claims is None:
            claims = _registry[path] = _Claims(path)
        return claims
