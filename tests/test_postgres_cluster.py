"""The PostgreSQL server the suite runs on (tests/postgres.py, scripts/postgres).

What the database tests rely on: the URL reaches the server the script started, with a
password that matters; each test's database is its own and goes away; a restart keeps the
data and the server answers again after it.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from urllib.parse import urlsplit

import psycopg
import pytest

from .postgres import SCRIPT, PostgresServer, drop_database, fresh_database, with_database


@pytest.fixture
def managed(postgres_server: PostgresServer) -> PostgresServer:
    """The session's server, when this helper made it (the checks below are of that)."""
    if not postgres_server.managed:
        pytest.skip("checks the cluster scripts/postgres makes, not AMAI_TEST_POSTGRES's")
    return postgres_server


@pytest.fixture
def scratch(managed: PostgresServer) -> Iterator[list[str]]:
    """A list of database URLs, each dropped after the test."""
    urls: list[str] = []
    yield urls
    for url in urls:
        drop_database(managed, url)


def database_names(server: PostgresServer) -> set[str]:
    with psycopg.connect(server.url) as conn:
        return {name for (name,) in conn.execute("SELECT datname FROM pg_database")}


def test_the_url_reaches_the_server_the_script_started(managed: PostgresServer) -> None:
    bindir = subprocess.run(
        [str(SCRIPT), "bindir"], capture_output=True, text=True, check=True
    ).stdout.strip()
    installed = subprocess.run(
        [f"{bindir}/postgres", "--version"], capture_output=True, text=True, check=True
    ).stdout
    match = re.search(r"\d+\.\d+", installed)
    assert match is not None, installed

    with psycopg.connect(managed.url) as conn:
        (version,) = conn.execute("SELECT version()").fetchone() or ("",)
        settings: dict[str, str] = dict(
            conn.execute(
                "SELECT name, setting FROM pg_settings"
                " WHERE name IN ('fsync', 'listen_addresses', 'server_version_num')"
            ).fetchall()
        )
        (superuser,) = conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = 'amai'")
    assert version.startswith(f"PostgreSQL {match.group()} "), (version, installed)
    assert int(settings["server_version_num"]) >= 150000
    assert settings["fsync"] == "on"
    assert settings["listen_addresses"] == "127.0.0.1"
    assert superuser == (True,)
    parts = urlsplit(managed.url)
    assert (parts.username, parts.hostname, parts.path) == ("amai", "127.0.0.1", "/postgres")


def test_a_wrong_password_is_refused(managed: PostgresServer) -> None:
    parts = urlsplit(managed.url)
    assert parts.password
    wrong = managed.url.replace(f":{parts.password}@", ":not-the-password@")
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(wrong, connect_timeout=5)
    without = managed.url.replace(f":{parts.password}@", "@")
    with pytest.raises(psycopg.OperationalError, match="password"):
        psycopg.connect(without, connect_timeout=5)


def test_postgres_url_is_an_empty_database_of_its_own(
    postgres_server: PostgresServer, postgres_url: str
) -> None:
    with psycopg.connect(postgres_url) as conn:
        (name,) = conn.execute("SELECT current_database()").fetchone() or ("",)
        tables = conn.execute("SELECT 1 FROM pg_tables WHERE schemaname = 'public'").fetchall()
    assert postgres_url == with_database(postgres_server.url, name)
    assert name.startswith("amai_test_")
    assert tables == []


def test_fresh_databases_are_distinct_and_dropped(
    managed: PostgresServer, scratch: list[str]
) -> None:
    first, second = fresh_database(managed), fresh_database(managed)
    scratch += [first, second]
    assert first != second
    with psycopg.connect(first, autocommit=True) as conn:
        conn.execute("CREATE TABLE only_here (n int)")
    with psycopg.connect(second) as conn:
        assert conn.execute("SELECT to_regclass('only_here')").fetchone() == (None,)

    # Dropped even with a connection still open to it: that connection is ended.
    names = {urlsplit(url).path.lstrip("/") for url in (first, second)}
    assert names <= database_names(managed)
    held = psycopg.connect(first)
    try:
        drop_database(managed, first)
        drop_database(managed, second)
        with pytest.raises(psycopg.OperationalError):
            held.execute("SELECT 1")
    finally:
        held.close()
    assert not names & database_names(managed)


def test_restart_keeps_the_data_and_accepts_connections_again(
    managed: PostgresServer, postgres_url: str
) -> None:
    url = managed.url
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE kept (n int)")
        conn.execute("INSERT INTO kept VALUES (1), (2)")
    held = psycopg.connect(postgres_url)
    try:
        managed.restart()
        with pytest.raises(psycopg.OperationalError):
            held.execute("SELECT 1")
    finally:
        held.close()

    assert managed.url == url
    with psycopg.connect(postgres_url) as conn:
        assert conn.execute("SELECT sum(n) FROM kept").fetchone() == (3,)


def test_stop_then_start(managed: PostgresServer) -> None:
    managed.stop()
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(managed.url, connect_timeout=5)
    managed.start()
    managed.start()  # already running: nothing to do
    with psycopg.connect(managed.url) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_a_test_may_leave_the_server_stopped(managed: PostgresServer, postgres_url: str) -> None:
    # postgres_url's teardown starts it again to drop the database; the next test needs it.
    managed.stop()


def test_the_server_is_up_after_a_test_left_it_stopped(postgres_url: str) -> None:
    with psycopg.connect(postgres_url) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_an_external_server_is_never_stopped_nor_restarted() -> None:
    external = PostgresServer.external("postgresql://someone:secret@127.0.0.1:1/postgres")
    assert not external.managed
    assert "secret" not in repr(external)
    for action in (external.stop, external.start, external.restart):
        with pytest.raises(pytest.fail.Exception, match="AMAI_TEST_POSTGRES"):
            action()
    external.close()  # nothing to remove
