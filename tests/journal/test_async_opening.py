"""`AsyncAmaiClient` built inside a running event loop opens its journal off the loop.

Opening an SQLite journal takes its write lock; while another process holds it, the
opening waits (up to the busy timeout, 10 s), and before this change it waited in the
constructor, on the loop: every task of the program stood still. Now the constructor only
checks the argument, and the journal opens in a worker thread before the first block,
replay or listing does anything, so a journal that cannot be used still fails before any
work. Built where no loop runs, the client opens the journal at once, as the sync one
does.

The lock is held by a connection of the test's own, as another process would hold it;
waits are bounded, and no test measures how long anything took.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from amaimedia import AsyncAmaiClient, SpendJournalError
from amaimedia._journal._sqlite import SQLiteSpendJournal
from tests.answers import KEY, api_router
from tests.journal.ledger import Ledger

DEADLINE = 30.0


@contextlib.contextmanager
def write_lock_held(path: Path) -> Iterator[sqlite3.Connection]:
    """The journal's write lock, held by another connection until released or the end."""
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        yield holder
    finally:
        if holder.in_transaction:
            holder.execute("ROLLBACK")
        holder.close()


def client_on(ledger: Ledger, journal: Any) -> AsyncAmaiClient:
    http = httpx.AsyncClient(transport=httpx.MockTransport(ledger.router.async_handler))
    return AsyncAmaiClient(KEY, http_client=http, spend_journal=journal, max_retries=0)


def test_a_client_built_in_a_loop_while_the_journal_is_locked_blocks_no_task(
    tmp_path: Path,
) -> None:
    path = tmp_path / "spends.sqlite3"
    SQLiteSpendJournal(path)  # made before; another process holds its lock now
    ledger = Ledger()

    async def main() -> None:
        with write_lock_held(path) as holder:
            # Before: the constructor waited 10 s on the loop, then raised "database is
            # locked". Now it returns at once, the lock still held.
            client = client_on(ledger, path)
            assert client.spend_journal == str(path.resolve())
            listing = asyncio.ensure_future(client.pending_spends())
            others = 0
            for _ in range(20):
                await asyncio.sleep(0)  # the loop runs other tasks meanwhile
                others += 1
            assert not listing.done()  # it waits for the lock, in its worker thread
            holder.execute("ROLLBACK")
            assert await asyncio.wait_for(listing, DEADLINE) == []
            assert others == 20
        async with client.metered("dub", 3, reference="job-1"):
            pass
        await client.aclose()

    asyncio.run(main())
    assert ledger.charged == {"job-1": 5}


def test_a_journal_that_cannot_be_used_still_fails_before_any_work(tmp_path: Path) -> None:
    path = tmp_path / "spends.sqlite3"
    path.write_bytes(b"this is no database\n" * 64)
    api = api_router()
    ran: list[str] = []

    async def main() -> None:
        http = httpx.AsyncClient(transport=httpx.MockTransport(api.async_handler))
        client = AsyncAmaiClient(KEY, http_client=http, spend_journal=path)
        with pytest.raises(SpendJournalError, match="not a database"):
            async with client.metered("dub", 3):
                ran.append("the work")
        for call in (client.pending_spends, client.replay_pending):
            with pytest.raises(SpendJournalError, match="not a database"):
                await call()
        with pytest.raises(SpendJournalError, match="not a database"):
            async with client:
                ran.append("the body")
        await http.aclose()

    asyncio.run(main())
    assert ran == []
    assert api.calls.call_count == 0  # not even the block's check


def test_entering_the_client_opens_its_journal(tmp_path: Path) -> None:
    path = tmp_path / "state" / "spends.sqlite3"

    async def main() -> None:
        client = client_on(Ledger(), path)
        assert not path.exists()  # checked, not opened
        async with client:
            assert path.is_file()

    asyncio.run(main())


def test_copies_share_one_opening(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "spends.sqlite3"
    opened: list[Path] = []
    real_init = SQLiteSpendJournal.__init__

    def counted(journal: SQLiteSpendJournal, where: Any) -> None:
        opened.append(Path(where))
        real_init(journal, where)

    monkeypatch.setattr(SQLiteSpendJournal, "__init__", counted)
    ledger = Ledger()

    async def main() -> None:
        client = client_on(ledger, path)
        copy = client.with_options(timeout=5)
        async with copy.metered("dub", 3, reference="job-1"):
            pass
        assert await client.pending_spends() == []
        assert await asyncio.gather(client.pending_spends(), copy.pending_spends()) == [[], []]

    asyncio.run(main())
    assert opened == [path]
    assert ledger.charged == {"job-1": 5}


def test_a_relative_path_opens_where_the_client_was_built(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "first").mkdir()
    (tmp_path / "later").mkdir()
    monkeypatch.chdir(tmp_path / "first")

    async def main() -> None:
        client = client_on(Ledger(), "spends.sqlite3")
        monkeypatch.chdir(tmp_path / "later")
        await client.pending_spends()

    asyncio.run(main())
    assert (tmp_path / "first" / "spends.sqlite3").is_file()
    assert not (tmp_path / "later" / "spends.sqlite3").exists()


def test_built_where_no_loop_runs_it_opens_at_once(tmp_path: Path) -> None:
    path = tmp_path / "spends.sqlite3"
    path.write_bytes(b"this is no database\n" * 64)

    with pytest.raises(SpendJournalError, match="not a database"):
        AsyncAmaiClient(KEY, spend_journal=path)


def test_a_database_that_cannot_be_reached_fails_at_first_use_not_in_the_loop() -> None:
    pytest.importorskip("psycopg")
    with socket_bound() as port:
        url = f"postgresql://amai:secret-pw@127.0.0.1:{port}/nowhere?connect_timeout=1"
        api = api_router()

        async def main() -> None:
            http = httpx.AsyncClient(transport=httpx.MockTransport(api.async_handler))
            client = AsyncAmaiClient(KEY, http_client=http, spend_journal=url)
            assert client.spend_journal == f"postgresql://amai@127.0.0.1:{port}/nowhere"
            with pytest.raises(SpendJournalError) as caught:
                async with client.metered("dub", 3):
                    pass
            assert "secret-pw" not in str(caught.value)
            assert "secret-pw" not in repr(client._journal)
            await http.aclose()

        asyncio.run(main())
        assert api.calls.call_count == 0


@contextlib.contextmanager
def socket_bound() -> Iterator[int]:
    """A loopback port that is bound but never accepts: connections to it fail."""
    import socket

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    try:
        yield sock.getsockname()[1]
    finally:
        sock.close()
