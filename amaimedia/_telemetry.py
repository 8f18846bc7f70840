"""OpenTelemetry spans and metrics for the observer (see `_observer.py`).

Nothing here imports OpenTelemetry until a client makes its first call: `recorder_for()`
imports `opentelemetry-api` then, once, and when it is not installed remembers that, so
the observer goes on without a recorder at no further cost.

What is recorded, and under which names (docs/observability.md shows them to users):

- spans `amaimedia.check` and `amaimedia.spend` (kind CLIENT), one per call with its
  retries inside, current while the call runs so that an instrumented httpx nests under
  them; `amaimedia.metered` (kind INTERNAL), the parent of a block's check and spend,
  current while the block's work runs;
- counters `amaimedia.tokens.charged`, `amaimedia.spend.failures` and
  `amaimedia.metered.refused`, the histogram `amaimedia.client.operation.duration`, and,
  when the client keeps a spend journal, the gauge `amaimedia.journal.pending`.

An attribute holds only what `CallInfo`, the URL's host and port and the answer's model
say: never the key, a journal's password or a request's body.
"""

from __future__ import annotations

import contextvars
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Final, TypeAlias, cast

from ._exceptions import AmaiError
from ._logging import logger
from ._observer import error_type
from ._version import __version__

if TYPE_CHECKING:
    from contextvars import Token

    import httpx
    from opentelemetry.context import Context
    from opentelemetry.metrics import CallbackOptions, Meter, MeterProvider, Observation
    from opentelemetry.trace import Span, SpanKind, Status, Tracer, TracerProvider

    from ._journal import ScopedJournal
    from ._meter import Meter as BlockMeter
    from ._models import Charge, Quote
    from ._observer import CallInfo, Recorder
    from ._types import Units

__all__ = ["recorder_for"]

SCOPE: Final = "amaimedia"
# Seconds: the SDK's calls take milliseconds in process, and up to a minute with retries.
DURATION_BUCKETS: Final = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.075,
    0.1,
    0.25,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    7.5,
    10.0,
    30.0,
    60.0,
)
_DEFAULT_PORTS: Final = {"https": 443, "http": 80}
# How often, at most, a recorder on OpenTelemetry's global tracer provider looks whether
# an SDK's provider was set since; until one is, it makes no span.
RECHECK_S: Final = 0.1

# Set in the Context a span is attached in, and reset there when it is detached: a reset
# in another Context (a block entered in one task and left in another) raises, which
# tells that the span's own Context is not the current one. OpenTelemetry's detach()
# would log that at ERROR, once per block.
_ATTACHED: Final = contextvars.ContextVar[None]("amaimedia_span_attached")

# How a span was made current: the mark above, and OpenTelemetry's own token.
_Attachment: TypeAlias = "tuple[Token[None], Token[Context]]"

_lock = threading.Lock()
_absent = False
_api: _Api | None = None
# One recorder, and so one set of instruments, per pair of providers, however many
# clients (and with_options copies) use them.
_recorders: weakref.WeakKeyDictionary[Any, weakref.WeakKeyDictionary[Any, _Recorder]] = (
    weakref.WeakKeyDictionary()
)


def recorder_for(tracer_provider: Any, meter_provider: Any) -> Recorder | None:
    """The recorder for these providers (`None`: OpenTelemetry's global ones).

    Returns `None`, and remembers it, when `opentelemetry-api` is not installed.
    """
    if _absent:
        return None
    api = _api if _api is not None else _load()
    if api is None:
        return None
    tracers = api.tracer_provider() if tracer_provider is None else tracer_provider
    meters = api.meter_provider() if meter_provider is None else meter_provider
    with _lock:
        try:
            by_meters = _recorders.get(tracers)
            if by_meters is None:
                by_meters = _recorders[tracers] = weakref.WeakKeyDictionary()
            recorder = by_meters.get(meters)
            if recorder is None:
                recorder = by_meters[meters] = _Recorder(api, tracers, meters)
        except TypeError:
            # A provider that takes no weak reference: its clients each get their own
            # recorder, which is only slower to build.
            recorder = _Recorder(api, tracers, meters)
    return recorder


def _load() -> _Api | None:
    global _absent, _api
    with _lock:
        if _api is None and not _absent:
            try:
                _api = _Api()
            except ImportError:
                _absent = True
        return _api


class _Api:
    """What the recorders use of `opentelemetry-api`, imported once, on first use."""

    __slots__ = (
        "attach",
        "client",
        "detach",
        "error",
        "internal",
        "invalid_span",
        "meter_provider",
        "observation",
        "proxy_provider",
        "set_span_in_context",
        "status",
        "tracer_provider",
    )

    def __init__(self) -> None:
        from opentelemetry import context, metrics, trace

        self.tracer_provider: Callable[[], TracerProvider] = trace.get_tracer_provider
        self.meter_provider: Callable[[], MeterProvider] = metrics.get_meter_provider
        self.attach: Callable[[Context], Token[Context]] = context.attach
        self.detach: Callable[[Token[Context]], None] = context.detach
        self.set_span_in_context: Callable[[Span], Context] = trace.set_span_in_context
        self.observation: type[Observation] = metrics.Observation
        self.status: type[Status] = trace.Status
        self.error: Status = trace.Status(trace.StatusCode.ERROR)
        self.client: SpanKind = trace.SpanKind.CLIENT
        self.internal: SpanKind = trace.SpanKind.INTERNAL
        self.invalid_span: Span = trace.INVALID_SPAN
        self.proxy_provider: type[TracerProvider] = trace.ProxyTracerProvider


class _Recorder:
    """The spans and instruments of one pair of providers (see `Recorder`)."""

    __slots__ = (
        "api",
        "charged",
        "duration",
        "failures",
        "gauge",
        "journals",
        "meter",
        "proxied",
        "recheck_at",
        "refused",
        "tracer",
        "watch_lock",
    )

    def __init__(self, api: _Api, tracers: TracerProvider, meters: MeterProvider) -> None:
        self.api = api
        self.tracer: Tracer = tracers.get_tracer(SCOPE, __version__)
        meter: Meter = meters.get_meter(SCOPE, __version__)
        self.meter = meter
        self.charged = meter.create_counter(
            "amaimedia.tokens.charged", unit="{token}", description="Tokens charged by spends."
        )
        self.failures = meter.create_counter(
            "amaimedia.spend.failures",
            unit="{spend}",
            description="Spends that failed for good, after every retry they were worth.",
        )
        self.duration = meter.create_histogram(
            "amaimedia.client.operation.duration",
            unit="s",
            description="How long a check or a spend took, its retries included.",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        self.refused = meter.create_counter(
            "amaimedia.metered.refused",
            unit="{block}",
            description="Metered blocks refused on entry, before any work.",
        )
        # Spans of OpenTelemetry's global proxy, which records nothing until an SDK's
        # provider is set: until then no span is made (see `tracing()`).
        self.proxied = isinstance(tracers, api.proxy_provider)
        self.recheck_at = 0.0
        self.watch_lock = threading.Lock()
        self.journals: weakref.WeakSet[ScopedJournal] = weakref.WeakSet()
        self.gauge: object = None

    def tracing(self) -> bool:
        """Whether a span may record: `False` while the global tracer provider is unset."""
        if not self.proxied:
            return True
        now = time.monotonic()
        if now >= self.recheck_at:
            # OpenTelemetry's own look-up costs more than the rest of a no-op span; once
            # every RECHECK_S it is nothing, and an SDK set later is seen that soon.
            self.recheck_at = now + RECHECK_S
            self.proxied = isinstance(self.api.tracer_provider(), self.api.proxy_provider)
        return not self.proxied

    def call_started(self, call: CallInfo, url: httpx.URL) -> _CallRecord:
        """A call is starting: its span, current until `ended()`."""
        if not self.tracing():
            return _CallRecord(self, call, self.api.invalid_span)
        attributes: dict[str, str | int | float] = {
            "amaimedia.tool": call.tool,
            "amaimedia.units": call.units,
            "server.address": url.host,
            "server.port": url.port or _DEFAULT_PORTS.get(url.scheme, 443),
        }
        if call.reference is not None:
            attributes["amaimedia.reference"] = call.reference
        span = self.tracer.start_span(
            f"amaimedia.{call.operation}", kind=self.api.client, attributes=attributes
        )
        return _CallRecord(self, call, span)

    def block_started(self, tool: str, units: Units, reference: str) -> _BlockRecord:
        """A metered block is starting: its span, current until it ends."""
        if not self.tracing():
            return _BlockRecord(self, tool, self.api.invalid_span)
        attributes: dict[str, str | int | float] = {
            "amaimedia.tool": tool,
            "amaimedia.units": units,
            "amaimedia.reference": reference,
        }
        span = self.tracer.start_span(
            "amaimedia.metered", kind=self.api.internal, attributes=attributes
        )
        return _BlockRecord(self, tool, span)

    def watch_journal(self, journal: ScopedJournal) -> None:
        """Report the spends `journal` holds pending in the gauge, while it lives."""
        with self.watch_lock:
            self.journals.add(journal)
            if self.gauge is None:
                self.gauge = self.meter.create_observable_gauge(
                    "amaimedia.journal.pending",
                    callbacks=[self._observe_journals],
                    unit="{spend}",
                    description="Spends held pending in the spend journal, to be replayed.",
                )

    def _observe_journals(self, options: CallbackOptions) -> Iterable[Observation]:
        # Run in the metric reader's thread: it never raises into the reader, and never
        # opens a journal (which may block), reading only those the clients opened.
        del options
        try:
            with self.watch_lock:
                journals = list(self.journals)
            pending: dict[str, int] = {}
            seen: set[tuple[str, str]] = set()
            for journal in journals:
                count = _pending(journal, seen)
                if count is not None:
                    location = journal.location
                    pending[location] = pending.get(location, 0) + count
            observation = self.api.observation
            return [
                observation(count, {"amaimedia.journal.location": location})
                for location, count in pending.items()
            ]
        except Exception:
            logger.debug("the spend journal gauge could not be read", exc_info=True)
            return []

    def ended(self, span: Span, error: BaseException | None) -> None:
        """End `span`: with status ERROR and `error.type` when it raised `error`."""
        if error is not None and span.is_recording():
            span.set_attribute("error.type", error_type(error))
            if isinstance(error, AmaiError):
                # The SDK's own messages, which never hold the key; an exception of the
                # caller's work may hold anything, so only its class is shown.
                span.set_status(self.api.status(self.api.error.status_code, str(error)))
            else:
                span.set_status(self.api.error)
        span.end()


def _pending(journal: ScopedJournal, seen: set[tuple[str, str]]) -> int | None:
    """How many spends `journal` holds pending; `None` if unopened, already seen or failing."""
    try:
        if not journal.is_open:
            return None
        scope = (journal.location, journal.scope)
        if scope in seen:
            # Clients of the same key (with_options copies) share a scope: counted once.
            return None
        seen.add(scope)
        return len(journal.pending())
    except Exception:
        logger.debug(
            "the spend journal %s could not be read for the gauge", journal, exc_info=True
        )
        return None


def _attach(api: _Api, span: Span) -> _Attachment | None:
    """Make `span` current, in the Context it started in, until `_detach()`."""
    if span is api.invalid_span:
        # What a no-op tracer gives when no span is current: making it current would
        # change nothing, and skipping that is most of what OpenTelemetry costs a call
        # with no SDK configured.
        return None
    return _ATTACHED.set(None), api.attach(api.set_span_in_context(span))


def _detach(api: _Api, attachment: _Attachment | None) -> None:
    if attachment is None:
        return
    mark, token = attachment
    try:
        _ATTACHED.reset(mark)
    except (ValueError, RuntimeError):
        # Left in another Context than the one it was entered in: that one is not this
        # code's to change, and the span ends anyway.
        return
    api.detach(token)


class _CallRecord:
    """One call's span and measurements (see `CallRecord`)."""

    __slots__ = ("_attached", "_call", "_recorder", "_span")

    def __init__(self, recorder: _Recorder, call: CallInfo, span: Span) -> None:
        self._recorder = recorder
        self._call = call
        self._span = span
        self._attached = _attach(recorder.api, span)

    def ended(
        self,
        result: object,
        error: BaseException | None,
        *,
        attempts: int,
        seconds: float,
    ) -> None:
        """The call ended: with `result`, or raising `error`, after `attempts` attempts."""
        recorder, span, operation = self._recorder, self._span, self._call.operation
        _detach(recorder.api, self._attached)
        if span.is_recording():
            if attempts > 1:
                span.set_attribute("http.request.resend_count", attempts - 1)
            if error is None and operation == "check":
                span.set_attribute("amaimedia.cost_tokens", _as_quote(result).cost_tokens)
            elif error is None:
                span.set_attribute("amaimedia.charged", _as_charge(result).charged)
        recorder.ended(span, error)
        if error is None:
            recorder.duration.record(seconds, {"amaimedia.operation": operation})
            if operation == "spend":
                recorder.charged.add(
                    _as_charge(result).charged, {"amaimedia.tool": self._call.tool}
                )
            return
        kind = error_type(error)
        recorder.duration.record(seconds, {"amaimedia.operation": operation, "error.type": kind})
        if operation == "spend":
            recorder.failures.add(1, {"error.type": kind})


class _BlockRecord:
    """One metered block's span (see `BlockRecord`)."""

    __slots__ = ("_attached", "_recorder", "_span", "_tool")

    def __init__(self, recorder: _Recorder, tool: str, span: Span) -> None:
        self._recorder = recorder
        self._tool = tool
        self._span: Span | None = span
        self._attached = _attach(recorder.api, span)

    def refused(self, error: BaseException, reason: str) -> None:
        """The block was refused on entry (the balance, or admission): it does not run."""
        span = self._end()
        if span is not None:
            if span.is_recording():
                span.set_attribute("amaimedia.outcome", "refused")
                span.set_attribute("amaimedia.refusal", reason)
            self._recorder.ended(span, error)
        self._recorder.refused.add(1, {"amaimedia.tool": self._tool, "amaimedia.refusal": reason})

    def ended(self, meter: BlockMeter | None, error: BaseException | None) -> None:
        """The block ended (`meter.state` tells how), or its entry raised `error`."""
        span = self._end()
        if span is None:
            return
        if meter is not None and span.is_recording():
            span.set_attribute("amaimedia.outcome", meter.state)
            span.set_attribute("amaimedia.cost_tokens", meter.quote.cost_tokens)
            if meter.charge is not None:
                span.set_attribute("amaimedia.charged", meter.charge.charged)
        self._recorder.ended(span, error)

    def _end(self) -> Span | None:
        span, self._span = self._span, None
        attachment, self._attached = self._attached, None
        _detach(self._recorder.api, attachment)
        return span


def _as_quote(result: object) -> Quote:
    return cast("Quote", result)  # a check's result is its Quote


def _as_charge(result: object) -> Charge:
    return cast("Charge", result)  # a spend's result is its Charge
