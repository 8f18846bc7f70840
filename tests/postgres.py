"""A real, throwaway PostgreSQL server for the tests that need one.

- `postgres_server` (session): one `PostgresServer` for the whole session, a cluster of its
  own made by `scripts/postgres` on a free loopback port, removed when the session ends.
  With `AMAI_TEST_POSTGRES` set to a server's URL, that server is used instead, as it is:
  it is never stopped, restarted nor removed.
- `postgres_url` (function): the URL of a database made for the test alone, dropped after
  it (connections still open are ended).

When PostgreSQL is not installed and no URL is given, the fixtures fail, never skip: a
suite that skips its database tests on a machine without the server proves nothing there.

psycopg is imported when a database is made, not with this module, so that the rest of
the suite runs where psycopg is not installed.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "postgres"

# Read once, when the suite loads: tests/conftest.py clears AMAI_* variables for each test.
EXTERNAL_URL = os.environ.get("AMAI_TEST_POSTGRES", "").strip()

_SCRIPT_TIMEOUT = 120.0
_CONNECT_TIMEOUT = 10


class PostgresError(RuntimeError):
    """scripts/postgres failed; the message is what it printed on stderr."""


class PostgresServer:
    """A PostgreSQL server the tests connect to.

    A managed server (`PostgresServer.create()`) owns its cluster: `stop()`, `start()` and
    `restart()` stop and start it on the same port, with the same data; `close()` stops
    it and removes the cluster. An external one (`PostgresServer.external(url)`) is only
    connected to; stopping or restarting it fails the test.

    Attributes:
        url: `postgresql://amai:PASSWORD@127.0.0.1:PORT/postgres`, the password included,
            for the server's `postgres` database, as a superuser.
        directory: The cluster's directory, or None for an external server.
    """

    def __init__(self, url: str, directory: Path | None) -> None:
        self.url = url
        self.directory = directory

    @classmethod
    def create(cls) -> PostgresServer:
        """A new cluster in a new directory, started.

        The directory is made directly in /tmp when running as root, since the server runs
        as the `postgres` user, which cannot enter root's private temporary directories.

        Raises:
            PostgresError: PostgreSQL is not installed, or the server did not start.
        """
        parent = "/tmp" if os.geteuid() == 0 and os.path.isdir("/tmp") else None
        directory = Path(tempfile.mkdtemp(prefix="amai-postgres-", dir=parent))
        try:
            url = _script("start", str(directory))
        except BaseException:
            with contextlib.suppress(PostgresError):
                _script("stop", str(directory))
            shutil.rmtree(directory, ignore_errors=True)
            raise
        return cls(url, directory)

    @classmethod
    def external(cls, url: str) -> PostgresServer:
        """A server run by someone else, at `url`; it is never stopped nor changed."""
        if urlsplit(url).scheme not in ("postgres", "postgresql"):
            pytest.fail(
                f"AMAI_TEST_POSTGRES must be a postgresql:// URL, not {url!r}", pytrace=False
            )
        return cls(url, None)

    @property
    def managed(self) -> bool:
        """Whether this helper started the server (and may stop it)."""
        return self.directory is not None

    @property
    def port(self) -> int:
        """The server's TCP port."""
        port = urlsplit(self.url).port
        return 5432 if port is None else port

    def stop(self) -> None:
        """Stop the server (a fast shutdown: open connections are ended); keep its data."""
        _script("halt", str(self._own_directory("stop")))

    def start(self) -> None:
        """Start the stopped server again, on the same port, with the same data.

        Returns once it accepts connections; does nothing if it is running.
        """
        _script("start", str(self._own_directory("start")))
        self.wait_until_ready()

    def restart(self) -> None:
        """Stop the server (fast) and start it again, as `stop()` then `start()`."""
        self.stop()
        self.start()

    def close(self) -> None:
        """Stop the server and remove its cluster; nothing for an external server."""
        if self.directory is not None:
            _script("stop", str(self.directory))
            self.directory = None

    def wait_until_ready(self, timeout: float = 30.0) -> None:
        """Return once a connection to `url` succeeds.

        Raises:
            PostgresError: No connection succeeded within `timeout` seconds.
        """
        import psycopg

        deadline = time.monotonic() + timeout
        while True:
            try:
                psycopg.connect(self.url, connect_timeout=_CONNECT_TIMEOUT).close()
            except psycopg.OperationalError as error:
                if time.monotonic() > deadline:
                    message = f"PostgreSQL does not accept connections: {error}"
                    raise PostgresError(message) from error
                time.sleep(0.05)
            else:
                return

    def _own_directory(self, action: str) -> Path:
        if self.directory is None:
            pytest.fail(
                f"cannot {action} the PostgreSQL server at AMAI_TEST_POSTGRES: this helper "
                "stops and starts only the servers it made; unset AMAI_TEST_POSTGRES to run "
                "this test on a server of its own"
            )
        return self.directory

    def __repr__(self) -> str:
        where = f"managed, {self.directory}" if self.managed else "external"
        return f"<PostgresServer {_hide_password(self.url)} ({where})>"


def fresh_database(server: PostgresServer) -> str:
    """Create a database of a name no other has, and return its URL.

    The URL is the server's own, with the new database's name.
    """
    import psycopg
    from psycopg import sql

    name = f"amai_test_{os.getpid()}_{secrets.token_hex(6)}"
    with psycopg.connect(server.url, autocommit=True, connect_timeout=_CONNECT_TIMEOUT) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return with_database(server.url, name)


def drop_database(server: PostgresServer, url: str) -> None:
    """Drop the database `url` names, ending the connections still open to it."""
    import psycopg
    from psycopg import sql

    name = urlsplit(url).path.lstrip("/")
    with psycopg.connect(server.url, autocommit=True, connect_timeout=_CONNECT_TIMEOUT) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def with_database(url: str, name: str) -> str:
    """`url` with its database (the path) replaced by `name`."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


def _hide_password(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def _script(*arguments: str) -> str:
    """Run scripts/postgres; return its stdout, stripped."""
    try:
        done = subprocess.run(
            [str(SCRIPT), *arguments],
            capture_output=True,
            text=True,
            timeout=_SCRIPT_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired as error:
        raise PostgresError(f"scripts/postgres {' '.join(arguments)} hung") from error
    if done.returncode != 0:
        message = done.stderr.strip() or f"exit status {done.returncode}"
        raise PostgresError(message.removeprefix("scripts/postgres: "))
    return done.stdout.strip()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """The session's PostgreSQL server; see the module's docstring."""
    if EXTERNAL_URL:
        yield PostgresServer.external(EXTERNAL_URL)
        return
    server: PostgresServer | None = None
    try:
        server = PostgresServer.create()
    except PostgresError as error:
        failure = str(error)
    if server is None:
        # Outside the except clause: the failure alone, not the exception it came from.
        pytest.fail(failure, pytrace=False)
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """The URL of a new, empty database on the session's server, dropped after the test."""
    import psycopg

    url = fresh_database(postgres_server)
    try:
        yield url
    finally:
        try:
            drop_database(postgres_server, url)
        except psycopg.OperationalError:
            # The test left the server stopped: start it again, for the next tests too.
            if not postgres_server.managed:
                raise
            postgres_server.start()
            drop_database(postgres_server, url)
