# Generated from _async_metered.py by scripts/unasync.py: edit that file, then run the
# script. scripts/test fails while this file is out of date.
"""`MeteredBlock`, what `metered()` returns, and the replay of a spend journal.

A metered block quotes, lets the caller's work run, then spends: exactly once, and never
when the work failed. Everything that does no I/O lives in `_metered_base.py`, and the
journal's rules in `_journal/_scoped.py`.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, ParamSpec, TypeVar

from ._exceptions import AmaiError, InsufficientCreditsError
from ._journal._replay import ReplayReport, ReplayRules
from ._meter import Meter
from ._metered_base import (
    MeteredArguments,
    insufficient_quote,
    require_function,
    spend_failed,
)
from ._offload import claim_inline, run_inline

if TYPE_CHECKING:
    from ._admission import Admission, Reservation
    from ._client import AmaiClient
    from ._journal import JournalKeys, ScopedJournal
    from ._models import Quote
    from ._observer import BlockWatch
    from ._types import Units

__all__ = ["MeteredBlock", "replay_journal"]

_P = ParamSpec("_P")
_R = TypeVar("_R")


class MeteredBlock:
    """What `AmaiClient.metered()` returns: a context manager, and a decorator.

    As `with client.metered(...) as meter:` it quotes on entry, runs the block,
    and spends on a clean exit; `meter` is a [`Meter`][amaimedia.Meter]. As
    `@client.metered(...)` on a plain function, each call is its own metered block.
    Build it with `metered()`, not directly; one instance runs one block at a time.
    """

    def __init__(
        self,
        client: AmaiClient,
        arguments: MeteredArguments,
        journal: ScopedJournal | None,
    ) -> None:
        self._client = client
        self._arguments = arguments
        self._journal = journal
        self._meter: Meter | None = None
        self._running = False
        self._watch: BlockWatch | None = None
        self._reservation: Reservation | None = None

    def __repr__(self) -> str:
        arguments = self._arguments
        return f"MeteredBlock(tool={arguments.tool!r}, units={arguments.units!r})"

    def __enter__(self) -> Meter:
        if self._running:
            raise RuntimeError(
                "this metered block is already running; call metered() once per block"
            )
        tool, units = self._arguments.tool, self._arguments.units
        reference = self._arguments.block_reference()
        journal = self._journal
        # The block's span is current from here to the end of its spend: its check and
        # spend are its children, and so is whatever the work traces.
        watch = self._client._observer.block(tool, units, reference)  # noqa: SLF001
        try:
            if journal is not None and not journal.is_open:
                # Before any work, and off the event loop: a journal that cannot be used
                # fails here, and one whose file another process holds locked blocks no
                # task.
                run_inline(journal.open)
            asked = time.monotonic()
            # Validated by metered() already: checked once, not again.
            quote = self._client._check(tool, units, validated=True)  # noqa: SLF001
        except BaseException as exc:
            watch.ended(None, exc)
            raise
        if not quote.allowed:
            refusal = insufficient_quote(tool, units, quote)
            watch.refused(refusal, "balance")
            raise refusal
        # The quote knows nothing of the blocks already running: the book does.
        admission = self._client._admission  # noqa: SLF001 - the client's own block
        try:
            reservation = (
                None if admission is None else _admit(admission, tool, units, quote, asked)
            )
        except InsufficientCreditsError as refusal:
            watch.refused(refusal, "reserved")
            raise
        except BaseException as exc:
            watch.ended(None, exc)
            raise
        self._meter = meter = Meter(tool, units, reference, quote)
        if reservation is not None:
            self._reservation = reservation
            meter._on_cancel = reservation.release  # noqa: SLF001 - the block's own meter
        self._watch = watch
        self._running = True
        return meter

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        meter = self._meter
        if meter is None or not self._running:  # pragma: no cover - only after __enter__
            return
        self._running = False
        watch, self._watch = self._watch, None
        reservation, self._reservation = self._reservation, None
        meter._on_cancel = None  # noqa: SLF001 - the block's own meter
        try:
            if exc is not None:
                # The work failed: nothing is charged, and the exception goes on unchanged.
                meter.state = "failed"
            elif meter.state != "cancelled":
                try:
                    _charge(self._client, self._journal, meter)
                except BaseException as failure:
                    if watch is not None:
                        watch.ended(meter, failure)
                    raise
        finally:
            # Settled, one way or the other: the reservation ends (after a charge, the
            # book counts it until the quotes on their way have seen it).
            if reservation is not None:
                reservation.release(None if meter.charge is None else meter.charge.charged)
        if watch is not None:
            watch.ended(meter, exc)

    def __call__(self, function: Callable[_P, _R]) -> Callable[_P, _R]:
        """Meter every call of `function`, each as its own block with its own reference.

        Raises:
            TypeError: This client meters only plain functions, and `function` is
                not one; or a fixed reference was given (every call after the first
                would be a free replay).
        """
        require_function(function, is_async=False, client="AmaiClient")
        per_call = self._arguments.per_call()
        client, journal = self._client, self._journal

        @functools.wraps(function)
        def metered_call(*args: _P.args, **kwargs: _P.kwargs) -> _R:
            with MeteredBlock(client, per_call(*args, **kwargs), journal):
                return function(*args, **kwargs)

        return metered_call


def _admit(
    admission: Admission, tool: str, units: Units, quote: Quote, asked: float
) -> Reservation:
    """Reserve the block's cost, or raise `InsufficientCreditsError`; see `_admission.py`."""
    shared = admission.shared_book()
    if shared is None:
        return admission.admit(tool, units, quote, asked)
    allotted = admission.admit_allotted(tool, units, quote, asked, shared)
    if allotted is not None:
        return allotted
    # The journal's book is in its database: off the event loop, and a task cancelled
    # meanwhile gives back what the thread reserved for it.
    return claim_inline(admission.admit, _give_back, tool, units, quote, asked, shared)


def _give_back(reservation: Reservation) -> None:
    reservation.release(None)


def _charge(client: AmaiClient, journal: ScopedJournal | None, meter: Meter) -> None:
    meter.state = "charging"
    written = owned = None
    if journal is not None:
        written = claim_inline(
            journal.add, journal.undo_add, meter.tool, meter.units, meter.reference
        )
        owned = written.owned
    try:
        # The meter's tool, units and reference are validated (its setter checks units).
        charge = client._spend(  # noqa: SLF001 - the block is the client's own
            meter.tool, meter.units, meter.reference, validated=True
        )
    except AmaiError as exc:
        meter.state = "spend_failed"
        if owned is not None and journal is not None:
            run_inline(journal.failed, owned, exc)
        journaled = written is not None and written.entry is not None
        raise spend_failed(meter, exc, journaled=journaled) from exc
    except BaseException:
        # Interrupted mid-spend: the outcome is unknown. The entry stays pending, and its
        # claim is dropped so that replay_pending() can settle it.
        meter.state = "spend_failed"
        if owned is not None and journal is not None:
            run_inline(journal.release, owned)
        raise
    meter.charge = charge
    meter.state = "charged"
    if owned is not None and journal is not None and written is not None:
        run_inline(journal.done, owned, charge, written.spend)


def replay_journal(
    client: AmaiClient,
    journal: ScopedJournal,
    rules: ReplayRules,
    previous: tuple[JournalKeys, ...] = (),
    *,
    adopt_unauthenticated: bool = False,
) -> ReplayReport:
    """Send the pending spends of `journal` with `client`; see `replay_pending()`.

    Only rows whose authentication code checks out are sent (or rows adopted as asked);
    the others are reported as refused. One row that fails, however it fails, is
    recorded and reported, and the replay goes on with the rest.
    """
    report = ReplayReport()
    now = rules.now()
    survey = run_inline(
        functools.partial(
            journal.survey, previous, adopt_unauthenticated=adopt_unauthenticated, note=True
        )
    )
    report.refused.extend(survey.refused)
    for candidate in survey.candidates:
        spend = candidate.spend
        if not rules.sort(spend, report, now):
            continue
        undo = functools.partial(journal.undo_claim, candidate.id)
        if not claim_inline(journal.claim_pending, undo, candidate.id):
            report.held.append(spend)
            continue
        if candidate.adopt:
            # Under the claim: nobody sends the entry while it changes hands.
            try:
                refusal = run_inline(journal.adopt, candidate)
            except BaseException:
                run_inline(journal.release, candidate.id)
                raise
            if refusal is not None:
                run_inline(journal.release, candidate.id)
                report.refused.append(refusal)
                continue
        try:
            charge = client._spend(  # noqa: SLF001 - the replay is the client's own
                spend.tool, spend.units, spend.reference, warn_on_failure=False
            )
        except (AmaiError, ValueError, TypeError) as exc:
            # ValueError, TypeError: what the row holds is no spend the API takes (units
            # that are not finite in a row adopted from 0.1, say). Nothing was sent; it is
            # recorded like a failure, and the replay goes on with the rest.
            run_inline(journal.failed, candidate.id, exc)
            journal.replay_failed(spend, exc)
            report.failed.append(spend)
            continue
        except BaseException:
            run_inline(journal.release, candidate.id)
            raise
        run_inline(journal.done, candidate.id, charge, spend)
        report.append(charge)
    journal.report_stale(report.stale, rules)
    return report
