"""What the sync and async clients share: everything but the lines that wait on I/O.

Configuration, request building, response-to-model and response-to-exception mapping,
the retry policy and reference generation all live here, once, so the two clients
cannot drift apart.
"""

from __future__ import annotations

import copy
import logging
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeAlias, TypeVar

import httpx

from . import _lazy_names
from ._logging import logger
from ._types import NOT_GIVEN, NotGiven, TimeoutTypes, Units

# Only what `from amaimedia import AmaiClient` needs loads with the client: the rest is
# imported where it is used, by the constructor (configuration, observer, retry policy,
# admission, journal) or by the first call (models, answer mapping, errors), so that the
# import costs little more than httpx's and pydantic's own (docs/performance.md).
if TYPE_CHECKING:
    from collections.abc import Iterable

    from ._admission import Admission
    from ._auth import ApiKey
    from ._config import ClientConfig, TransportOptions
    from ._deadline import Deadline
    from ._events import Hooks
    from ._in_flight import InFlight
    from ._journal import JournalKeys, JournalOpening, JournalTarget, ScopedJournal
    from ._metered_base import MeteredArguments, ReferenceArgument
    from ._models import Charge, CheckRequest, Quote, SpendRequest
    from ._observer import CallInfo, Observer
    from ._outgoing import Outgoing, RequestBuilder
    from ._retry import RetryPolicy
    from ._transports._direct import DirectAnswer

__all__ = ["Answer", "AnswerParser", "BaseClient", "build_models", "models_built"]


def models_built() -> bool:
    """Whether the models are loaded and built, so that a call builds nothing any more.

    Asked before every call: it loads nothing (pydantic's model machinery loads with the
    models, on the first call).
    """
    return _lazy_names.bound


def build_models() -> None:
    """Load the models, pydantic's model machinery with them, and build their validators.

    With them, the names every call uses are bound (`_lazy_names.py`). The async client
    runs this off its event loop, as its first call's first step.
    """
    _lazy_names.bind()


_HttpT = TypeVar("_HttpT", httpx.Client, httpx.AsyncClient)
_ModelT = TypeVar("_ModelT", bound="Quote | Charge")

Answer: TypeAlias = "httpx.Response | DirectAnswer"
"""An answer read whole: an `httpx.Response`, or a 2xx of the async client's direct path."""
_ClientT = TypeVar("_ClientT", bound="BaseClient[Any]")


class BaseClient(Generic[_HttpT]):
    """Shared core of [`AmaiClient`][amaimedia.AmaiClient] and its async twin."""

    _http_client_class: ClassVar[type[httpx.Client] | type[httpx.AsyncClient]]
    _config: ClientConfig
    _retry_policy: RetryPolicy
    _http: _HttpT
    _owns_http: bool
    _closed: bool
    _in_flight: InFlight
    _journal_opening: JournalOpening | None
    _journal: ScopedJournal | None
    _observer: Observer
    _requests: RequestBuilder
    _admission: Admission | None
    _admits: bool
    # Whether a client built inside a running event loop opens its journal on first use,
    # in a worker thread, rather than in its constructor (the async client).
    _opens_journal_lazily: ClassVar[bool] = False

    def __init__(
        self,
        config: ClientConfig,
        *,
        http_client: _HttpT | None,
        transport_options: TransportOptions,
        spend_journal: JournalTarget | None,
        hooks: Hooks | None = None,
        tracer_provider: Any = None,
        meter_provider: Any = None,
        admission: bool = True,
    ) -> None:
        if not isinstance(admission, bool):
            raise TypeError(f"admission must be True or False, got {type(admission).__name__}")
        self._admits = admission
        from amaimedia._in_flight import InFlight
        from amaimedia._observer import Observer

        # Checked first: a bad hooks argument fails before a pool or a journal is opened.
        observer = Observer(hooks, tracer_provider=tracer_provider, meter_provider=meter_provider)
        if http_client is None:
            http_client = self._new_http_client(config, transport_options)
            owns_http = True
        elif isinstance(http_client, self._http_client_class):
            # A client passed in belongs to the caller, who closes it, and configures it.
            if transport_options.given:
                raise ValueError(
                    "verify, proxy and trust_env configure the client's own connection "
                    "pool; with http_client=..., set them on your httpx client instead"
                )
            owns_http = False
        else:
            expected = self._http_client_class.__name__
            raise TypeError(
                f"http_client must be an httpx.{expected}, got {type(http_client).__name__}"
            )
        # The attempts in flight on the pool, which closing it waits for: a copy made by
        # with_options shares the pool, and so this too.
        self._in_flight = InFlight()
        # Opened now, so that a journal that cannot be used fails before any work; or, by
        # an async client inside a running loop, checked now and opened off the loop
        # before the first block or replay does anything (see JournalOpening).
        try:
            self._journal_opening = None
            if spend_journal is not None:
                from amaimedia._journal import JournalOpening

                self._journal_opening = JournalOpening(spend_journal, defer=self._defers_journal())
        except BaseException:
            del spend_journal  # it may hold a password: see open_journal()
            raise
        self._setup(config, http_client, owns_http=owns_http, observer=observer)

    def _setup(
        self, config: ClientConfig, http: _HttpT, *, owns_http: bool, observer: Observer
    ) -> None:
        from amaimedia._admission import Admission, process_scope
        from amaimedia._observer import Observer
        from amaimedia._outgoing import RequestBuilder
        from amaimedia._retry import RetryPolicy

        self._config = config
        self._retry_policy = RetryPolicy(config.max_retries, config.max_retry_after)
        self._http = http
        # Built with the configuration: its requests' headers hold its key.
        self._requests = RequestBuilder(config, http)
        self._owns_http = owns_http
        self._closed = False
        # The metered blocks see the journal only through this: the backend, and the
        # scope of this configuration's key and API in it (a with_options copy may
        # carry another key).
        self._journal = None
        if self._journal_opening is not None:
            from amaimedia._journal import ScopedJournal, journal_keys

            keys = journal_keys(config.api_key, config.base_url)
            self._journal = ScopedJournal(self._journal_opening, keys)
        self._observer = Observer(
            observer.hooks,
            tracer_provider=observer.tracer_provider,
            meter_provider=observer.meter_provider,
            journal=self._journal,
        )
        self._admission = (
            Admission(process_scope(config.api_key, config.base_url), self._journal)
            if self._admits
            else None
        )

    def _defers_journal(self) -> bool:
        """Whether to open the journal on first use: an async client in a running loop."""
        if not self._opens_journal_lazily:
            return False
        import asyncio

        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return False  # no loop to block: opened now, and its errors raised now
        return True

    def _previous_journal_keys(self, previous_keys: Iterable[str]) -> tuple[JournalKeys, ...]:
        """`replay_pending(previous_keys=...)`, checked, as journal keys; never logged.

        Raises:
            TypeError: Not a list of str.
            ValueError: A malformed key (named by its index, never shown).
        """
        from amaimedia._journal import previous_journal_keys

        try:
            return previous_journal_keys(previous_keys, self._config.api_key, self.base_url)
        except BaseException:
            del previous_keys  # error trackers show each frame's locals: not the keys
            raise

    def _new_http_client(self, config: ClientConfig, options: TransportOptions) -> _HttpT:
        raise NotImplementedError

    @property
    def base_url(self) -> httpx.URL:
        """The root URL requests go to, such as `https://api.amaimedia.com`."""
        return self._config.base_url

    @property
    def timeout(self) -> httpx.Timeout:
        """The timeout applied to every request."""
        return self._config.timeout

    @property
    def max_retries(self) -> int:
        """How many times a failed request is retried (0 for never)."""
        return self._config.max_retries

    @property
    def max_retry_after(self) -> float:
        """The longest `Retry-After` the client waits for; a longer one is raised at once."""
        return self._config.max_retry_after

    @property
    def total_timeout(self) -> float | None:
        """The longest a call may take, every retry and wait included; `None` for no limit."""
        return self._config.total_timeout

    @property
    def spend_journal(self) -> str | None:
        """Where the spend journal is (a path, or a URL without its password), or `None`."""
        return None if self._journal is None else self._journal.location

    def reserved_tokens(self) -> int:
        """The tokens this process's metered blocks in flight have reserved, for this key.

        Every client of the process with the same key and API shares one book, so this
        counts their blocks too. With a journal that holds a book for a fleet
        (PostgreSQL, or an SQLite file shared by processes), the other processes'
        reservations count at admission, but not here. 0 with `admission=False`.
        """
        admission = self._admission
        return 0 if admission is None else admission.reserved_tokens()

    @property
    def is_closed(self) -> bool:
        """Whether this client was closed, or its connection pool was."""
        return self._closed or self._http.is_closed

    def with_options(
        self: _ClientT,
        *,
        api_key: str | NotGiven = NOT_GIVEN,
        base_url: str | httpx.URL | NotGiven = NOT_GIVEN,
        timeout: TimeoutTypes | NotGiven = NOT_GIVEN,
        max_retries: int | NotGiven = NOT_GIVEN,
        max_retry_after: float | NotGiven = NOT_GIVEN,
        total_timeout: float | NotGiven | None = NOT_GIVEN,
        hooks: Hooks | NotGiven | None = NOT_GIVEN,
        admission: bool | NotGiven = NOT_GIVEN,
    ) -> _ClientT:
        """Return a copy with some settings changed, sharing this client's connection pool.

        The copy does not own the pool: closing it leaves this client open, and closing
        this client closes the pool for both.

        Args:
            api_key: Another API key.
            base_url: Another root URL.
            timeout: Another timeout; `None` turns the timeout off.
            max_retries: Another number of retries; `0` turns retrying off.
            max_retry_after: Another cap on the server's `Retry-After`, in seconds.
            total_timeout: Another limit for a whole call, retries and waits included;
                `None` turns it off.
            hooks: Other hooks; `None` for none.
            admission: Whether the copy's metered blocks reserve their cost against the
                blocks in flight (see the client's `admission`).

        Returns:
            A new client of the same class.
        """
        from amaimedia._config import (
            ClientConfig,
            resolve_api_key,
            resolve_base_url,
            resolve_max_retries,
            resolve_max_retry_after,
            resolve_timeout,
            resolve_total_timeout,
        )
        from amaimedia._observer import Observer

        old = self._config
        try:
            key = old.api_key if isinstance(api_key, NotGiven) else resolve_api_key(api_key)
        finally:
            del api_key  # a bad setting below must not find the raw key in this frame
        config = ClientConfig(
            api_key=key,
            base_url=(
                old.base_url if isinstance(base_url, NotGiven) else resolve_base_url(base_url)
            ),
            timeout=old.timeout if isinstance(timeout, NotGiven) else resolve_timeout(timeout),
            max_retries=(
                old.max_retries
                if isinstance(max_retries, NotGiven)
                else resolve_max_retries(max_retries)
            ),
            max_retry_after=(
                old.max_retry_after
                if isinstance(max_retry_after, NotGiven)
                else resolve_max_retry_after(max_retry_after)
            ),
            total_timeout=(
                old.total_timeout
                if isinstance(total_timeout, NotGiven)
                else resolve_total_timeout(total_timeout)
            ),
        )
        old_observer = self._observer
        observer = (
            old_observer
            if isinstance(hooks, NotGiven)
            else Observer(
                hooks,
                tracer_provider=old_observer.tracer_provider,
                meter_provider=old_observer.meter_provider,
            )
        )
        if not isinstance(admission, NotGiven | bool):
            raise TypeError(f"admission must be True or False, got {type(admission).__name__}")
        clone = copy.copy(self)
        if not isinstance(admission, NotGiven):
            clone._admits = admission  # noqa: SLF001 - our own class
        clone._setup(config, self._http, owns_http=False, observer=observer)  # noqa: SLF001
        return clone

    @staticmethod
    def _metered_arguments(
        tool: str, units: Units, reference: ReferenceArgument
    ) -> MeteredArguments:
        from amaimedia._metered_base import MeteredArguments

        return MeteredArguments.validate(tool, units, reference)

    def _require_journal(self) -> ScopedJournal:
        if self._journal is None:
            from amaimedia._exceptions import AmaiError

            raise AmaiError(
                f"this {type(self).__name__} keeps no spend journal; "
                "create it with spend_journal='path/to/spends.sqlite3'"
            )
        return self._journal

    def _deadline(self) -> Deadline | None:
        """The deadline of a call starting now, when the client has a `total_timeout`."""
        seconds = self._config.total_timeout
        if seconds is None:
            return None
        from amaimedia._deadline import Deadline

        return Deadline(seconds)

    def _check_request(
        self, tool: str, units: Units, *, validated: bool = False
    ) -> tuple[Outgoing, CallInfo]:
        """The request of a check, and what the watchers are told of it.

        `validated`: the arguments were validated already (a metered block's, when
        `metered()` was called), and are taken as they are.
        """
        names = _lazy_names  # bound by the call's models_built() / build_models()
        body = (
            names.CheckRequest.model_construct(tool=tool, units=units)
            if validated
            else names.CheckRequest.from_arguments(tool=tool, units=units)
        )
        call = names.CallInfo("check", body.tool, body.units)
        return self._build_request(self._config.check_url, body), call

    def _spend_request(
        self,
        tool: str,
        units: Units,
        reference: str | None,
        warn_on_failure: bool = True,
        *,
        validated: bool = False,
    ) -> tuple[Outgoing, CallInfo]:
        """The request of a spend, and what the watchers are told of it.

        `validated`: as for `_check_request()`; a metered block's meter validates what
        it is given.
        """
        # The reference is fixed here, before the retry loop, and the request built once:
        # every retry of a spend sends the same bytes, so it can never charge twice.
        names = _lazy_names  # bound by the call's models_built() / build_models()
        if reference is None:
            reference = names.new_reference()
        body = (
            names.SpendRequest.model_construct(tool=tool, units=units, reference=reference)
            if validated
            else names.SpendRequest.from_arguments(tool=tool, units=units, reference=reference)
        )
        call = names.CallInfo("spend", body.tool, body.units, body.reference, warn_on_failure)
        return self._build_request(self._config.spend_url, body), call

    def _build_request(self, url: httpx.URL, body: CheckRequest | SpendRequest) -> Outgoing:
        if self.is_closed:
            from amaimedia._exceptions import AmaiError

            raise AmaiError(
                f"{type(self).__name__} is closed; create a new client to send requests"
            )
        content = body.model_dump_json()
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("POST %s %s", url.path, content)
        return self._requests.build(url, content.encode())

    def _quote_parser(self) -> AnswerParser[Quote]:
        return AnswerParser(_lazy_names.Quote, key=self._config.api_key)

    def _charge_parser(self, reference: str) -> AnswerParser[Charge]:
        # The server does not echo the reference; the parser puts the one sent in Charge.
        return AnswerParser(_lazy_names.Charge, {"reference": reference}, key=self._config.api_key)

    def __repr__(self) -> str:
        config = getattr(self, "_config", None)
        if config is None:
            # A constructor that failed halfway: a traceback with its locals shows this.
            return f"<{type(self).__name__}, not constructed>"
        timeout = config.timeout
        seconds = {timeout.connect, timeout.read, timeout.write, timeout.pool}
        shown = seconds.pop() if len(seconds) == 1 else timeout
        journal = getattr(self, "_journal", None)
        # Every setting docs/configuration.md lists; the journal by its location, which
        # never holds a password.
        return (
            f"{type(self).__name__}(base_url={str(config.base_url)!r}, "
            f"api_key={config.api_key.hint!r}, timeout={shown!r}, "
            f"max_retries={config.max_retries}, max_retry_after={config.max_retry_after!r}, "
            f"total_timeout={config.total_timeout!r}, "
            f"spend_journal={None if journal is None else journal.location!r})"
        )


class AnswerParser(Generic[_ModelT]):
    """How an answer becomes a call's result, or raises its error (`parse_response()`).

    Args:
        model: `Quote` or `Charge`.
        context: What the model takes that the answer does not hold (a spend's reference).
        key: The API key the request carries: where the answer echoes it, the model holds
            `[API key]` instead. Kept as the `ApiKey`, whose repr hides it: the frames that
            parse an answer may raise, and error trackers show their locals.
    """

    __slots__ = ("_key", "context", "model")

    def __init__(
        self, model: type[_ModelT], context: dict[str, Any] | None = None, *, key: ApiKey
    ) -> None:
        self.model = model
        self.context = context
        self._key = key

    def __repr__(self) -> str:
        return f"<AnswerParser {self.model.__name__}>"

    def __call__(self, answer: Answer) -> _ModelT:
        """The result of `answer`.

        Raises:
            APIError: The status is not 2xx, or a 2xx body says `"ok": false`.
            APIResponseValidationError: A 2xx body is not the documented shape.
        """
        names = _lazy_names
        if isinstance(answer, httpx.Response):
            if logger.isEnabledFor(logging.DEBUG):
                request = answer.request
                _log_response(request.method, request.url, answer.status_code, answer)
            return names.parse_response(answer, self.model, self.context, key=self._key)
        if logger.isEnabledFor(logging.DEBUG):
            _log_response(answer.method, answer.url, answer.status_code, answer)
        model, context, key = self.model, self.context, self._key
        result = names.parse_success(answer.content, answer.request_id, model, context, key=key)
        if result is None:
            # Not a success after all: its error is made from the whole answer, as ever.
            result = names.parse_response(answer.response(), model, context, key=key)
        return result


def _log_response(method: str, url: httpx.URL, status: int, answer: Answer) -> None:
    """The DEBUG line of an answer; its callers check first that DEBUG is on."""
    from ._printable import printable
    from ._response import request_id_of_answer

    request_id = request_id_of_answer(answer)
    logger.debug(
        "%s %s -> %d (request_id=%s)",
        method,
        url.path,
        status,
        request_id if request_id is None else printable(request_id),
    )
