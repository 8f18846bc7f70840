"""What only the PostgreSQL journal does: the outbox, claims tied to connections, outages.

Every test runs on a real PostgreSQL server (`tests/postgres.py`), in a database of its
own. The tests the two backends share are in `test_journal.py`; this file holds what the
SQLite file cannot do or does differently: a claim that ends with its worker's
connection, a database that goes away and comes back, a fork, the caller's own
transaction, and the password kept out of everything the SDK shows.
"""

from __future__ import annotations

import asyncio
import logging
import os
import pickle
import subprocess
import sys
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from amaimedia import (
    AmaiClient,
    AsyncAmaiClient,
    PostgresSpendJournal,
    ReplayReport,
    SpendFailedError,
    SpendJournalError,
)
from amaimedia._journal._postgres import _lock_keys
from amaimedia.testing import FakeAmaiServer
from tests.postgres import PostgresServer, drop_database, fresh_database

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = str(ROOT / "amaimedia")
# Module constants: a test's locals would show in the frames these tests inspect.
PLANTED_PASSWORD = "PLANTEDpgPassw0rd42"
# How long a poll may wait on a loaded machine; a bound, never a timing assertion.
DEADLINE = 30.0


@pytest.fixture
def fake() -> FakeAmaiServer:
    return FakeAmaiServer()


@pytest.fixture
def key(fake: FakeAmaiServer) -> str:
    return fake.create_key(balance=1_000_000)


class BeforeSpend(httpx.BaseTransport):
    """The fake's transport, calling `hook` as each spend arrives, before it is answered."""

    def __init__(self, fake: FakeAmaiServer, hook: Callable[[], None]) -> None:
        self._inner = fake.transport()
        self._hook = hook

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/spend"):
            self._hook()
        return self._inner.handle_request(request)


def hooked_client(
    fake: FakeAmaiServer, key: str, journal: str, hook: Callable[[], None]
) -> AmaiClient:
    http = httpx.Client(transport=BeforeSpend(fake, hook))
    return AmaiClient(
        key, base_url=FakeAmaiServer.BASE_URL, http_client=http, spend_journal=journal
    )


def password_of(url: str) -> str:
    return url.split("//", 1)[1].split("@", 1)[0].split(":", 1)[1]


def rows(url: str) -> list[dict[str, Any]]:
    with psycopg.connect(url) as db:
        cursor = db.execute("SELECT * FROM amaimedia_spends ORDER BY id")
        names = [column.name for column in cursor.description or []]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def sdk_frames_holding(exc: BaseException, secret: str) -> list[str]:
    """Frames of the SDK or its driver, in `exc` and its chain, whose locals show `secret`.

    The test's own frames hold the URL by design, and are left out.
    """
    found = []
    pending = [traceback.TracebackException.from_exception(exc, capture_locals=True)]
    seen: set[int] = set()
    while pending:
        te = pending.pop()
        if id(te) in seen:
            continue
        seen.add(id(te))
        for frame in te.stack:
            if "/tests/" in frame.filename:
                continue
            for name, value in (frame.locals or {}).items():
                if secret in value:
                    found.append(f"{frame.filename}:{frame.lineno} {frame.name}: {name}")
        pending.extend(t for t in (te.__cause__, te.__context__) if t is not None)
    return found


def assert_clean(exc: BaseException, secret: str) -> None:
    name = type(exc).__name__
    assert secret not in str(exc), f"str({name})"
    assert secret not in repr(exc), f"repr({name})"
    assert secret not in "".join(traceback.format_exception(exc)), f"traceback of {name}"
    assert sdk_frames_holding(exc, secret) == [], f"frame locals of {name}"


# -- the transactional outbox ------------------------------------------------------------


def test_a_spend_owed_in_a_committed_transaction_is_sent_once(
    postgres_url: str, fake: FakeAmaiServer, key: str
) -> None:
    client = fake.client(key, spend_journal=postgres_url)
    with psycopg.connect(postgres_url) as db:
        db.execute("CREATE TABLE results (job TEXT PRIMARY KEY)")
        db.commit()
        with db.transaction():
            db.execute("INSERT INTO results VALUES ('job-1')")
            reference = client.add_pending_spend(db, "dub", 3, reference="job-1")
            # Not committed yet: no other session sees what is owed.
            assert rows(postgres_url) == []
        assert reference == "job-1"
        assert [spend.reference for spend in client.pending_spends()] == ["job-1"]
        assert fake.spends == []  # owing sends nothing

        report = client.replay_pending()

    assert [charge.reference for charge in report] == ["job-1"]
    assert [(spend.reference, spend.units) for spend in fake.spends] == [("job-1", 3)]
    assert client.pending_spends() == []
    assert client.replay_pending() == []


def test_a_spend_owed_in_a_rolled_back_transaction_is_never_sent(
    postgres_url: str, fake: FakeAmaiServer, key: str
) -> None:
    client = fake.client(key, spend_journal=postgres_url)
    with psycopg.connect(postgres_url) as db:
        db.execute("CREATE TABLE results (job TEXT PRIMARY KEY)")
        db.commit()

        def save_then_fail() -> None:
            with db.transaction():
                db.execute("INSERT INTO results VALUES ('job-1')")
                client.add_pending_spend(db, "dub", 3, reference="job-1")
                raise RuntimeError("the work failed after its result was written")

        with pytest.raises(RuntimeError, match="the work failed"):
            save_then_fail()
        assert db.execute("SELECT count(*) FROM results").fetchone() == (0,)

    assert client.pending_spends() == []
    assert client.replay_pending() == []
    assert fake.spends == []


def test_the_async_outbox_writes_on_an_async_connection(
    postgres_url: str, fake: FakeAmaiServer, key: str
) -> None:
    async def owe_and_send() -> list[str]:
        client = fake.async_client(key, spend_journal=postgres_url)
        async with await psycopg.AsyncConnection.connect(postgres_url) as db:
            async with db.transaction():
                await client.add_pending_spend(db, "chat", reference="job-a")
            report = await client.replay_pending()
        await client.aclose()
        return [charge.reference for charge in report]

    assert asyncio.run(owe_and_send()) == ["job-a"]
    assert [spend.reference for spend in fake.spends] == ["job-a"]


def test_a_generated_reference_is_returned(
    postgres_url: str, fake: FakeAmaiServer, key: str
) -> None:
    client = fake.client(key, spend_journal=postgres_url)
    with psycopg.connect(postgres_url, autocommit=True) as db:
        reference = client.add_pending_spend(db, "chat")
    assert reference.startswith("req_")
    assert [spend.reference for spend in client.pending_spends()] == [reference]


def test_the_outbox_needs_a_postgresql_journal(
    tmp_path: Path, postgres_url: str, fake: FakeAmaiServer, key: str
) -> None:
    client = fake.client(key, spend_journal=tmp_path / "spends.sqlite3")
    with psycopg.connect(postgres_url) as db, pytest.raises(TypeError, match="PostgreSQL"):
        client.add_pending_spend(db, "chat")


def test_the_outbox_refuses_a_connection_of_the_wrong_kind(
    postgres_url: str, fake: FakeAmaiServer, key: str
) -> None:
    client = fake.client(key, spend_journal=postgres_url)
    with pytest.raises(TypeError, match=r"needs a psycopg\.Connection.*got str"):
        client.add_pending_spend("not a connection", "chat")  # type: ignore[arg-type]

    async def with_a_sync_connection() -> None:
        aclient = fake.async_client(key, spend_journal=postgres_url)
        with psycopg.connect(postgres_url) as db:
            await aclient.add_pending_spend(db, "chat")  # type: ignore[arg-type]

    with pytest.raises(TypeError, match=r"needs a psycopg\.AsyncConnection.*got Connection"):
        asyncio.run(with_a_sync_connection())


@pytest.mark.parametrize(
    ("arguments", "error"),
    [
        ({"tool": "chat", "units": 0}, ValueError),
        ({"tool": "", "units": 1}, ValueError),
        ({"tool": "chat", "units": "3"}, TypeError),
        ({"tool": "chat", "units": 1, "reference": ""}, ValueError),
    ],
)
def test_bad_outbox_arguments_write_nothing(
    postgres_url: str, fake: FakeAmaiServer, key: str, arguments: dict[str, Any], error: type
) -> None:
    client = fake.client(key, spend_journal=postgres_url)
    with psycopg.connect(postgres_url) as db:
        with pytest.raises(error):
            client.add_pending_spend(db, **arguments)
        # The caller's transaction is untouched: it can go on.
        assert db.execute("SELECT 1").fetchone() == (1,)
    assert rows(postgres_url) == []


# -- claims end with the worker's connection ---------------------------------------------

HOLDER = """
import sys, threading
from amaimedia import PostgresSpendJournal
journal = PostgresSpendJournal(sys.argv[1])
entry = journal.add("scope", "dub", 3, "job-1")
print("claimed" if journal.claim(entry) else "refused", entry, flush=True)
threading.Event().wait(120)
"""


@pytest.fixture
def holder(postgres_url: str) -> Iterator[subprocess.Popen[str]]:
    """A worker process that claimed `job-1`, then hangs on to the claim."""
    process = subprocess.Popen(
        [sys.executable, "-c", HOLDER, postgres_url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline().split()
        assert line, process.stderr.read() if process.stderr else ""
        assert line[0] == "claimed", line
        yield process
    finally:
        process.kill()
        process.communicate(timeout=DEADLINE)


def only_entry(url: str) -> int:
    [row] = rows(url)
    return int(row["id"])


def test_a_claim_of_a_live_worker_is_never_taken(
    postgres_url: str, holder: subprocess.Popen[str]
) -> None:
    journal = PostgresSpendJournal(postgres_url)
    entry = only_entry(postgres_url)
    assert not journal.claim(entry)
    assert not journal.claim_pending(entry)
    time.sleep(1)  # a slow worker is still not overtaken: there is no lease to run out
    assert not journal.claim_pending(entry)
    assert holder.poll() is None


def test_a_killed_workers_claim_is_free_at_once(
    postgres_url: str, holder: subprocess.Popen[str]
) -> None:
    journal = PostgresSpendJournal(postgres_url)
    entry = only_entry(postgres_url)
    assert not journal.claim(entry)

    holder.kill()
    holder.communicate(timeout=DEADLINE)
    killed = time.monotonic()
    while not journal.claim_pending(entry):
        assert time.monotonic() - killed < DEADLINE, "the dead worker's claim never ended"
        time.sleep(0.05)
    freed_after = time.monotonic() - killed
    # The server ends the session when the socket closes: seconds at most, no lease.
    assert freed_after < 10, f"claim freed only after {freed_after:.1f} s"


def test_a_replay_skips_what_a_live_block_is_sending(
    postgres_url: str, fake: FakeAmaiServer, key: str
) -> None:
    other = fake.client(key, spend_journal=PostgresSpendJournal(postgres_url))
    reports: list[ReplayReport] = []

    def replay_while_sending() -> None:
        if not reports:
            reports.append(other.replay_pending())

    client = hooked_client(fake, key, postgres_url, replay_while_sending)
    with client.metered("dub", 3, reference="job-1"):
        pass

    [report] = reports
    assert report == []
    assert [spend.reference for spend in report.held] == ["job-1"]
    assert [spend.reference for spend in fake.spends] == ["job-1"]


def test_two_journal_objects_in_one_process_claim_independently(postgres_url: str) -> None:
    first, second = PostgresSpendJournal(postgres_url), PostgresSpendJournal(postgres_url)
    entry = first.add("scope", "dub", 3, "job-1")
    assert first.claim(entry)
    assert not first.claim(entry)  # another thread of this process holds it
    assert not second.claim(entry)  # another session: another worker
    first.release(entry)
    assert second.claim(entry)
    second.release(entry)


def test_lock_keys_are_the_ones_the_server_computes(postgres_url: str) -> None:
    ids = [1, 2**31 - 1, 2**31, 2**32 - 1, 2**32, 2**32 + 5, 2**62 + 2**31 + 7, 2**63 - 1]
    with psycopg.connect(postgres_url) as db:
        for entry in ids:
            row = db.execute(
                "SELECT (%s # (%s::bigint >> 32))::int, "
                "(((%s::bigint & 4294967295) + 2147483648) %% 4294967296 - 2147483648)::int",
                (0x616D6169, entry, entry),
            ).fetchone()
            assert row == _lock_keys(entry), entry
    assert len({_lock_keys(entry) for entry in ids}) == len(ids)


def test_entries_written_and_claimed_at_once_are_never_sent_twice(
    postgres_url: str, fake: FakeAmaiServer, key: str
) -> None:
    """Blocks and a replay loop in another thread: no spend is sent by both."""
    with fake.serve() as base_url:
        client = AmaiClient(api_key=key, base_url=base_url, spend_journal=postgres_url)
        replayer = AmaiClient(
            api_key=key, base_url=base_url, spend_journal=PostgresSpendJournal(postgres_url)
        )
        stop = threading.Event()

        def replay_loop() -> None:
            while not stop.is_set():
                replayer.replay_pending()

        thread = threading.Thread(target=replay_loop)
        thread.start()
        try:
            for n in range(60):
                with client.metered("chat", reference=f"job-{n}"):
                    pass
        finally:
            stop.set()
            thread.join(DEADLINE)
            client.close()
            replayer.close()
        sent = Counter(
            request.body["reference"]
            for request in fake.requests
            if request.path.endswith("/spend")
        )
    assert sum(sent.values()) == 60, sent.most_common(3)
    assert max(sent.values()) == 1, sent.most_common(3)
    assert len(fake.spends) == 60


# -- the database goes away, and comes back ----------------------------------------------


@pytest.fixture
def restarts_allowed(postgres_server: PostgresServer) -> PostgresServer:
    if not postgres_server.managed:
        pytest.fail("these tests stop the server: unset AMAI_TEST_POSTGRES to run them")
    return postgres_server


def test_a_block_still_charges_while_the_database_is_down(
    postgres_url: str,
    restarts_allowed: PostgresServer,
    fake: FakeAmaiServer,
    key: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    client = fake.client(key, spend_journal=postgres_url)
    with client.metered("chat", reference="before"):
        pass

    restarts_allowed.stop()
    try:
        with (
            caplog.at_level(logging.WARNING, logger="amaimedia"),
            client.metered("chat", reference="during") as meter,
        ):
            pass
        assert meter.state == "charged"
        assert "the spend during is sent without a journal entry" in caplog.text
        assert password_of(postgres_url) not in caplog.text
    finally:
        restarts_allowed.start()

    # Back up: the journal reconnects by itself.
    with client.metered("chat", reference="after"):
        pass
    assert [spend.reference for spend in fake.spends] == ["before", "during", "after"]
    assert [row["state"] for row in rows(postgres_url)] == ["done", "done"]
    assert client.pending_spends() == []


def test_connections_left_idle_through_a_restart_are_replaced_before_use(
    postgres_url: str,
    restarts_allowed: PostgresServer,
    fake: FakeAmaiServer,
    key: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    client = fake.client(key, spend_journal=postgres_url)
    with client.metered("chat", reference="before"):
        pass
    restarts_allowed.restart()

    with caplog.at_level(logging.WARNING, logger="amaimedia"):
        with client.metered("chat", reference="after"):
            pass
        assert client.pending_spends() == []

    assert caplog.records == []  # journaled as usual: no "sent without a journal entry"
    assert [(row["reference"], row["state"]) for row in rows(postgres_url)] == [
        ("before", "done"),
        ("after", "done"),
    ]


def test_a_spend_that_fails_while_the_database_is_down_says_it_was_not_journaled(
    postgres_url: str, restarts_allowed: PostgresServer, fake: FakeAmaiServer, key: str
) -> None:
    client = fake.client(key, spend_journal=postgres_url, max_retries=0)
    fake.fail_next("spend", status=503)
    restarts_allowed.stop()
    try:
        with pytest.raises(SpendFailedError) as info, client.metered("chat"):
            pass
    finally:
        restarts_allowed.start()
    assert info.value.journaled is False
    assert_clean(info.value, password_of(postgres_url))


def test_a_restart_while_the_spend_is_in_flight_still_records_its_outcome(
    postgres_url: str,
    restarts_allowed: PostgresServer,
    fake: FakeAmaiServer,
    key: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    restarted: list[bool] = []

    def restart() -> None:
        if not restarted:
            restarted.append(True)
            restarts_allowed.restart()

    client = hooked_client(fake, key, postgres_url, restart)
    with (
        caplog.at_level(logging.WARNING, logger="amaimedia"),
        client.metered("dub", 3, reference="job-1") as meter,
    ):
        pass
    assert restarted
    assert meter.state == "charged"
    # The connection that held the claim died with the restart; the outcome is written
    # on a new one, and nothing is left to replay.
    assert caplog.records == []
    assert [(row["reference"], row["state"]) for row in rows(postgres_url)] == [("job-1", "done")]
    assert client.replay_pending() == []
    assert len(fake.spends) == 1


# -- fork --------------------------------------------------------------------------------


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_a_child_of_fork_has_its_own_connections(
    postgres_url: str, fake: FakeAmaiServer, key: str
) -> None:
    client = fake.client(key, spend_journal=postgres_url)
    with client.metered("chat", reference="parent-1"):
        pass
    journal = PostgresSpendJournal(postgres_url)
    entry = journal.add("scope", "dub", 3, "held-by-parent")
    assert journal.claim(entry)

    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        code = 1
        try:
            with client.metered("chat", reference="child-1"):
                pass
            # The parent's claim is the parent's: the child is another worker.
            code = 0 if not journal.claim(entry) else 3
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0

    # The child ended none of the parent's sessions: the parent's claim holds, and the
    # parent's connections still work.
    assert not PostgresSpendJournal(postgres_url).claim(entry)
    with client.metered("chat", reference="parent-2"):
        pass
    # The child's block was journaled and settled in the database both share (the
    # in-process fake it charged is the child's own copy).
    states = {row["reference"]: row["state"] for row in rows(postgres_url)}
    assert states == {
        "parent-1": "done",
        "child-1": "done",
        "held-by-parent": "pending",
        "parent-2": "done",
    }


# -- the password ------------------------------------------------------------------------


def wrong_password_url(server: PostgresServer) -> str:
    port = server.url.rsplit(":", 1)[1].split("/", 1)[0]
    return f"postgresql://amai:{PLANTED_PASSWORD}@127.0.0.1:{port}/postgres"


def test_a_refused_password_is_an_error_that_never_shows_it(
    postgres_server: PostgresServer,
) -> None:
    with pytest.raises(SpendJournalError, match="password authentication failed") as info:
        AmaiClient(api_key="amai_live_x" * 3, spend_journal=wrong_password_url(postgres_server))
    assert_clean(info.value, PLANTED_PASSWORD)


def test_a_server_that_cannot_be_reached_is_an_error_that_never_shows_the_password() -> None:
    url = f"postgresql://amai:{PLANTED_PASSWORD}@127.0.0.1:1/app?connect_timeout=2"
    with pytest.raises(SpendJournalError, match=r"postgresql://amai@127\.0\.0\.1:1/app") as info:
        PostgresSpendJournal(url)
    assert_clean(info.value, PLANTED_PASSWORD)


def test_a_connection_string_that_cannot_be_parsed_is_not_quoted() -> None:
    with pytest.raises(SpendJournalError, match="cannot parse") as info:
        PostgresSpendJournal(f"host=127.0.0.1 password={PLANTED_PASSWORD} bogus_option=1 '")
    assert_clean(info.value, PLANTED_PASSWORD)


def test_the_password_shows_nowhere_a_client_shows_its_journal(
    postgres_url: str, fake: FakeAmaiServer, key: str, caplog: pytest.LogCaptureFixture
) -> None:
    password = password_of(postgres_url)
    with caplog.at_level(logging.DEBUG, logger="amaimedia"):
        client = fake.client(key, spend_journal=postgres_url)
        with client.metered("chat"):
            pass
    journal = PostgresSpendJournal(postgres_url)
    shown = [
        repr(client),
        str(client.spend_journal),
        repr(journal),
        journal.location,
        repr(vars(client)),
        caplog.text,
    ]
    assert all(password not in text for text in shown)
    assert client.spend_journal == journal.location
    assert journal.location.startswith("postgresql://amai@127.0.0.1:")
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(journal)


def test_a_failure_after_construction_never_shows_the_password(
    postgres_url: str, restarts_allowed: PostgresServer
) -> None:
    journal = PostgresSpendJournal(postgres_url)
    restarts_allowed.stop()
    try:
        with pytest.raises(SpendJournalError) as info:
            journal.pending("scope")
    finally:
        restarts_allowed.start()
    assert_clean(info.value, password_of(postgres_url))


# -- the tables --------------------------------------------------------------------------


def test_workers_opening_a_new_database_at_once_make_one_schema(postgres_url: str) -> None:
    opened: list[PostgresSpendJournal] = []
    errors: list[BaseException] = []
    start = threading.Barrier(8)

    def open_one() -> None:
        start.wait()
        try:
            opened.append(PostgresSpendJournal(postgres_url))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=open_one) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(DEADLINE)
    assert errors == []
    assert len(opened) == 8
    with psycopg.connect(postgres_url) as db:
        assert db.execute("SELECT name, version FROM amaimedia_schema").fetchall() == [
            ("spends", 2)
        ]
        [(salt,)] = db.execute("SELECT salt FROM amaimedia_schema").fetchall()
    assert {journal.salt for journal in opened} == {salt}  # one journal, one salt


def test_tables_that_exist_need_no_create_privilege(postgres_url: str) -> None:
    PostgresSpendJournal(postgres_url)  # the owner creates the tables
    with psycopg.connect(postgres_url, autocommit=True) as db:
        db.execute("CREATE ROLE app_worker LOGIN PASSWORD 'worker-pw'")
        db.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
        db.execute(
            "GRANT SELECT, INSERT, UPDATE ON amaimedia_spends, amaimedia_schema TO app_worker"
        )
        db.execute("GRANT USAGE ON SEQUENCE amaimedia_spends_id_seq TO app_worker")
        db.execute("GRANT DELETE ON amaimedia_spends TO app_worker")
    worker_url = postgres_url.replace(
        postgres_url.split("//", 1)[1].split("@", 1)[0], "app_worker:worker-pw"
    )
    journal = PostgresSpendJournal(worker_url)
    entry, claimed = journal.add_and_claim("scope", "chat", 1, "r")
    assert claimed
    journal.mark_done(entry, 5)
    journal.close()
    with psycopg.connect(postgres_url, autocommit=True) as db:
        db.execute("DROP OWNED BY app_worker")
        db.execute("DROP ROLE app_worker")


def test_the_async_client_uses_the_journal_off_its_event_loop(
    postgres_url: str, fake: FakeAmaiServer, key: str
) -> None:
    """Every journal call of an async block runs in a worker thread, not on the loop."""
    loop_threads: set[int] = set()
    journal_threads: list[int] = []
    journal = PostgresSpendJournal(postgres_url)
    for name in ("add_and_claim", "mark_done", "pending", "claim_pending", "release"):
        method = getattr(journal, name)

        def spy(*args: Any, __method: Any = method, **kwargs: Any) -> Any:
            journal_threads.append(threading.get_ident())
            return __method(*args, **kwargs)

        setattr(journal, name, spy)

    async def run() -> None:
        loop_threads.add(threading.get_ident())
        client: AsyncAmaiClient = fake.async_client(key, spend_journal=journal)
        async with client.metered("chat"):
            pass
        await client.replay_pending()
        await client.aclose()

    asyncio.run(run())
    assert journal_threads
    assert loop_threads.isdisjoint(journal_threads)


# -- the connections of one process ------------------------------------------------------


@pytest.mark.parametrize(
    ("arguments", "error", "message"),
    [
        ({"conninfo": 123}, TypeError, "needs a connection string, got int"),
        ({"max_connections": 0}, ValueError, "max_connections must be 1 or more, got 0"),
        ({"max_connections": True}, TypeError, "max_connections must be an int, got bool"),
        ({"max_connections": 2.0}, TypeError, "max_connections must be an int, got float"),
    ],
)
def test_impossible_arguments_are_refused_before_connecting(
    arguments: dict[str, Any], error: type, message: str
) -> None:
    arguments.setdefault("conninfo", f"postgresql://amai:{PLANTED_PASSWORD}@127.0.0.1:1/app")
    with pytest.raises(error, match=message):
        PostgresSpendJournal(**arguments)


def test_a_unix_socket_shows_as_its_directory() -> None:
    conninfo = f"host=/nonexistent/run user=app password={PLANTED_PASSWORD} dbname=jobs"
    with pytest.raises(SpendJournalError, match=r"postgresql://app@\[/nonexistent/run\]/jobs"):
        PostgresSpendJournal(conninfo)


def test_writing_an_entry_this_process_holds_does_not_claim_it_twice(postgres_url: str) -> None:
    journal, other = PostgresSpendJournal(postgres_url), PostgresSpendJournal(postgres_url)
    entry = journal.add("scope", "dub", 3, "job-1")
    assert journal.claim(entry)

    assert journal.add_and_claim("scope", "dub", 3, "job-1") == (entry, False)

    journal.release(entry)  # one release ends it: the lock was not taken a second time
    assert other.claim(entry)
    other.release(entry)


def test_a_journal_opens_no_more_connections_than_allowed(postgres_url: str) -> None:
    journal = PostgresSpendJournal(postgres_url, max_connections=1)
    errors: list[BaseException] = []

    def blocks(worker: int) -> None:
        try:
            for n in range(15):
                entry, claimed = journal.add_and_claim("scope", "chat", 1, f"w{worker}-{n}")
                assert claimed
                journal.mark_done(entry, 5)
                journal.release(entry)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=blocks, args=(worker,)) for worker in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(DEADLINE)
    assert errors == []
    with psycopg.connect(postgres_url) as db:
        [(opened,)] = db.execute(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE application_name = 'amaimedia' AND datname = current_database()"
        ).fetchall()
        [(done,)] = db.execute(
            "SELECT count(*) FROM amaimedia_spends WHERE state = 'done'"
        ).fetchall()
    assert opened == 1
    assert done == 90


def test_a_statement_that_fails_leaves_the_connection_in_use(postgres_url: str) -> None:
    journal = PostgresSpendJournal(postgres_url, max_connections=1)
    journal.add("scope", "dub", 3, "job-1")
    with psycopg.connect(postgres_url, autocommit=True) as db:
        db.execute("ALTER TABLE amaimedia_spends RENAME TO amaimedia_spends_away")
        with pytest.raises(SpendJournalError, match="cannot read the spend journal"):
            journal.pending("scope")
        db.execute("ALTER TABLE amaimedia_spends_away RENAME TO amaimedia_spends")
    # The same connection, put back after the error, works again.
    assert [entry.spend.reference for entry in journal.pending("scope")] == ["job-1"]


def test_the_outbox_reports_a_database_without_the_journal(
    postgres_url: str, postgres_server: PostgresServer, fake: FakeAmaiServer, key: str
) -> None:
    client = fake.client(key, spend_journal=postgres_url)
    elsewhere = fresh_database(postgres_server)
    try:
        with psycopg.connect(elsewhere) as db:
            with pytest.raises(SpendJournalError, match="amaimedia_spends"):
                client.add_pending_spend(db, "chat")
            assert db.info.transaction_status == psycopg.pq.TransactionStatus.INERROR
            db.rollback()

        async def owe_elsewhere() -> None:
            aclient = fake.async_client(key, spend_journal=postgres_url)
            async with await psycopg.AsyncConnection.connect(elsewhere) as adb:
                await aclient.add_pending_spend(adb, "chat")

        with pytest.raises(SpendJournalError, match="amaimedia_spends"):
            asyncio.run(owe_elsewhere())
    finally:
        drop_database(postgres_server, elsewhere)


def test_an_outcome_refused_for_an_entry_held_elsewhere_leaves_the_journal_usable(
    postgres_url: str,
) -> None:
    holder, journal = PostgresSpendJournal(postgres_url), PostgresSpendJournal(postgres_url)
    entry, claimed = holder.add_and_claim("scope", "dub", 3, "job-1")
    assert claimed
    with psycopg.connect(postgres_url, autocommit=True) as db:
        db.execute(
            "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN RAISE EXCEPTION 'the test refuses updates'; END $$"
        )
        db.execute(
            "CREATE TRIGGER refuse BEFORE UPDATE ON amaimedia_spends "
            "FOR EACH ROW EXECUTE FUNCTION refuse()"
        )
        # Not this journal's claim: only the update is tried, and it fails.
        with pytest.raises(SpendJournalError, match="the test refuses updates"):
            journal.mark_done(entry, 120)
        db.execute("DROP TRIGGER refuse ON amaimedia_spends")
    # Its connection was put back out of the failed transaction: it works.
    assert [e.spend.reference for e in journal.pending("scope")] == ["job-1"]
    assert not journal.claim(entry)  # the holder's claim was never touched
    holder.mark_done(entry, 120)
    assert journal.pending("scope") == []
