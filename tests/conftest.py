"""Fixtures of the whole suite: a clean environment, both clients, and the two doubles.

- `api`: a respx router answering like the API, for in-process tests (`tests/answers.py`).
- `loopback`: the SDK's own `FakeAmaiServer` on a real socket, for what only a wire shows.
- `harness`: runs one test body against the sync and the async client.
- `postgres_server`, `postgres_url`: a real PostgreSQL server and a fresh database on it
  (`tests/postgres.py`).
"""

from __future__ import annotations

import asyncio
import inspect
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import respx

from amaimedia import AmaiClient, AsyncAmaiClient
from amaimedia.testing import FakeAmaiServer

from .answers import KEY, api_router
from .postgres import postgres_server, postgres_url  # noqa: F401 (fixtures, registered here)

Client = AmaiClient | AsyncAmaiClient

_PROXY_VARIABLES = {"http_proxy", "https_proxy", "all_proxy", "no_proxy"}
_CERTIFICATE_VARIABLES = {"SSL_CERT_FILE", "SSL_CERT_DIR"}


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never depend on the machine's AMAI_*, proxy or certificate variables.

    The SDK's pools honour HTTP(S)_PROXY, which would route the loopback tests through a
    proxy, and SSL_CERT_FILE / SSL_CERT_DIR, which decide the certificates trusted.
    """
    for name in list(os.environ):
        proxy = name.lower() in _PROXY_VARIABLES
        if name.startswith("AMAI_") or proxy or name in _CERTIFICATE_VARIABLES:
            monkeypatch.delenv(name)


class Harness:
    """Runs one test body against either client.

    `harness.run(client.check("chat"))` returns the result for the sync client, and
    awaits the coroutine on the harness's event loop for the async one. Waits between
    retries are recorded in `sleeps` instead of slept.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.is_async = kind == "async"
        self.sleeps: list[float] = []
        self._loop = asyncio.new_event_loop() if self.is_async else None
        self._clients: list[Client] = []
        self._http_clients: list[httpx.Client | httpx.AsyncClient] = []

    @property
    def client_class(self) -> type[Client]:
        return AsyncAmaiClient if self.is_async else AmaiClient

    def http_client(self, api: respx.Router | None = None, **kwargs: Any) -> Any:
        """An httpx client of the right kind, answered by the `api` router when given."""
        if api is not None:
            handler = api.async_handler if self.is_async else api.handler
            kwargs["transport"] = httpx.MockTransport(handler)
        http = httpx.AsyncClient(**kwargs) if self.is_async else httpx.Client(**kwargs)
        self._http_clients.append(http)
        return http

    def client(self, api: respx.Router | None = None, **options: Any) -> Any:
        """A client on `api` (a fresh `api_router()` if None), with the test key by default."""
        if "http_client" not in options:
            options["http_client"] = self.http_client(api if api is not None else api_router())
        options.setdefault("api_key", KEY)
        client = self.client_class(**options)
        self.record_sleeps(client)
        self._clients.append(client)
        return client

    def record_sleeps(self, client: Client) -> None:
        if self.is_async:

            async def sleep(seconds: float) -> None:
                self.sleeps.append(seconds)

            client._sleep = sleep  # type: ignore[assignment,method-assign]
        else:
            client._sleep = self.sleeps.append  # type: ignore[assignment,method-assign]

    def run(self, value: Any) -> Any:
        if inspect.isawaitable(value):
            assert self._loop is not None
            return self._loop.run_until_complete(value)
        return value

    def close(self) -> None:
        for client in self._clients:
            self.run(client.aclose() if isinstance(client, AsyncAmaiClient) else client.close())
        for http in self._http_clients:
            self.run(http.aclose() if isinstance(http, httpx.AsyncClient) else http.close())
        if self._loop is not None:
            _close_like_asyncio_run(self._loop)


def _close_like_asyncio_run(loop: asyncio.AbstractEventLoop) -> None:
    """Close `loop` as `asyncio.run()` closes its own: the tasks left end first.

    An async generator left unfinished (a body refused mid-stream) is closed by a task
    its finalizer schedules; closing the loop before that task runs makes Python 3.13
    warn that a coroutine was never awaited. `asyncio.run()` lets them run, and so does
    this.
    """
    try:
        pending = asyncio.all_tasks(loop)
        for task in pending:
            task.cancel()
        if pending:
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_asyncgens())
    finally:
        loop.close()


@pytest.fixture(params=["sync", "async"])
def harness(request: pytest.FixtureRequest) -> Iterator[Harness]:
    h = Harness(request.param)
    yield h
    h.close()


@pytest.fixture
def api() -> respx.Router:
    """A respx router answering like the API; see `tests/answers.py`."""
    return api_router()


@dataclass(frozen=True)
class Served:
    """A `FakeAmaiServer` on a real loopback socket, and a key it issued.

    The key's account holds 10,000 tokens, so a first `check("chat")` answers `QUOTE`.
    Faults are queued on `fake`; what arrived is in `fake.requests`.
    """

    fake: FakeAmaiServer
    key: str
    base_url: str


@pytest.fixture
def loopback() -> Iterator[Served]:
    fake = FakeAmaiServer()
    key = fake.create_key(balance=10_000)
    with fake.serve() as base_url:
        yield Served(fake, key, base_url)
