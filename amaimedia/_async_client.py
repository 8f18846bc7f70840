"""`AsyncAmaiClient`: the client itself, with only the lines that wait on I/O.

Everything else it shares with its twin lives once, in `_base_client.py`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from datetime import timedelta
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import httpx

from . import _lazy_names
from ._base_client import BaseClient, build_models, models_built
from ._constants import (
    DEFAULT_MAX_AGE,
    DEFAULT_MAX_RETRIES,
    DEFAULT_MAX_RETRY_AFTER,
    DEFAULT_TIMEOUT,
)
from ._logging import configure_from_env
from ._offload import run_in_thread
from ._types import TimeoutTypes, ToolName, Units

# The rest is imported where it is used, so that `from amaimedia import AmaiClient` loads
# little more than httpx and pydantic do (see _base_client.py).
if TYPE_CHECKING:
    import psycopg

    from ._async_metered import AsyncMeteredBlock
    from ._base_client import Answer
    from ._config import ClientConfig, TransportOptions
    from ._deadline import Deadline
    from ._events import Hooks
    from ._journal import JournalTarget, PendingSpend, ScopedJournal
    from ._journal._replay import ReplayReport
    from ._metered_base import ReferenceArgument
    from ._models import Charge, Quote
    from ._observer import CallInfo
    from ._outgoing import Outgoing
    from ._raw_response import RawResponse
    from ._transports._direct import DirectPath  # async only
    from ._types import VerifyTypes

__all__ = ["AsyncAmaiClient", "AsyncRawResponseClient"]

_T = TypeVar("_T")
_SelfT = TypeVar("_SelfT", bound="AsyncAmaiClient")


class AsyncAmaiClient(BaseClient[httpx.AsyncClient]):
    """A client for the AMAImedia API in asyncio code.

    One instance is safe to share between tasks, and should be: it holds the connection
    pool. Close it with `aclose()`, or use it as a context manager:

    ```python
    async with AsyncAmaiClient() as aclient:
        quote = await aclient.check("chat")
    ```

    Args:
        api_key: The secret `amai_live_…` key. Defaults to the `AMAI_API_KEY`
            environment variable; a client without a key cannot be built.
        base_url: The API's root URL. Defaults to `AMAI_BASE_URL`, then to
            `https://api.amaimedia.com`. Plain `http://` is refused except on loopback.
        timeout: Seconds for each phase of an attempt (connecting, sending, and the
            answer: its headers, then its body as a whole), an `httpx.Timeout` to set
            them one by one, or `None`.
        max_retries: How many times to retry a request that failed in a way worth
            retrying (connection errors, timeouts, 408, 429, 5xx).
        max_retry_after: The longest `Retry-After`, in seconds (finite), that the
            client waits for; a longer one raises at once.
        total_timeout: The longest a whole call may take, in seconds, every attempt
            and every wait between them included; `None` (the default) for no limit.
        http_client: An `httpx.AsyncClient` of your own (custom transports, mocks).
            You keep ownership: the SDK does not close it, and its proxies,
            certificates and fork safety are yours to set.
        verify: How the client's own pool checks certificates: `True` (against
            `SSL_CERT_FILE` or `SSL_CERT_DIR` when set, else certifi's bundle), a CA
            file or directory, an `ssl.SSLContext`, or `False` to check nothing (a
            warning is logged, as for a context that checks nothing).
        proxy: A proxy URL for every `https://` request of the client's own pool,
            instead of `HTTPS_PROXY` / `ALL_PROXY` / `NO_PROXY`. Plain `http://` (only
            ever to the loopback) never goes through a proxy.
        trust_env: Whether the client's own pool reads the proxy and certificate
            variables above.
        transport: `"aiohttp"` sends the requests of the client's own pool with
            aiohttp (`pip install amaimedia[aiohttp]`): several times faster than
            httpx's own transport, the default `"httpx"`, with many requests in
            flight. See the Performance page.
        spend_journal: Where metered blocks commit each spend before sending it, so
            that no charge is lost to a crash or an outage (see `replay_pending()`): a
            path to an SQLite file (missing directories are created), a
            `postgresql://` URL shared by a fleet (`pip install amaimedia[postgres]`),
            or a `SpendJournal` object. Off by default.
        hooks: Callbacks told of each attempt, retry and charge (see `Hooks`).
        admission: Whether a metered block reserves its quoted cost until its spend
            settles, and is refused (`InsufficientCreditsError`, before the work) when
            the balance is committed to the blocks already in flight; on by default.
            `False` admits every block its quote allows: with many blocks at once, work
            is then done that the balance cannot pay for.
        tracer_provider: The OpenTelemetry tracer provider for the client's spans;
            OpenTelemetry's global one by default (nothing is recorded when
            `opentelemetry-api` is not installed).
        meter_provider: The OpenTelemetry meter provider for the client's metrics;
            the global one by default.
        dangerously_allow_browser: Allow running in a browser runtime (Pyodide), where
            the key would be visible to the page's visitors.

    Raises:
        AmaiError: No API key was given or found in the environment.
        SpendJournalError: The spend journal is corrupt or cannot be written.
        ImportError: A PostgreSQL journal was asked for without psycopg installed.
        ValueError: A setting has an impossible value (such as an `http://` URL off the
            loopback); the message names it.
        TypeError: A setting has the wrong type.
    """

    _http_client_class = httpx.AsyncClient
    _opens_journal_lazily = True  # async only
    # How the client's own aiohttp pool sends past httpx's client layer: _direct.py.  # async only
    _direct: DirectPath | None = None  # async only
    # Looked up on the instance so that tests can observe the waits without sleeping.
    _sleep: Callable[[float], Awaitable[None]] = staticmethod(asyncio.sleep)

    def __init__(
        self,
        api_key: str | None = None,
        *,
        base_url: str | httpx.URL | None = None,
        timeout: TimeoutTypes = DEFAULT_TIMEOUT,
        max_retries: int = DEFAULT_MAX_RETRIES,
        max_retry_after: float = DEFAULT_MAX_RETRY_AFTER,
        total_timeout: float | None = None,
        http_client: httpx.AsyncClient | None = None,
        transport: Literal["httpx", "aiohttp"] = "httpx",
        verify: VerifyTypes = True,
        proxy: str | httpx.URL | None = None,
        trust_env: bool = True,
        spend_journal: JournalTarget | None = None,
        hooks: Hooks | None = None,
        tracer_provider: Any = None,
        meter_provider: Any = None,
        admission: bool = True,
        dangerously_allow_browser: bool = False,
    ) -> None:
        from amaimedia._config import ClientConfig, TransportOptions, check_runtime
        from amaimedia._transports import resolve_async_transport  # async only

        try:
            self._transport_name = resolve_async_transport(transport, http_client)  # async only
            check_runtime(dangerously_allow_browser)
            configure_from_env()
            config = ClientConfig.create(
                api_key=api_key,
                base_url=base_url,
                timeout=timeout,
                max_retries=max_retries,
                max_retry_after=max_retry_after,
                total_timeout=total_timeout,
            )
            super().__init__(
                config,
                http_client=http_client,
                transport_options=TransportOptions(verify, proxy, trust_env),
                spend_journal=spend_journal,
                hooks=hooks,
                tracer_provider=tracer_provider,
                meter_provider=meter_provider,
                admission=admission,
            )
        except BaseException:
            # Error trackers show the locals of every frame of a traceback: neither the
            # raw key nor the journal's connection string (it may hold a password, see
            # open_journal()) may stay in this one's.
            del api_key, spend_journal
            raise

    def _new_http_client(
        self,
        config: ClientConfig,
        options: TransportOptions,
    ) -> httpx.AsyncClient:
        # Imported here: a client on a pool of the caller's never needs the transports.
        from amaimedia._transports import (
            direct_path,  # async only
            new_async_transport,
        )

        transport = new_async_transport(
            options,
            self._transport_name,  # async only
        )
        self._direct = direct_path(transport)  # async only
        return httpx.AsyncClient(
            timeout=config.timeout,
            follow_redirects=False,
            transport=transport,
        )

    async def check(self, tool: ToolName | str, units: Units = 1) -> Quote:
        """Quote what `units` of `tool` would cost against the current balance.

        Never charges. A balance too low for the work still returns a `Quote`, with
        `allowed=False`.

        Args:
            tool: The tool, such as `"chat"` or `"dub"`.
            units: The amount of work, a positive number (a dub unit is one minute).

        Returns:
            The quote: `allowed`, `cost_tokens` and `balance_after`.

        Raises:
            ValueError: `tool` or `units` is impossible; nothing was sent.
            TypeError: `tool` or `units` has the wrong type; nothing was sent.
            APIError: The server answered with an error (a subclass tells which).
            APIConnectionError: No usable answer, after the retries.
        """
        return await self._check(tool, units)

    async def _check(self, tool: str, units: Units, *, validated: bool = False) -> Quote:
        """`check()`; `validated`: of arguments validated already (see `_check_request()`)."""
        if not models_built():
            await run_in_thread(build_models)
        request, call = self._check_request(tool, units, validated=validated)
        return await self._send(request, self._quote_parser(), call)

    async def spend(
        self, tool: ToolName | str, units: Units = 1, *, reference: str | None = None
    ) -> Charge:
        """Charge for `units` of `tool`, after the work succeeded.

        Idempotent by `reference`: sending the same tool and reference again never
        charges twice, so a spend that failed with an unclear outcome can always be
        repeated with the reference from `Charge.reference` or from the error. Every
        `AmaiError` raised here carries the `reference` that was sent.

        Args:
            tool: The tool that did the work.
            units: The amount of work done, a positive number.
            reference: Your idempotency key, such as a job id. When left out, a fresh
                one is generated before the first attempt and reused by every retry.

        Returns:
            The charge, with the `reference` that was sent.

        Raises:
            ValueError: An argument is impossible; nothing was sent.
            TypeError: An argument has the wrong type; nothing was sent.
            InsufficientCreditsError: The balance does not cover the cost.
            APIError: The server answered with another error.
            APIConnectionError: No usable answer, after the retries.
        """
        return await self._spend(tool, units, reference)

    @property
    def with_raw_response(self) -> AsyncRawResponseClient:
        """`check` and `spend` that return the HTTP answer too, for its headers.

        ```python
        raw = await aclient.with_raw_response.spend("dub", 3, reference="job-42")
        print(raw.status_code, raw.request_id, raw.headers.get("x-ratelimit-remaining"))
        charge = raw.parse()
        ```

        They send, retry and raise exactly as `check()` and `spend()` do.
        """
        return AsyncRawResponseClient(self._raw_check, self._raw_spend)

    async def _raw_check(self, tool: ToolName | str, units: Units) -> RawResponse[Quote]:
        if not models_built():
            await run_in_thread(build_models)
        request, call = self._check_request(tool, units)
        quote, answer = await self._send_with_response(request, self._quote_parser(), call)
        from amaimedia._raw_response import RawResponse

        return RawResponse(answer, quote)

    async def _raw_spend(
        self, tool: ToolName | str, units: Units, reference: str | None
    ) -> RawResponse[Charge]:
        charge, answer = await self._spend_with_response(tool, units, reference)
        from amaimedia._raw_response import RawResponse

        return RawResponse(answer, charge)

    async def _spend(
        self,
        tool: ToolName | str,
        units: Units,
        reference: str | None,
        *,
        warn_on_failure: bool = True,
        validated: bool = False,
    ) -> Charge:
        """`spend()`, with the choice of logging a warning when it fails for good.

        A replay logs its own warning for a spend that failed: it passes
        `warn_on_failure=False`, so that each failure is logged once. `validated`: of
        arguments validated already (see `_spend_request()`).
        """
        charge, _ = await self._spend_with_response(
            tool, units, reference, warn_on_failure, validated=validated
        )
        return charge

    async def _spend_with_response(
        self,
        tool: ToolName | str,
        units: Units,
        reference: str | None,
        warn_on_failure: bool = True,
        *,
        validated: bool = False,
    ) -> tuple[Charge, Answer]:
        """`_spend()`, and the answer the charge is of (for `with_raw_response`)."""
        if not models_built():
            await run_in_thread(build_models)
        request, call = self._spend_request(
            tool, units, reference, warn_on_failure, validated=validated
        )
        assert call.reference is not None
        parse = self._charge_parser(call.reference)
        try:
            return await self._send_with_response(request, parse, call)
        except _lazy_names.AmaiError as exc:
            # Whatever went wrong, the caller can replay with this reference: without it,
            # a spend with a generated reference and an unclear outcome would be lost.
            exc.reference = call.reference
            raise

    def metered(
        self, tool: ToolName | str, units: Units = 1, *, reference: ReferenceArgument = None
    ) -> AsyncMeteredBlock:
        """Quote, run your work, then spend: exactly once, and never when the work failed.

        ```python
        async with aclient.metered("dub", units=3) as meter:
            video = await dub(source)   # not entered without funds
        print(meter.charge)

        @aclient.metered("chat")        # each call is its own metered block
        async def answer(prompt: str) -> str: ...
        ```

        On entry the block checks, and raises `InsufficientCreditsError` without running
        when the balance does not cover the work. If the block raises, nothing is
        charged and the exception propagates unchanged; `meter.cancel()` also skips the
        charge. Otherwise it spends `meter.units` with the block's reference.

        Args:
            tool: The tool doing the work, such as `"dub"`.
            units: The expected amount of work; set `meter.units` inside the block to
                bill what was actually used.
            reference: The spend's idempotency key, such as a job id; generated when left
                out. For the decorator, a callable that derives it from each call's
                arguments, so that a restarted worker cannot charge a job twice.

        Returns:
            An async context manager that gives a `Meter`, which is also a decorator for
            coroutine functions.

        Raises:
            ValueError: An argument is impossible; nothing was sent.
            TypeError: An argument has the wrong type; nothing was sent.
            InsufficientCreditsError: On entry, the balance does not cover the work; the
                block does not run. Entry raises the other errors of `check()` too.
            SpendFailedError: On exit, the work succeeded but its spend finally failed;
                its `__cause__` tells why, and its message says how to replay it.
        """
        from amaimedia._async_metered import AsyncMeteredBlock

        arguments = self._metered_arguments(tool, units, reference)
        return AsyncMeteredBlock(self, arguments, self._journal)

    async def add_pending_spend(
        self,
        connection: psycopg.AsyncConnection[Any],
        tool: ToolName | str,
        units: Units = 1,
        *,
        reference: str | None = None,
    ) -> str:
        """Owe a spend in your own database transaction: the transactional outbox.

        Writes the spend to the PostgreSQL journal as pending, on `connection` and inside
        its open transaction, so that your job's result and the spend it owes commit
        together or not at all. Nothing is sent: after the commit, send it with
        `replay_pending()`; if the process dies first, any replay (such as
        `amaimedia replay`) sends it later.

        ```python
        async with conn.transaction():
            await conn.execute("INSERT INTO results ...")
            await aclient.add_pending_spend(conn, "dub", 3, reference=f"job-{job_id}")
        await aclient.replay_pending()
        ```

        Args:
            connection: A psycopg connection to the journal's database.
            tool: The tool that did the work.
            units: The amount of work done, a positive number.
            reference: Your idempotency key, such as the job's id; one is generated when
                left out. Writing the same tool and reference again owes it once.

        Returns:
            The spend's reference.

        Raises:
            AmaiError: The client keeps no spend journal.
            TypeError: The journal is not PostgreSQL, `connection` is not a psycopg
                connection of the right kind, or an argument has the wrong type.
            ValueError: An argument is impossible; nothing was written.
            SpendJournalError: The write failed (your transaction is then aborted).
        """
        from amaimedia._models import SpendRequest
        from amaimedia._references import new_reference

        if reference is None:
            reference = new_reference()
        body = SpendRequest.from_arguments(tool=tool, units=units, reference=reference)
        journal = await self._opened_journal()
        outbox = journal.outbox(connection, is_async=True)
        await outbox.add_in_async(connection, body.tool, body.units, body.reference)
        return body.reference

    async def pending_spends(self) -> list[PendingSpend]:
        """The spends of this key in the spend journal that the server has not confirmed.

        That is: spends being sent right now, spends that failed (`SpendFailedError`),
        and spends left by a process that died between the work and the spend. Only rows
        whose authentication code shows this key wrote them as they are: the others
        (changed by someone without the key, written by amaimedia 0.1, malformed, or of a
        previous key) are left out, logged once as a warning, and reported by
        `replay_pending()` in its `refused`.

        Raises:
            AmaiError: The client keeps no spend journal.
            SpendJournalError: The journal cannot be read.
        """
        journal = await self._opened_journal()
        entries = await run_in_thread(journal.pending)
        return [entry.spend for entry in entries]

    async def replay_pending(
        self,
        *,
        max_age: float | timedelta | None = DEFAULT_MAX_AGE,
        older_than: float | timedelta = 0,
        previous_keys: Iterable[str] = (),
        adopt_unauthenticated: bool = False,
    ) -> ReplayReport:
        """Send the pending spends of this key in the journal again, oldest first.

        Safe to call at any time and from several processes at once: each spend keeps
        its reference, so the server charges it at most once, and an entry that another
        process is sending is skipped. A spend that fails again stays pending with its
        error (see `pending_spends()`) and is logged as a warning; the others go on.

        Only rows whose authentication code checks out are sent. A row changed by
        someone without the key, one flipped back to pending after it was charged, and a
        malformed one are refused: never sent, logged as a warning, noted on the row and
        reported in `refused`; the others go on.

        After a key rotation, entries written under the old key are this client's only
        when you say so: pass the old key in `previous_keys` (a key of the same account).
        Each of its entries whose code checks out under the old key is adopted (moved to
        this key, sealed with it) and sent with this key, once. Nothing is adopted
        automatically, and the keys are never logged, stored or sent.

        Args:
            max_age: Entries older than this (seconds, or a `timedelta`; 7 days by
                default) are not sent but reported as stale: the API does not say how
                long it remembers a reference, and one it forgot would be charged again.
                `None` sends them all.
            older_than: Skip entries younger than this: a block that is still running
                (in another process) most likely owns them. 0 by default.
            previous_keys: Earlier keys of this account, whose entries to adopt and send
                (with this key: a key of another account would have this one pay for
                its entries).
            adopt_unauthenticated: Also adopt and send the entries amaimedia 0.1 wrote
                (for this key, or one in `previous_keys`), which carry no authentication
                code: only once you know nobody else could write the journal, since
                nothing shows they are as 0.1 wrote them. Off by default: they are
                reported in `refused`.

        Returns:
            The charges of the spends that went through, a list that also tells what was
            left pending and why: `failed`, `stale`, `held` (another worker is sending
            them), `young` and `refused`.

        Raises:
            AmaiError: The client keeps no spend journal.
            SpendJournalError: The journal cannot be read.
            ValueError: An age is negative or not finite, or a previous key is malformed
                (named by its index, never shown); nothing was read.
            TypeError: An age is neither seconds nor a `timedelta`, or `previous_keys`
                is not a list of str.
        """
        from amaimedia._async_metered import areplay_journal
        from amaimedia._journal._replay import ReplayRules

        rules = ReplayRules(max_age, older_than)
        try:
            previous = self._previous_journal_keys(previous_keys)
        finally:
            del previous_keys  # error trackers show each frame's locals: not the keys
        journal = await self._opened_journal()
        return await areplay_journal(
            self, journal, rules, previous, adopt_unauthenticated=bool(adopt_unauthenticated)
        )

    async def _opened_journal(self) -> ScopedJournal:
        """The client's journal, opened first if it was not yet (off the event loop).

        Raises:
            AmaiError: The client keeps no spend journal.
            SpendJournalError: The journal cannot be used.
        """
        journal = self._require_journal()
        if not journal.is_open:
            await run_in_thread(journal.open)
        return journal

    async def _send(self, request: Outgoing, parse: Callable[[Answer], _T], call: CallInfo) -> _T:
        result, _ = await self._send_with_response(request, parse, call)
        return result

    async def _send_with_response(
        self, request: Outgoing, parse: Callable[[Answer], _T], call: CallInfo
    ) -> tuple[_T, Answer]:
        """Send `request`, retrying as the policy says; the result, and the answer it is of.

        `parse` turns an answer into the result, or raises its error.
        """
        names = _lazy_names  # bound by the call's models_built() / build_models()
        deadline = self._deadline()
        # Hooks, logs and OpenTelemetry see the call through this, never the request's
        # headers (see _observer.py).
        watch = self._observer.call(call, request.url)

        async def attempt() -> tuple[_T, Answer]:
            if deadline is not None:
                request.start_attempt(deadline, self._config.timeout)
            started = watch.attempt_starting()
            answer = None
            try:
                answer = await self._attempt(request, deadline)
                result = parse(answer)
            except Exception as exc:
                watch.attempt_ended(started, answer, exc)
                raise
            watch.attempt_ended(started, answer, None)
            return result, answer

        try:
            try:
                result = await attempt()
            except names.AmaiError as exc:
                if not self._retry_policy.retries(exc):
                    raise
                result = await self._retry_policy.async_retry(
                    attempt,
                    exc,
                    sleep=self._sleep,
                    what=f"POST {request.url.path}",
                    deadline=deadline,
                    on_retry=watch.retrying,
                )
        except BaseException as exc:
            watch.failed(exc)
            raise
        watch.succeeded(result[0])
        return result

    async def _attempt(self, outgoing: Outgoing, deadline: Deadline | None) -> Answer:
        direct = self._direct  # async only
        if direct is not None:  # async only
            pool, in_flight = self._http, self._in_flight  # async only
            return await direct.attempt(outgoing, in_flight, pool, deadline)  # async only
        names = _lazy_names  # bound by the call's models_built() / build_models()
        request = outgoing.request()
        with self._in_flight.attempt(request, self._http):
            try:
                response = await self._http.send(request, follow_redirects=False, stream=True)
                try:
                    # Read here, so that no answer is read or held beyond the SDK's bounds:
                    # its size, its coding and its time (see _answer.py).
                    names.bound_answer(response, deadline)
                    await response.aread()
                finally:
                    await response.aclose()
                return response
            except httpx.RequestError as exc:
                raise names.connection_error(exc, request) from exc
            except RuntimeError as exc:  # async only
                # A caller's pool whose connections belong to a loop that ended.  # async only
                raise names.dead_loop_error(exc, request) from exc  # async only

    async def aclose(self) -> None:
        """Close the client, and its connection pool unless that belongs to someone else.

        A pool passed in as `http_client`, or shared with the client that `with_options`
        copied, stays open for its owner. Either way this client sends nothing more.

        Closing its own pool, the client first lets the requests in flight on it end
        (each within its timeout; a spend the server may be charging gets its answer),
        and makes no new attempt: a call that had not sent its request yet, or whose
        attempt failed meanwhile, raises `APIConnectionError` (a metered block:
        `SpendFailedError`, its spend pending in the journal). Interrupted while it
        waits, it closes the pool at once.
        """
        self._closed = True
        if self._owns_http:
            try:
                await self._in_flight.aclose(self._config.timeout)
            finally:
                await self._http.aclose()

    async def __aenter__(self: _SelfT) -> _SelfT:
        if self._journal is not None and not self._journal.is_open:
            # A journal left to open on first use opens here, off the event loop.
            await run_in_thread(self._journal.open)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()


class AsyncRawResponseClient:
    """`check` and `spend` of an `AsyncAmaiClient`, returning a `RawResponse`.

    Got from `aclient.with_raw_response`; each method sends, retries and raises exactly
    as the client's own, and returns the HTTP answer with the model parsed from it.
    """

    __slots__ = ("_check", "_spend")

    def __init__(
        self,
        check: Callable[[ToolName | str, Units], Awaitable[RawResponse[Quote]]],
        spend: Callable[[ToolName | str, Units, str | None], Awaitable[RawResponse[Charge]]],
    ) -> None:
        """Wrap the client's own sending of each call (its bound methods)."""
        self._check = check
        self._spend = spend

    async def check(self, tool: ToolName | str, units: Units = 1) -> RawResponse[Quote]:
        """`AsyncAmaiClient.check()`, returning the answer too.

        Args:
            tool: The tool, such as `"chat"` or `"dub"`.
            units: The amount of work, a positive number (a dub unit is one minute).

        Returns:
            The answer, whose `parse()` is the `Quote`.

        Raises:
            ValueError: `tool` or `units` is impossible; nothing was sent.
            TypeError: `tool` or `units` has the wrong type; nothing was sent.
            APIError: The server answered with an error (a subclass tells which).
            APIConnectionError: No usable answer, after the retries.
        """
        return await self._check(tool, units)

    async def spend(
        self, tool: ToolName | str, units: Units = 1, *, reference: str | None = None
    ) -> RawResponse[Charge]:
        """`AsyncAmaiClient.spend()`, returning the answer too.

        Idempotent by `reference` as `spend()` is: the reference is fixed before the first
        attempt and reused by every retry, and every `AmaiError` raised here carries it.

        Args:
            tool: The tool that did the work.
            units: The amount of work done, a positive number.
            reference: Your idempotency key, such as a job id; generated when left out.

        Returns:
            The answer, whose `parse()` is the `Charge`, with the `reference` sent.

        Raises:
            ValueError: An argument is impossible; nothing was sent.
            TypeError: An argument has the wrong type; nothing was sent.
            InsufficientCreditsError: The balance does not cover the cost.
            APIError: The server answered with another error.
            APIConnectionError: No usable answer, after the retries.
        """
        return await self._spend(tool, units, reference)
