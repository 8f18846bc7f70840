"""The reservation books that journals hold for every process using them (`SharedBook`).

Both backends: the PostgreSQL book (a row per reservation, alive while its holder's
connection holds its advisory lock) and the SQLite book (a row per reservation, alive
while its holder process holds a lock on one byte of the journal's claims file). One test
body checks both where they promise the same: admission never over-admits under racing
threads, a dead holder's reservations stop counting, charges settled count for a quote's
window only, and a release never blocks nor raises.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from amaimedia import SpendJournalError
from amaimedia._admission import Decision, SharedBook
from amaimedia._journal._postgres import PostgresSpendJournal
from amaimedia._journal._postgres_book import _LOST_HOLDER_GRACE_S as LOST_HOLDER_GRACE_S
from amaimedia._journal._postgres_book import PostgresReservationBook
from amaimedia._journal._sqlite import SQLiteSpendJournal
from tests.postgres import PostgresServer, drop_database, fresh_database

KINDS = ["sqlite", "postgres"]
SCOPE = "scope-a"
OTHER = "scope-b"
# Generous bounds for what must happen "at once": never a timing assertion on speed.
PROMPTLY = 10.0

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX process liveness")


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    kind: str = request.param
    return kind


@pytest.fixture
def target(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """What a journal of the kind is opened on: a file, or a fresh database's URL."""
    if kind == "sqlite":
        return str(tmp_path / "journal.sqlite3")
    url: str = request.getfixturevalue("postgres_url")
    return url


def open_journal(kind: str, target: str) -> SQLiteSpendJournal | PostgresSpendJournal:
    if kind == "sqlite":
        return SQLiteSpendJournal(target)
    return PostgresSpendJournal(target)


@pytest.fixture
def journals(kind: str, target: str) -> Iterator[list[Any]]:
    """The journals a test opened (`journals.append`), closed after it."""
    opened: list[Any] = []
    yield opened
    for journal in opened:
        if isinstance(journal, PostgresSpendJournal):
            journal.close()
        else:
            journal.reservation_book().close()


def book_of(journal: SQLiteSpendJournal | PostgresSpendJournal) -> SharedBook:
    book: SharedBook = journal.reservation_book()
    return book


def admit(book: SharedBook, cost: int, balance_after: int, window: float = 0.0) -> Decision:
    return book.admit(SCOPE, cost, balance_after, window)


def wait_until(condition: Any, timeout: float = PROMPTLY) -> float:
    """Poll `condition()` until it is true; how long it took. Fails after `timeout`."""
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout:
            pytest.fail(f"not within {timeout} s")
        time.sleep(0.02)
    return time.monotonic() - start


# -- admission ---------------------------------------------------------------------------


def test_a_block_is_admitted_while_the_balance_covers_the_others(
    kind: str, target: str, journals: list[Any]
) -> None:
    journal = open_journal(kind, target)
    journals.append(journal)
    book = book_of(journal)
    # Funds for three blocks of 10: each quote's balance_after is 20 (30 less its own).
    decisions = [admit(book, 10, 20) for _ in range(4)]
    assert [d.admitted for d in decisions] == [True, True, True, False]
    assert [d.reserved for d in decisions] == [0, 10, 20, 30]
    assert [d.blocks for d in decisions] == [0, 1, 2, 3]
    assert decisions[3].reservation is None
    assert book.reserved(SCOPE) == 30
    assert book.reserved(OTHER) == 0
    # Another scope is another account.
    assert book.admit(OTHER, 10, 0, 0.0).admitted


def test_a_release_without_a_charge_frees_the_reservation(
    kind: str, target: str, journals: list[Any]
) -> None:
    journal = open_journal(kind, target)
    journals.append(journal)
    book = book_of(journal)
    first = admit(book, 10, 10)
    assert not admit(book, 10, 5).admitted
    book.release(first.reservation, None)
    wait_until(lambda: book.reserved(SCOPE) == 0)
    assert admit(book, 10, 5).admitted


def test_charges_settled_count_within_the_window_only(
    kind: str, target: str, journals: list[Any]
) -> None:
    journal = open_journal(kind, target)
    journals.append(journal)
    book = book_of(journal)
    decision = admit(book, 10, 10)
    book.release(decision.reservation, 12)
    wait_until(lambda: book.reserved(SCOPE) == 0)
    # A quote of the last 30 s may have been answered before that charge: counted.
    refused = admit(book, 10, 5, window=30.0)
    assert (refused.admitted, refused.reserved, refused.blocks) == (False, 12, 0)
    # A quote made since cannot have missed it.
    time.sleep(0.3)
    assert admit(book, 10, 5, window=0.2).admitted


def test_racing_threads_never_over_admit(kind: str, target: str, journals: list[Any]) -> None:
    """8 threads, each with a journal object of its own, admit against funds for 10."""
    opened = [open_journal(kind, target) for _ in range(8)]
    journals.extend(opened)
    books = [book_of(journal) for journal in opened]
    # The same database or file: 8 processes' worth of books, one per journal object.
    assert len({id(book) for book in books}) == 8
    admitted: list[Decision] = []
    lock = threading.Lock()
    start = threading.Barrier(len(books))

    def race(book: SharedBook) -> None:
        start.wait()
        for _ in range(6):
            # Each quote sees the whole balance (100), less its own cost.
            decision = admit(book, 10, 90)
            if decision.admitted:
                with lock:
                    admitted.append(decision)

    threads = [threading.Thread(target=race, args=(book,)) for book in books]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(admitted) == 10
    assert books[0].reserved(SCOPE) == 100
    assert sorted(d.reserved for d in admitted) == list(range(0, 100, 10))


def test_a_release_is_asked_of_the_books_thread_and_returns_at_once(
    kind: str, target: str, journals: list[Any]
) -> None:
    journal = open_journal(kind, target)
    journals.append(journal)
    book = book_of(journal)
    decision = admit(book, 10, 10)
    book.release(decision.reservation, None)
    book.release(decision.reservation, None)  # a second end is nothing
    book.release(object(), 5)  # nor is a handle of another book
    wait_until(lambda: book.reserved(SCOPE) == 0)


def test_the_book_is_one_per_journal_and_process(
    kind: str, target: str, journals: list[Any]
) -> None:
    journal = open_journal(kind, target)
    journals.append(journal)
    assert journal.reservation_book() is journal.reservation_book()
    assert str(journal.location) in repr(journal.reservation_book())


# -- a dead holder ---------------------------------------------------------------------

RESERVE_AND_WAIT = """
import sys, time
from amaimedia._journal._postgres import PostgresSpendJournal
from amaimedia._journal._sqlite import SQLiteSpendJournal
kind, target = sys.argv[1], sys.argv[2]
journal = SQLiteSpendJournal(target) if kind == "sqlite" else PostgresSpendJournal(target)
decision = journal.reservation_book().admit("scope-a", 70, 100, 0.0)
print("admitted" if decision.admitted else "refused", flush=True)
time.sleep(120)
"""


def test_a_killed_processs_reservations_stop_counting(
    kind: str, target: str, journals: list[Any]
) -> None:
    journal = open_journal(kind, target)
    journals.append(journal)
    book = book_of(journal)
    worker = subprocess.Popen(
        [sys.executable, "-c", RESERVE_AND_WAIT, kind, target],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert worker.stdout is not None
        assert worker.stdout.readline().strip() == "admitted"
        assert book.reserved(SCOPE) == 70
        assert not admit(book, 50, 50).admitted
        worker.send_signal(signal.SIGKILL)
        worker.wait(timeout=PROMPTLY)
        killed = time.monotonic()
        wait_until(lambda: book.reserved(SCOPE) == 0)
        assert admit(book, 50, 50).admitted
        print(f"released {time.monotonic() - killed:.3f} s after the kill")
    finally:
        worker.kill()
        worker.wait()
        if worker.stdout is not None:
            worker.stdout.close()


# -- PostgreSQL: the holder's lock, the connection lost, the password ----------------------


def test_the_holder_key_is_the_one_pg_locks_shows(postgres_url: str) -> None:
    """The view's columns for a one-key advisory lock, as the book reads them."""
    import psycopg

    key = (0x7EADBEEF << 32) | 0xCAFEF00D
    with psycopg.connect(postgres_url, autocommit=True) as db:
        db.execute("SELECT pg_advisory_lock(%s)", (key,))
        row = db.execute(
            "SELECT classid::bigint, objid::bigint, objsubid FROM pg_locks "
            "WHERE locktype = 'advisory' AND pid = pg_backend_pid()"
        ).fetchone()
    assert row == (0x7EADBEEF, 0xCAFEF00D, 1)


def holders(postgres_url: str) -> list[int]:
    import psycopg

    with psycopg.connect(postgres_url, autocommit=True) as db:
        rows = db.execute("SELECT DISTINCT holder FROM amaimedia_reservations").fetchall()
    return [int(row[0]) for row in rows]


def terminate_book_connections(postgres_url: str) -> int:
    """End every other session holding an advisory lock (the books'): as a restart does."""
    import psycopg

    with psycopg.connect(postgres_url, autocommit=True) as db:
        rows = db.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' "
            "AND objsubid = 1 AND pid <> pg_backend_pid()"
        ).fetchall()
    return len(rows)


def test_a_terminated_holder_connection_stops_counting(postgres_url: str) -> None:
    first = PostgresSpendJournal(postgres_url)
    second = PostgresSpendJournal(postgres_url)
    try:
        assert admit(first.reservation_book(), 60, 100).admitted
        theirs = second.reservation_book()
        assert not admit(theirs, 50, 50).admitted
        first.reservation_book().close()  # its connection ends, and its lock
        assert theirs.reserved(SCOPE) == 0
        assert admit(theirs, 50, 50).admitted
    finally:
        first.close()
        second.close()


def test_a_lost_connection_keeps_the_live_reservations(postgres_url: str) -> None:
    journal = PostgresSpendJournal(postgres_url)
    other = PostgresSpendJournal(postgres_url)
    try:
        book = journal.reservation_book()
        kept = admit(book, 40, 100)
        ended = admit(book, 10, 100)
        assert kept.admitted
        assert ended.admitted
        [before] = holders(postgres_url)
        assert terminate_book_connections(postgres_url) == 1
        # Within a second or so, the book's thread notices and writes them again.
        wait_until(lambda: holders(postgres_url) != [before])
        assert len(holders(postgres_url)) == 1  # both rows, under the new holder
        assert other.reservation_book().reserved(SCOPE) == 50
        # A release after the reconnection ends the row written again.
        book.release(ended.reservation, None)
        wait_until(lambda: other.reservation_book().reserved(SCOPE) == 40)
        decision = admit(other.reservation_book(), 70, 30)
        assert (decision.admitted, decision.reserved, decision.blocks) == (False, 40, 1)
    finally:
        journal.close()
        other.close()


@contextlib.contextmanager
def a_lost_holder(postgres_url: str) -> Iterator[tuple[threading.Event, SharedBook, int]]:
    """A book holding 60 whose connection is lost, its thread kept busy until told.

    So it cannot write its rows again yet: as after a database restart, for the second or
    so its thread takes to notice. Yields the event that frees the thread, another
    worker's book, and the lost holder's key.
    """
    journal = PostgresSpendJournal(postgres_url)
    other = PostgresSpendJournal(postgres_url)
    busy = threading.Event()
    try:
        book = journal.reservation_book()
        assert admit(book, 60, 100).admitted
        [lost] = holders(postgres_url)
        terminate_book_connections(postgres_url)
        stall = threading.Thread(target=book_thread_of(book).ask, args=(busy.wait, 30.0))
        stall.start()
        yield busy, other.reservation_book(), lost
        busy.set()
        stall.join()
    finally:
        busy.set()
        journal.close()
        other.close()


def test_a_lost_holder_counts_until_it_has_written_its_rows_again(postgres_url: str) -> None:
    """Failed before: between the lost connection and the rewrite, others admitted in full."""
    with a_lost_holder(postgres_url) as (busy, theirs, lost):
        decision = admit(theirs, 50, 50)
        assert (decision.admitted, decision.reserved) == (False, 60)
        busy.set()
        # Written again under a new holder: it counts on, past the grace of a lost one.
        wait_until(lambda: holders(postgres_url) not in ([], [lost]))
        time.sleep(LOST_HOLDER_GRACE_S + 0.5)
        assert theirs.reserved(SCOPE) == 60
        assert not admit(theirs, 50, 50).admitted


def test_a_lost_holder_that_never_comes_back_ends_after_the_grace(postgres_url: str) -> None:
    with a_lost_holder(postgres_url) as (_, theirs, _lost):
        assert theirs.reserved(SCOPE) == 60  # the first look marks it lost
        took = wait_until(lambda: theirs.reserved(SCOPE) == 0)
        assert took >= LOST_HOLDER_GRACE_S - 0.5
        assert admit(theirs, 50, 50).admitted


def test_a_closed_book_s_rows_go_at_once(postgres_url: str) -> None:
    journal = PostgresSpendJournal(postgres_url)
    other = PostgresSpendJournal(postgres_url)
    try:
        assert admit(journal.reservation_book(), 60, 100).admitted
        journal.reservation_book().close()
        assert other.reservation_book().reserved(SCOPE) == 0  # no grace: it ended them
    finally:
        journal.close()
        other.close()


def book_thread_of(book: SharedBook) -> Any:
    """The thread that owns a PostgreSQL book's connection (to keep it busy)."""
    assert isinstance(book, PostgresReservationBook)
    return book._thread


def test_an_admission_after_a_lost_connection_connects_again(postgres_url: str) -> None:
    journal = PostgresSpendJournal(postgres_url)
    try:
        book = journal.reservation_book()
        assert admit(book, 10, 100).admitted
        terminate_book_connections(postgres_url)
        # Asked at once, before the thread's watch: the dead connection is found and made
        # again, under a new holder, with the live reservation written again first.
        decision = admit(book, 10, 100)
        assert (decision.admitted, decision.reserved) == (True, 10)
    finally:
        journal.close()


def test_an_unreachable_database_fails_admission_and_never_a_release(
    postgres_server: PostgresServer,
) -> None:
    if not postgres_server.managed:
        pytest.skip("stops the server")
    url = fresh_database(postgres_server)
    journal = PostgresSpendJournal(url)
    try:
        book = journal.reservation_book()
        decision = admit(book, 10, 100)
        postgres_server.stop()
        try:
            started = time.monotonic()
            book.release(decision.reservation, 10)
            assert time.monotonic() - started < 1.0  # never waits for the database
            with pytest.raises(SpendJournalError) as caught:
                admit(book, 10, 100)
            assert postgres_password(url) not in str(caught.value)
            assert postgres_password(url) not in repr(caught.value)
        finally:
            postgres_server.start()
        assert admit(book, 10, 100).admitted
        # The new block's 10, and for a few seconds the 10 of the row whose release the
        # stopped server never got: its holder's lock went with the server.
        assert book.reserved(SCOPE) == 20
        wait_until(lambda: book.reserved(SCOPE) == 10)
    finally:
        journal.close()
        drop_database(postgres_server, url)


def postgres_password(url: str) -> str:
    from urllib.parse import urlsplit

    password = urlsplit(url).password
    assert password
    return password


def test_the_password_is_in_no_repr(postgres_url: str) -> None:
    journal = PostgresSpendJournal(postgres_url)
    try:
        book = journal.reservation_book()
        assert isinstance(book, PostgresReservationBook)
        decision = admit(book, 10, 100)
        for shown in (repr(book), repr(decision), repr(decision.reservation)):
            assert postgres_password(postgres_url) not in shown
    finally:
        journal.close()


def test_a_role_without_create_uses_an_existing_table(postgres_url: str) -> None:
    import psycopg
    from psycopg import sql

    PostgresSpendJournal(postgres_url).reservation_book().reserved(SCOPE)  # makes the table
    role = f"amai_reader_{os.getpid()}"
    with psycopg.connect(postgres_url, autocommit=True) as db:
        db.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))
        db.execute(
            sql.SQL("CREATE ROLE {} LOGIN PASSWORD 'reader-pw'").format(sql.Identifier(role))
        )
        db.execute(sql.SQL("REVOKE CREATE ON SCHEMA public FROM PUBLIC"))
        db.execute(
            sql.SQL(
                "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {}"
            ).format(sql.Identifier(role))
        )
        db.execute(
            sql.SQL("GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO {}").format(
                sql.Identifier(role)
            )
        )
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(postgres_url)
    netloc = f"{role}:reader-pw@{parts.hostname}:{parts.port}"
    journal = PostgresSpendJournal(urlunsplit(parts._replace(netloc=netloc)))
    try:
        assert admit(journal.reservation_book(), 10, 100).admitted
    finally:
        journal.close()
        with psycopg.connect(postgres_url, autocommit=True) as db:
            db.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
            db.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def test_a_book_keeps_its_journal_while_it_is_used(postgres_url: str) -> None:
    import gc

    # The journal is used only through its book: it must live as long as the book does.
    book = PostgresSpendJournal(postgres_url).reservation_book()
    gc.collect()
    try:
        assert book.reserved(SCOPE) == 0
        assert admit(book, 10, 100).admitted
    finally:
        book.close()


def test_a_journal_dropped_with_its_book_stops_the_books_thread(postgres_url: str) -> None:
    import gc

    def book_threads() -> set[threading.Thread]:
        return {t for t in threading.enumerate() if t.name == "amaimedia-reservations"}

    before = book_threads()
    journal = PostgresSpendJournal(postgres_url)
    assert journal.reservation_book().reserved(SCOPE) == 0
    threads = book_threads() - before
    assert len(threads) == 1
    del journal
    gc.collect()
    for thread in threads:
        thread.join(5)
    assert not any(thread.is_alive() for thread in threads)


def test_a_release_reaches_the_database_without_another_admission(postgres_url: str) -> None:
    ours = PostgresSpendJournal(postgres_url)
    theirs = PostgresSpendJournal(postgres_url)
    try:
        book = ours.reservation_book()
        decision = admit(book, 60, 100)
        assert theirs.reservation_book().reserved(SCOPE) == 60
        book.release(decision.reservation, None)
        # Sent alone once no admission came to carry it: seen from another process's book.
        wait_until(lambda: theirs.reservation_book().reserved(SCOPE) == 0)
    finally:
        ours.close()
        theirs.close()


def test_the_next_admission_carries_the_releases_before_it(postgres_url: str) -> None:
    import psycopg

    journal = PostgresSpendJournal(postgres_url)
    try:
        book = journal.reservation_book()
        charged = admit(book, 10, 100)
        refunded = admit(book, 20, 100)
        book.release(charged.reservation, 7)
        book.release(refunded.reservation, None)
        later = admit(book, 5, 100)  # at once: well within the releases' wait
        assert later.admitted
        with psycopg.connect(postgres_url) as db:
            rows = db.execute(
                "SELECT tokens, settled_at IS NOT NULL FROM amaimedia_reservations ORDER BY id"
            ).fetchall()
        # The charge became a settled row, the refund is gone, the new block is held.
        assert rows == [(7, True), (5, False)]
        # The charge counts for the next quotes' window; the released blocks no more.
        assert admit(book, 1, 100, window=30.0).reserved == 12
    finally:
        journal.close()


def test_a_closed_book_stops_counting_when_close_returns(postgres_url: str) -> None:
    ours = PostgresSpendJournal(postgres_url)
    theirs = PostgresSpendJournal(postgres_url)
    try:
        for _ in range(20):  # the server ending a closed connection's locks is no race here
            book = ours.reservation_book()
            assert admit(book, 60, 100).admitted
            book.close()
            assert theirs.reservation_book().reserved(SCOPE) == 0
    finally:
        ours.close()
        theirs.close()


# -- SQLite: the file's write lock -------------------------------------------------------


def test_a_release_never_waits_for_the_files_write_lock(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "journal.sqlite3"
    journal = SQLiteSpendJournal(path)
    book = journal.reservation_book()
    try:
        decision = admit(book, 10, 100)
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # another process writing, for seconds
        try:
            started = time.monotonic()
            book.release(decision.reservation, None)
            assert time.monotonic() - started < 1.0
        finally:
            other.execute("ROLLBACK")
            other.close()
        wait_until(lambda: book.reserved(SCOPE) == 0)
    finally:
        book.close()


def test_a_closed_book_ends_its_reservations(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite3"
    mine = SQLiteSpendJournal(path).reservation_book()
    theirs = SQLiteSpendJournal(path).reservation_book()
    try:
        assert admit(mine, 60, 100).admitted
        assert theirs.reserved(SCOPE) == 60
        mine.close()
        assert theirs.reserved(SCOPE) == 0
    finally:
        theirs.close()
