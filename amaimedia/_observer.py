"""`Observer`: the one place a client tells what its calls and metered blocks do.

The clients and the metered blocks call it at fixed points (a call starts, an attempt is
sent, answered, retried, the call ends; a block starts, is refused, ends), and it passes
each on to whoever watches: the user's `Hooks`, the `amaimedia` logger (one INFO line
per charge, one WARNING per spend that failed for good), and OpenTelemetry's spans and
metrics (`_telemetry.py`) when `opentelemetry-api` is installed. With none of them, each
point costs an attribute check or two.

Nothing here ever sees the key: a call is described by `CallInfo` (operation, tool,
units, reference) and the request's URL, never by its headers.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, cast

from ._events import ChargeEvent, Hooks, Operation, RequestEvent, ResponseEvent, RetryEvent
from ._exceptions import AmaiError, APIError, APIResponseValidationError
from ._logging import logger
from ._printable import printable
from ._response import request_id_of_answer
from ._types import Units

if TYPE_CHECKING:
    from collections.abc import Callable

    import httpx

    from ._base_client import Answer
    from ._journal import ScopedJournal
    from ._meter import Meter
    from ._models import Charge

__all__ = ["BlockWatch", "CallInfo", "CallWatch", "Observer", "error_type"]


@dataclass(frozen=True, slots=True)
class CallInfo:
    """What one `check()` or `spend()` is about: all any watcher is told of it."""

    operation: Operation
    tool: str
    units: Units
    reference: str | None = None
    # False for a replay's spend: the replay logs its own warning when one fails.
    warn_on_failure: bool = True


class CallRecord(Protocol):
    """One call as OpenTelemetry records it (its span, its duration)."""

    def ended(
        self,
        result: object,
        error: BaseException | None,
        *,
        attempts: int,
        seconds: float,
    ) -> None:
        """The call ended: with `result`, or raising `error`, after `attempts` attempts."""


class BlockRecord(Protocol):
    """One metered block as OpenTelemetry records it (its span, current while it runs)."""

    def refused(self, error: BaseException, reason: str) -> None:
        """The block was refused on entry and does not run.

        `reason` is `"balance"` (the quote said the balance does not cover the work) or
        `"reserved"` (it does, but not once the blocks in flight are paid).
        """

    def ended(self, meter: Meter | None, error: BaseException | None) -> None:
        """The block ended (`meter.state` tells how), or its entry raised `error`."""


class Recorder(Protocol):
    """OpenTelemetry's side of the observer, for one pair of providers."""

    def call_started(self, call: CallInfo, url: httpx.URL) -> CallRecord:
        """A call is starting; its span is current until `ended()`."""

    def block_started(self, tool: str, units: Units, reference: str) -> BlockRecord:
        """A metered block is starting; its span is current until it ends."""

    def watch_journal(self, journal: ScopedJournal) -> None:
        """Report how many spends `journal` holds pending, as a gauge."""


class Observer:
    """What watches one client's calls: its hooks, the logger, and OpenTelemetry.

    A `with_options` copy gets its own observer (it may carry other hooks); copies share
    the providers, and so their instruments.
    """

    __slots__ = (
        "_journal",
        "_meter_provider",
        "_recorder",
        "_resolved",
        "_tracer_provider",
        "hooks",
    )

    def __init__(
        self,
        hooks: Hooks | None,
        *,
        tracer_provider: Any = None,
        meter_provider: Any = None,
        journal: ScopedJournal | None = None,
    ) -> None:
        if hooks is not None and not isinstance(hooks, Hooks):
            raise TypeError(f"hooks must be an amaimedia.Hooks, got {type(hooks).__name__}")
        self.hooks = hooks
        self._tracer_provider = tracer_provider
        self._meter_provider = meter_provider
        self._journal = journal
        self._recorder: Recorder | None = None
        self._resolved = False

    @property
    def tracer_provider(self) -> Any:
        """The tracer provider given to the client; `None` for OpenTelemetry's global one."""
        return self._tracer_provider

    @property
    def meter_provider(self) -> Any:
        """The meter provider given to the client; `None` for OpenTelemetry's global one."""
        return self._meter_provider

    def recorder(self) -> Recorder | None:
        """OpenTelemetry's recorder, looked up on first use; `None` when it is not installed."""
        if not self._resolved:
            from ._telemetry import recorder_for

            recorder = recorder_for(self._tracer_provider, self._meter_provider)
            if recorder is not None and self._journal is not None:
                recorder.watch_journal(self._journal)
            self._recorder = recorder
            self._resolved = True
        return self._recorder

    def call(self, call: CallInfo, url: httpx.URL) -> CallWatch:
        """Start watching one call to `url`; the client reports its attempts and its end."""
        return CallWatch(self, call, url)

    def block(self, tool: str, units: Units, reference: str) -> BlockWatch:
        """Start watching one metered block, before its quote."""
        recorder = self.recorder()
        record = None if recorder is None else recorder.block_started(tool, units, reference)
        return BlockWatch(record)


class CallWatch:
    """One call being watched: the client tells it each attempt, each retry, and the end."""

    __slots__ = ("_call", "_hooks", "_record", "_response", "_started", "attempts")

    def __init__(self, observer: Observer, call: CallInfo, url: httpx.URL) -> None:
        self._call = call
        self._hooks = observer.hooks
        recorder = observer.recorder()
        self._record = None if recorder is None else recorder.call_started(call, url)
        self._response: Answer | None = None
        self._started = time.perf_counter()
        self.attempts = 0

    def attempt_starting(self) -> float:
        """An attempt is about to be sent; returns when it started, for `attempt_ended()`."""
        self.attempts += 1
        hooks = self._hooks
        if hooks is not None and hooks.on_request is not None:
            call = self._call
            event = RequestEvent(
                call.operation, call.tool, call.units, call.reference, self.attempts
            )
            _run_hook("on_request", hooks.on_request, event)
        return time.perf_counter()

    def attempt_ended(
        self, started: float, response: Answer | None, error: BaseException | None
    ) -> None:
        """The attempt begun at `started` ended: answered with `response`, or raising `error`."""
        if response is None and isinstance(error, APIError | APIResponseValidationError):
            response = error.response
        if response is not None:
            self._response = response
        hooks = self._hooks
        if hooks is not None and hooks.on_response is not None:
            call = self._call
            event = ResponseEvent(
                call.operation,
                call.tool,
                call.units,
                call.reference,
                self.attempts,
                None if response is None else response.status_code,
                None if response is None else request_id_of_answer(response),
                error,
                time.perf_counter() - started,
            )
            _run_hook("on_response", hooks.on_response, event)

    def retrying(self, error: BaseException, wait: float) -> None:
        """The last attempt failed with `error`; the next comes in `wait` seconds."""
        hooks = self._hooks
        if hooks is not None and hooks.on_retry is not None:
            call = self._call
            event = RetryEvent(
                call.operation, call.tool, call.units, call.reference, self.attempts, wait, error
            )
            _run_hook("on_retry", hooks.on_retry, event)

    def succeeded(self, result: object) -> None:
        """The call returned `result` (a `Quote`, a `Charge`)."""
        if self._record is not None:
            self._record.ended(
                result, None, attempts=self.attempts, seconds=time.perf_counter() - self._started
            )
        call = self._call
        if call.operation != "spend":
            return
        charge = cast("Charge", result)
        # Read from the answer's headers when the charge was parsed.
        request_id = charge.request_id
        if logger.isEnabledFor(logging.INFO):
            shown_id = None if request_id is None else printable(request_id)
            logger.info(
                "charged %d tokens for %s x%s (reference=%s, balance_after=%d, request_id=%s)",
                charge.charged,
                call.tool,
                call.units,
                charge.reference,
                charge.balance_after,
                shown_id,
                extra={
                    "tool": call.tool,
                    "units": call.units,
                    "reference": charge.reference,
                    "charged": charge.charged,
                    "balance_after": charge.balance_after,
                    "request_id": shown_id,
                },
            )
        hooks = self._hooks
        if hooks is not None and hooks.on_charge is not None:
            event = ChargeEvent(
                call.tool,
                call.units,
                charge.reference,
                charge.charged,
                charge.balance_after,
                request_id,
                self.attempts,
            )
            _run_hook("on_charge", hooks.on_charge, event)

    def failed(self, error: BaseException) -> None:
        """The call raised `error`: for good, after every retry it was worth."""
        if self._record is not None:
            self._record.ended(
                None, error, attempts=self.attempts, seconds=time.perf_counter() - self._started
            )
        call = self._call
        if call.operation == "spend" and call.warn_on_failure and isinstance(error, AmaiError):
            # A formatter writes the fields as they are (`%(request_id)s`): the server's
            # request id is escaped, as in the charge line, so that it forges no log line.
            request_id: str | None = getattr(error, "request_id", None)
            logger.warning(
                "spend of %s x%s failed (reference=%s): %s",
                call.tool,
                call.units,
                call.reference,
                error,
                extra={
                    "tool": call.tool,
                    "units": call.units,
                    "reference": call.reference,
                    "error_type": error_type(error),
                    "status_code": getattr(error, "status_code", None),
                    "request_id": None if request_id is None else printable(request_id),
                },
            )


class BlockWatch:
    """One metered block being watched, from before its quote to after its spend."""

    __slots__ = ("_record",)

    def __init__(self, record: BlockRecord | None) -> None:
        self._record = record

    def refused(self, error: BaseException, reason: str) -> None:
        """The block was refused on entry and does not run; `error` is what it raises.

        `reason`: `"balance"` for a refusing quote, `"reserved"` for admission.
        """
        if self._record is not None:
            self._record.refused(error, reason)

    def ended(self, meter: Meter | None, error: BaseException | None = None) -> None:
        """The block ended (`meter.state` says how), or its entry raised `error`."""
        if self._record is not None:
            self._record.ended(meter, error)


def error_type(error: BaseException) -> str:
    """How a failure is named to watchers: the API's stable error string, else the class."""
    if isinstance(error, APIError) and error.error:
        return printable(error.error)
    return type(error).__name__


def _run_hook(name: str, hook: Callable[[Any], object], event: object) -> None:
    """Call a user's hook; one that raises is logged and ignored, never breaking the call."""
    try:
        hook(event)
    except Exception:
        logger.warning("the %s hook raised; the call goes on without it", name, exc_info=True)
