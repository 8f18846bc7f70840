"""`FakeAmaiServer`: the offline AMAImedia API, its accounts, ledger and faults."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, ClassVar, Final, TypedDict

import httpx

from amaimedia import AmaiClient, AsyncAmaiClient, TimeoutTypes

from ._app import Outcome, RecordedRequest, handle
from ._faults import FaultQueues, make_fault
from ._ledger import Account, Ledger, SpendRecord
from ._pricing import DEFAULT_PRICES, merge_prices
from ._transport import async_transport, sync_transport

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from amaimedia._journal import JournalTarget

__all__ = ["ClientOptions", "FakeAmaiServer"]

_DEFAULT_BALANCE: Final = 10_000


class ClientOptions(TypedDict, total=False):
    """The client settings that `FakeAmaiServer.client()` and `async_client()` pass on."""

    timeout: TimeoutTypes
    max_retries: int
    max_retry_after: float
    spend_journal: JournalTarget | None


class FakeAmaiServer:
    """The AMAImedia API, offline: accounts, keys, balances and a spend ledger in memory.

    It answers `check` and `spend` as the API documents, in process (through
    `httpx.MockTransport`, no socket) or over real loopback HTTP with `serve()`, both
    from the same ledger. Faults (rate limits, 5xx, HTML pages, cut connections, slow
    answers) can be queued per endpoint. Safe to use from many threads and tasks at once.

    ```python
    from amaimedia.testing import FakeAmaiServer

    fake = FakeAmaiServer()
    key = fake.create_key(balance=100)
    with fake.client(key) as client:
        client.spend("dub", units=2, reference="job-1")  # 80 tokens
    assert fake.balance(key) == 20
    ```

    A `check` that the balance does not cover answers `allowed: false` with
    `balance_after` equal to the current balance, unchanged: nothing would be spent.

    Args:
        prices: Prices in tokens per unit, laid over `DEFAULT_PRICES`: to change a
            price, or to add a tool. Every price must be a positive int.

    Raises:
        TypeError: `prices` is not a mapping of tool names to ints.
        ValueError: A tool name is empty or holds whitespace, or a price is not positive.
    """

    DEFAULT_PRICES: ClassVar[Mapping[str, int]] = DEFAULT_PRICES
    """Tokens per unit of each documented tool: chat 5, image 20, voice_clone 2, dub 40,
    music 30, sfx 10, speech2text 8, translate 3."""

    BASE_URL: ClassVar[str] = "https://fake.amaimedia.invalid"
    """The base URL of the in-process clients; `.invalid` can never reach a real host."""

    def __init__(self, *, prices: Mapping[str, int] | None = None) -> None:
        self._lock = threading.Lock()
        self._ledger = Ledger(merge_prices(prices))
        self._faults = FaultQueues()
        self._requests: list[RecordedRequest] = []

    # --- accounts -------------------------------------------------------------------------

    @property
    def prices(self) -> Mapping[str, int]:
        """The price table in use (read-only): tokens per unit, by tool."""
        return self._ledger.prices

    def create_key(self, *, balance: int = _DEFAULT_BALANCE) -> str:
        """Open a new account holding `balance` tokens, and return its API key.

        The key looks like a real one (`amai_live_…`). Like the real API, the fake keeps
        only a hash of it: the string returned is the only copy.

        Args:
            balance: The tokens the account starts with, 0 or more; 10,000 by default.

        Returns:
            The new key, for `client()`, `async_client()` or an `Authorization` header.

        Raises:
            TypeError: `balance` is not an int.
            ValueError: `balance` is negative.
        """
        _check_tokens("balance", balance, minimum=0)
        with self._lock:
            return self._ledger.open_account(balance)

    def account_id(self, key: str) -> str:
        """The id of the key's account, as `SpendRecord.account` shows it (`"acct_1"`).

        Raises:
            ValueError: This fake did not create the key.
        """
        with self._lock:
            return self._account(key).id

    def balance(self, key: str) -> int:
        """The current balance of the key's account, in tokens.

        Raises:
            ValueError: This fake did not create the key.
        """
        with self._lock:
            return self._account(key).balance

    def top_up(self, key: str, tokens: int) -> int:
        """Add `tokens` to the key's account (a revoked key's account too).

        Returns:
            The new balance.

        Raises:
            TypeError: `tokens` is not an int.
            ValueError: `tokens` is not positive, or this fake did not create the key.
        """
        _check_tokens("tokens", tokens, minimum=1)
        with self._lock:
            account = self._account(key)
            account.balance += tokens
            return account.balance

    def revoke(self, key: str) -> None:
        """Revoke the key: from its next request on, it gets 401 `auth_required`.

        Raises:
            ValueError: This fake did not create the key.
        """
        with self._lock:
            self._account(key).revoked = True

    def suspend(self, key: str) -> None:
        """Suspend the key's account: its requests get 403 `forbidden`.

        Raises:
            ValueError: This fake did not create the key.
        """
        with self._lock:
            self._account(key).suspended = True

    def _account(self, key: str) -> Account:
        if not isinstance(key, str):
            raise TypeError(f"key must be a str, got {type(key).__name__}")
        account = self._ledger.lookup(key)
        if account is None:
            # The key itself is never quoted: it may be a real one passed by mistake.
            raise ValueError(
                "unknown API key: this FakeAmaiServer did not create it; use create_key()"
            )
        return account

    # --- what happened --------------------------------------------------------------------

    @property
    def spends(self) -> list[SpendRecord]:
        """The ledger: one row per spend that charged, oldest first (a copy).

        A replayed reference and a refused spend add no row.
        """
        with self._lock:
            return list(self._ledger.spends)

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request received, oldest first (a copy), whatever its answer."""
        with self._lock:
            return list(self._requests)

    # --- faults ---------------------------------------------------------------------------

    def fail_next(
        self,
        endpoint: str,
        *,
        status: int | None = None,
        body: bytes | str | Mapping[str, Any] | None = None,
        content_type: str | None = None,
        retry_after: float | str | None = None,
        headers: Mapping[str, str] | None = None,
        delay: float = 0.0,
        drop: bool = False,
        drop_after_commit: bool = False,
        times: int = 1,
    ) -> None:
        """Queue a fault for the next request (or `times` requests) to `endpoint`.

        Faults are used first-in, first-out, one per request, before anything else
        (authentication included). Examples:

        ```python
        fake.fail_next("spend", status=429, retry_after=1)
        fake.fail_next("spend", status=503, body=b"<html>", content_type="text/html")
        fake.fail_next("check", status=302, headers={"location": "https://elsewhere.example/"})
        fake.fail_next("spend", drop_after_commit=True)  # charged, then no answer
        fake.fail_next("check", drop=True)  # no answer, nothing processed
        fake.fail_next("check", delay=2.0)  # answered normally, 2 s late
        ```

        Args:
            endpoint: `"check"` or `"spend"`.
            status: Answer with this status (200-599) instead of processing the request.
            body: The body of that answer: bytes, text, or a mapping sent as JSON. By
                default the API's JSON error shape, with `rate_limited` for 429,
                `server_error` for 5xx, and so on.
            content_type: The `Content-Type` of that answer (default `application/json`).
            retry_after: The `Retry-After` header of that answer: seconds, or a header
                value as is (an HTTP date).
            headers: Extra headers of that answer, such as `{"cf-ray": "8a1b-LHR"}`, a
                `location` or a `content-encoding`, sent as given (the body is not
                encoded for you). Not for the headers the fake writes itself:
                `content-type` and `retry-after` (give `content_type`, `retry_after`),
                `content-length`, `transfer-encoding`, `connection` and `x-request-id`.
            delay: Seconds to hold the answer back. The request is processed when it
                arrives; only its answer is late. Over `serve()` this can exceed a
                client's timeout; in process, it simply sleeps.
            drop: Cut the connection without processing or answering the request.
            drop_after_commit: Process the request (a spend charges), then cut the
                connection without answering: the "did it charge?" case.
            times: Queue this many copies of the fault.

        Raises:
            ValueError: An impossible value or combination (a `status` with `drop`,
                a `body` or `headers` without a `status`, no fault at all), or a header
                the fake writes itself.
            TypeError: An argument has the wrong type.
        """
        fault = make_fault(
            status=status,
            body=body,
            content_type=content_type,
            retry_after=retry_after,
            headers=headers,
            delay=delay,
            drop=drop,
            drop_after_commit=drop_after_commit,
        )
        with self._lock:
            self._faults.push(endpoint, fault, times)

    def reset_faults(self) -> None:
        """Forget every queued fault, on both endpoints."""
        with self._lock:
            self._faults.clear()

    # --- ways in --------------------------------------------------------------------------

    def _dispatch(
        self, method: str, target: str, headers: Iterable[tuple[str, str]], body: bytes
    ) -> Outcome:
        with self._lock:
            return handle(
                self._ledger,
                self._faults,
                self._requests,
                method=method,
                target=target,
                headers=headers,
                body=body,
            )

    def transport(self) -> httpx.MockTransport:
        """An `httpx.MockTransport` for an `httpx.Client` of your own, served by this fake."""
        return sync_transport(self._dispatch)

    def async_transport(self) -> httpx.MockTransport:
        """An `httpx.MockTransport` for an `httpx.AsyncClient` of your own."""
        return async_transport(self._dispatch)

    def client(
        self, key: str, *, base_url: str = BASE_URL, **options: Unpack[ClientOptions]
    ) -> AmaiClient:
        """An `AmaiClient` wired to this fake in process: no socket, no network.

        ```python
        with fake.client(key, max_retries=0, spend_journal="spends.sqlite3") as client:
            client.spend("chat")
        ```

        Args:
            key: The API key to send; one from `create_key()`, or any other string to
                test how your code handles `AuthenticationError`.
            base_url: The URL the client reports; requests never leave the process.
            **options: `timeout`, `max_retries`, `max_retry_after` and `spend_journal`,
                as for `AmaiClient` (the client's defaults when left out). A journal
                tests that your app replays what a crash or an outage left pending.

        Returns:
            The client. Closing it is good form, though it holds no connection.
        """
        http = httpx.Client(transport=self.transport())
        return AmaiClient(key, base_url=base_url, http_client=http, **options)

    def async_client(
        self, key: str, *, base_url: str = BASE_URL, **options: Unpack[ClientOptions]
    ) -> AsyncAmaiClient:
        """An `AsyncAmaiClient` wired to this fake in process; see `client()`.

        Args:
            key: The API key to send.
            base_url: The URL the client reports; requests never leave the process.
            **options: As for `client()`.

        Returns:
            The client; fault delays wait with `asyncio.sleep`.
        """
        http = httpx.AsyncClient(transport=self.async_transport())
        return AsyncAmaiClient(key, base_url=base_url, http_client=http, **options)

    def serve(self, *, port: int = 0) -> AbstractContextManager[str]:
        """Serve this fake over real HTTP on `127.0.0.1` for the length of a `with` block.

        The same accounts, ledger and faults answer there as in process, over HTTP/1.1
        with keep-alive. Use it for what only shows on a socket (timeouts, cut
        connections), or for code that cannot take an `http_client`:

        ```python
        with fake.serve() as base_url:  # "http://127.0.0.1:<port>"
            client = AmaiClient(api_key=key, base_url=base_url)
        ```

        Leaving the block, even by an exception, stops the server, ends open
        connections, and frees the port.

        Args:
            port: The port to listen on; 0 (the default) picks a free one.

        Returns:
            A context manager that yields the base URL.

        Raises:
            OSError: On entering: the port cannot be bound.
            TypeError: `port` is not an int.
            ValueError: `port` is not between 0 and 65535.
        """
        if isinstance(port, bool) or not isinstance(port, int):
            raise TypeError(f"port must be an int, got {type(port).__name__}")
        if not 0 <= port <= 65535:
            raise ValueError(f"port must be between 0 and 65535, got {port}")
        # Imported here: http.server is needed only by tests that use a socket.
        from ._http import serve

        return serve(self._dispatch, port)

    def __repr__(self) -> str:
        with self._lock:
            return (
                f"FakeAmaiServer(accounts={self._ledger.account_count}, "
                f"spends={len(self._ledger.spends)}, requests={len(self._requests)})"
            )


def _check_tokens(name: str, value: object, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int number of tokens, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be {minimum} or more tokens, got {value}")
