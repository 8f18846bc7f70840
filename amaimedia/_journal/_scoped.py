"""`ScopedJournal`: one account's view of a spend journal, as the metered blocks use it.

A client builds one for its key and base URL, and hands it to every metered block and
replay it runs. The block's rules for a journal live here, once, for both clients: an
entry is committed before the spend is sent, a journal that cannot be written never
stops a spend (sending it is the charge's best chance), and a failure to record an
outcome is logged, never raised over the outcome itself.

The rows' authentication lives here too, on top of `_integrity.py`: each row written is
sealed with the key's code, and each row read back is checked before anything of it is
sent. A row that fails (changed without the key, written by amaimedia 0.1 before rows had
codes, unreadable) is refused: reported, logged once per process, noted on the row, and
never sent. Entries of a previous key, or of 0.1, are adopted only when asked for.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Final

from amaimedia._auth import ApiKey
from amaimedia._exceptions import SpendJournalError
from amaimedia._logging import logger
from amaimedia._models import Charge
from amaimedia._types import Units

from ._integrity import JournalKeys
from ._protocol import (
    EntryId,
    JournalEntry,
    PendingSpend,
    RefusalKind,
    RefusedSpend,
    SpendJournal,
    TransactionalJournal,
    UnreadableEntry,
    cut,
    shown,
)
from ._replay import ReplayRules

if TYPE_CHECKING:
    import httpx

    from . import JournalTarget

__all__ = [
    "Candidate",
    "Outbox",
    "ScopedJournal",
    "Survey",
    "Written",
    "journal_keys",
    "previous_journal_keys",
]

_TAMPERED: Final = (
    "its authentication code does not match what it holds: the row was changed by someone "
    "without the API key (or flipped back to pending after it was charged), so it is not sent; "
    "find out who can write the journal, then settle the spend by hand or delete the row"
)
_NO_CODE: Final = (
    "it carries no authentication code, so nothing shows this key wrote it as it is: it is "
    "not sent; settle it by hand or delete the row"
)
_LEGACY: Final = (
    "it was written by amaimedia 0.1, before rows were authenticated, so nothing shows it is "
    "as that version wrote it: it is not sent until adopted; check it, then replay with "
    "adopt_unauthenticated=True (amaimedia replay --adopt-unauthenticated)"
)
_NOT_ADOPTED: Final = (
    "it could not be adopted by this key: this key's entries hold one of the same tool and "
    "reference already, so it is left as it was, pending where it is"
)


def journal_keys(api_key: ApiKey, base_url: httpx.URL) -> JournalKeys:
    """The journal keys of a client's configuration."""
    return JournalKeys(api_key, base_url)


def previous_journal_keys(
    previous_keys: Iterable[str], current: ApiKey, base_url: httpx.URL
) -> tuple[JournalKeys, ...]:
    """The journal keys of `replay_pending(previous_keys=...)`, checked; never logged.

    The current key and repeated keys are dropped: they adopt nothing.

    Raises:
        TypeError: `previous_keys` is a single str, or not an iterable of str.
        ValueError: A key is malformed (the message names its index, never the key).
    """
    if isinstance(previous_keys, str | bytes):
        del previous_keys  # one key, given bare: it must not stay in this frame either
        raise TypeError(
            "previous_keys must be a list of API keys; wrap a single key in a list: "
            "previous_keys=[old_key]"
        )
    try:
        values: list[object] = list(previous_keys)
    except TypeError:
        kind = type(previous_keys).__name__
        del previous_keys
        raise TypeError(f"previous_keys must be a list of API keys, got {kind}") from None
    del previous_keys
    try:
        return _derive(values, current, base_url)
    finally:
        # Error trackers show the locals of every frame: the list shows empty there.
        values.clear()


def _derive(values: list[object], current: ApiKey, base_url: httpx.URL) -> tuple[JournalKeys, ...]:
    keys: list[JournalKeys] = []
    # Digests, not keys: nothing of a key stays in a local of this frame.
    seen = {hashlib.sha256(current.reveal().encode()).digest()}
    for index in range(len(values)):
        key = ApiKey(values[index], source=f"previous_keys[{index}]")
        digest = hashlib.sha256(key.reveal().encode()).digest()
        if digest not in seen:
            seen.add(digest)
            keys.append(JournalKeys(key, base_url))
    return tuple(keys)


@dataclass(frozen=True)
class Written:
    """What `ScopedJournal.add` did: the entry, its claim, and what the row holds.

    `entry` is `None` when the row could not be written; `claimed`, whether this caller
    holds its claim; `spend`, what the row holds, for the code of its outcome.
    """

    entry: EntryId | None
    claimed: bool
    spend: PendingSpend

    @property
    def owned(self) -> EntryId | None:
        """The entry, if this caller holds its claim."""
        return self.entry if self.claimed else None


@dataclass(frozen=True)
class Candidate:
    """A pending entry a replay may send: authenticated, or adopted on request.

    Attributes:
        id: The entry.
        spend: What its row holds, as checked.
        adopt: Whether it must first become this key's (a previous key's, or 0.1's).
    """

    id: EntryId
    spend: PendingSpend
    adopt: bool = False


@dataclass
class Survey:
    """The pending rows of a key, sorted: what may be sent, what is refused and why."""

    candidates: list[Candidate]
    refused: list[RefusedSpend]


class Outbox:
    """A PostgreSQL journal, for writes in the caller's transaction, sealed by one key."""

    __slots__ = ("_backend", "_journal")

    def __init__(self, backend: TransactionalJournal, journal: ScopedJournal) -> None:
        self._backend = backend
        self._journal = journal

    def add_in(self, connection: Any, tool: str, units: Units, reference: str) -> EntryId:
        """Write a sealed pending spend on `connection`, in its open transaction."""
        scope, spend, mac = self._journal.sealed(tool, units, reference)
        return self._backend.add_in(
            connection, scope, tool, units, reference, created_at=spend.created_at, mac=mac
        )

    async def add_in_async(
        self, connection: Any, tool: str, units: Units, reference: str
    ) -> EntryId:
        """`add_in` on an async connection."""
        scope, spend, mac = self._journal.sealed(tool, units, reference)
        return await self._backend.add_in_async(
            connection, scope, tool, units, reference, created_at=spend.created_at, mac=mac
        )


class JournalOpening:
    """A client's journal: the backend, or what to open it from, shared by its copies.

    The sync client opens the backend when it is built. The async client, built inside
    a running event loop, opens it on first use, in a worker thread: an SQLite file
    whose write lock another process holds (or a database that is slow to answer) would
    otherwise block the loop. `open` is idempotent and thread-safe; a failed opening is
    tried again on the next use.

    Args:
        target: What `spend_journal` was given.
        defer: Open on first use instead of now.

    Raises:
        TypeError: `target` is not a path, a URL or a `SpendJournal`.
        ImportError: A URL needs psycopg, which is not installed.
        SpendJournalError: Opening now, the journal cannot be used; or a URL that cannot
            be parsed.
    """

    __slots__ = ("_backend", "_location", "_lock", "_target")

    def __init__(self, target: JournalTarget, *, defer: bool) -> None:
        from . import describe_journal, is_database_url, open_journal

        self._lock = threading.Lock()
        self._backend: SpendJournal | None = None
        self._target: JournalTarget | None = None
        try:
            if defer and isinstance(target, str | os.PathLike):
                self._location = describe_journal(target)
                # A path is kept resolved: opened later, it is the same file whatever the
                # working directory is by then.
                self._target = target if is_database_url(target) else self._location
            else:
                self._backend = open_journal(target)
                self._location = self._backend.location
        except BaseException:
            del target  # it may hold a password: see open_journal()
            raise

    def __repr__(self) -> str:
        # Safe on one whose constructor failed too (a traceback shows it).
        location = getattr(self, "_location", "(not opened)")
        return f"JournalOpening({location!r}, open={getattr(self, '_backend', None) is not None})"

    def __reduce__(self) -> str | tuple[object, ...]:
        raise TypeError("a client's journal cannot be pickled; open it in each process")

    @property
    def location(self) -> str:
        """Where the journal is, safe to show; known before it is opened."""
        return self._location

    @property
    def is_open(self) -> bool:
        """Whether the backend is open."""
        return self._backend is not None

    def open(self) -> SpendJournal:
        """The backend, opened now if it was not.

        This may block: the async client runs it in a worker thread.

        Raises:
            SpendJournalError: The journal cannot be used.
        """
        backend = self._backend
        if backend is not None:
            return backend
        from . import open_journal

        with self._lock:
            if self._backend is None:
                # Not held in a local: the frames of a failure must not keep a password.
                assert self._target is not None  # set until the journal is open
                self._backend = open_journal(self._target)
                self._location = self._backend.location
                self._target = None
            return self._backend


class ScopedJournal:
    """A journal backend and the scope of one client's entries in it.

    Args:
        opening: The journal, open or to be opened.
        keys: What the client's key gives the journal: its scope and its rows' codes.
    """

    # __weakref__: OpenTelemetry's journal gauge holds a client's journal only while it lives.
    __slots__ = ("__weakref__", "_keys", "_opening", "_scope", "_warned")

    def __init__(self, opening: JournalOpening, keys: JournalKeys) -> None:
        self._opening = opening
        self._keys = keys
        self._scope: str | None = None
        # The refused rows already warned about: once per row (and reason) is enough.
        self._warned: set[tuple[str, EntryId, str]] = set()

    def __repr__(self) -> str:
        return f"ScopedJournal({self.location!r})"

    @property
    def location(self) -> str:
        """Where the backend lives, safe to show."""
        return self._opening.location

    @property
    def is_open(self) -> bool:
        """Whether the backend is open (the async client opens it on first use)."""
        return self._opening.is_open

    def open(self) -> None:
        """Open the backend if it is not: blocking, so the async client runs it in a thread.

        Raises:
            SpendJournalError: The journal cannot be used.
        """
        self._opening.open()

    @property
    def backend(self) -> SpendJournal:
        """The backend (opened now, blocking, if nobody opened it yet)."""
        return self._opening.open()

    @property
    def scope(self) -> str:
        """This key's scope in the journal: derived from the key, the API and its salt."""
        if self._scope is None:
            self._scope = self._keys.scope(self.backend.salt)
        return self._scope

    def sealed(self, tool: str, units: Units, reference: str) -> tuple[str, PendingSpend, str]:
        """A new pending row: its scope, what it holds (written now), and its code."""
        scope = self.scope
        spend = PendingSpend(tool, units, reference, datetime.now(timezone.utc), 0, None, None)
        return scope, spend, self._keys.seal(scope, spend, "pending")

    def add(self, tool: str, units: Units, reference: str) -> Written:
        """Commit a spend as pending before it is sent, and claim it for the sender.

        Returns the entry (`None` if it could not be written) and whether the caller
        holds its claim (`False` when a replay elsewhere holds it: the spend still goes
        out, since the server charges a reference once, and the replay settles it). A
        journal that cannot be written does not stop the spend: sending it is the best
        chance the charge has. The failure is logged, and a `SpendFailedError` raised
        later says the spend was not journaled.
        """
        scope, spend, mac = self.sealed(tool, units, reference)
        try:
            entry, claimed = self.backend.add_and_claim(
                scope, tool, units, reference, created_at=spend.created_at, mac=mac
            )
        except SpendJournalError as exc:
            logger.warning("the spend %s is sent without a journal entry: %s", reference, exc)
            return Written(None, False, spend)
        return Written(entry, claimed, spend)

    def undo_add(self, written: Written) -> None:
        """Give back the claim `add` took, for a caller that will not send the spend."""
        if written.owned is not None:
            self.backend.release(written.owned)

    def undo_claim(self, entry: EntryId, claimed: bool) -> None:
        """Give back a claim taken for a caller that will not send the spend."""
        if claimed:
            self.backend.release(entry)

    def claim_pending(self, entry: EntryId) -> bool:
        """Claim `entry` if it is still pending and nobody else holds it."""
        return self.backend.claim_pending(entry)

    def release(self, entry: EntryId) -> None:
        """Give a claim back, leaving the entry pending (its outcome is unknown)."""
        self.backend.release(entry)

    def done(self, entry: EntryId, charge: Charge, spend: PendingSpend) -> None:
        """Mark a claimed entry charged, sealed as done, and release it.

        A failure to write is logged, not raised: the server has the charge, and a later
        replay of the entry would charge nothing.
        """
        mac = self._keys.seal(self.scope, spend, "done", charge.charged)
        try:
            self.backend.mark_done(entry, charge.charged, mac=mac)
        except SpendJournalError as exc:
            logger.warning("the spend %s was charged but stays pending: %s", charge.reference, exc)
        finally:
            self.backend.release(entry)

    def failed(self, entry: EntryId, error: BaseException) -> None:
        """Record a failed attempt on a claimed entry, which stays pending, and release it."""
        try:
            self.backend.mark_failed(entry, error)
        except SpendJournalError as exc:
            logger.warning("could not record the failure of a pending spend: %s", exc)
        finally:
            self.backend.release(entry)

    def outbox(self, connection: object, *, is_async: bool) -> Outbox:
        """The backend, for a sealed write in the caller's transaction on `connection`.

        Raises:
            TypeError: The backend cannot write in the caller's transaction (SQLite), or
                `connection` is not a connection of its driver of the right kind.
        """
        backend = self.backend
        if not isinstance(backend, TransactionalJournal):
            raise TypeError(
                f"add_pending_spend() writes in your own database transaction, which needs "
                f"a PostgreSQL spend journal; this client's is {backend.location}"
            )
        accepts = getattr(backend, "accepts", None)
        if callable(accepts) and not accepts(connection, is_async=is_async):
            kind = "psycopg.AsyncConnection" if is_async else "psycopg.Connection"
            raise TypeError(
                f"add_pending_spend() needs a {kind} to the journal's database, "
                f"got {type(connection).__name__}"
            )
        return Outbox(backend, self)

    # -- reading back ------------------------------------------------------------------

    def pending(self) -> list[JournalEntry]:
        """This key's pending entries whose rows check out, oldest first.

        Rows that do not check out are left out, and logged once (see `survey`).

        Raises:
            SpendJournalError: The journal cannot be read.
        """
        survey = self.survey()
        return [
            JournalEntry(candidate.id, candidate.spend)
            for candidate in survey.candidates
            if not candidate.adopt
        ]

    def survey(
        self,
        previous: tuple[JournalKeys, ...] = (),
        *,
        adopt_unauthenticated: bool = False,
        note: bool = False,
    ) -> Survey:
        """Every pending row of this key (and of `previous` keys), checked and sorted.

        A row of this key's scope whose code matches may be sent. So may one of a
        previous key's scope whose code matches that key's, once adopted; and one of the
        scope amaimedia 0.1 used for this key or a previous one, which has no code, when
        `adopt_unauthenticated` says so. Every other row is refused, logged once per
        process, and, with `note`, given the reason as its `last_error`.

        Raises:
            SpendJournalError: The journal cannot be read.
        """
        backend = self.backend
        scope = self.scope
        # (scope, the keys that sealed its rows, whether those rows are another key's,
        # whether they come from layout 1 and have no code)
        sources: list[tuple[str, JournalKeys, bool, bool]] = [
            (scope, self._keys, False, False),
            (self._keys.legacy_scope, self._keys, True, True),
        ]
        for keys in previous:
            sources.append((keys.scope(backend.salt), keys, True, False))
            sources.append((keys.legacy_scope, keys, True, True))
        candidates: list[Candidate] = []
        refused: list[tuple[EntryId, RefusedSpend]] = []
        for row_scope, keys, foreign, legacy in sources:
            for stored in backend.pending(row_scope):
                if isinstance(stored, UnreadableEntry):
                    reason = f"it cannot be read ({stored.problem}), so it is not sent"
                    refused.append((stored.id, _refusal(stored, "unreadable", reason)))
                    continue
                kind: RefusalKind
                if stored.mac is None:
                    if legacy and adopt_unauthenticated:
                        candidates.append(Candidate(stored.id, stored.spend, adopt=True))
                        continue
                    kind, reason = ("legacy", _LEGACY) if legacy else ("unauthenticated", _NO_CODE)
                elif not legacy and keys.verify(stored.mac, row_scope, stored.spend):
                    candidates.append(Candidate(stored.id, stored.spend, adopt=foreign))
                    continue
                else:
                    kind, reason = "tampered", _TAMPERED
                refused.append((stored.id, _refusal(stored, kind, reason)))
        candidates.sort(key=lambda candidate: candidate.id)
        refused.sort(key=lambda pair: pair[0])
        for entry, refusal in refused:
            self._refuse(entry, refusal, note=note)
        return Survey(candidates, [refusal for _, refusal in refused])

    def adopt(self, candidate: Candidate) -> RefusedSpend | None:
        """Make a claimed candidate this key's: its scope, and its code under this key.

        The code covers what the row held when it was checked (`candidate.spend`), never
        what it holds now: a row changed in between no longer matches, and is refused by
        the next replay.

        Returns:
            `None` once adopted, or the refusal when the entry cannot be (this key holds
            an entry of the same tool and reference); it is left as it was.
        """
        scope = self.scope
        mac = self._keys.seal(scope, candidate.spend, "pending")
        if self.backend.rescope(candidate.id, scope, mac):
            return None
        refusal = _refusal(JournalEntry(candidate.id, candidate.spend), "duplicate", _NOT_ADOPTED)
        self._refuse(candidate.id, refusal, note=False)
        return refusal

    def _refuse(self, entry: EntryId, spend: RefusedSpend, *, note: bool) -> None:
        seen = (self.location, entry, spend.reason)
        if seen not in self._warned:
            self._warned.add(seen)
            # The row's values are whatever someone wrote: quoted, on one line, cut short.
            logger.warning(
                "the pending row %s x%s (reference=%s) in the spend journal %s is refused: %s",
                shown(spend.tool),
                shown(spend.units),
                shown(spend.reference),
                self.location,
                spend.reason,
            )
        if note:
            try:
                self.backend.mark_refused(entry, f"refused: {spend.reason}")
            except SpendJournalError as exc:
                logger.warning("could not record why a pending row is refused: %s", exc)

    @staticmethod
    def report_stale(stale: list[PendingSpend], rules: ReplayRules) -> None:
        """Say once per replay that entries were too old to send, and are left alone."""
        if stale:
            logger.warning(
                "%d pending spend(s) are older than max_age (%s) and were not sent, since the "
                "server may have forgotten their references; the oldest is %s x%s "
                "(reference=%s). They stay in the journal %s",
                len(stale),
                rules.max_age,
                stale[0].tool,
                stale[0].units,
                stale[0].reference,
                "until settled by hand or replayed with a larger max_age",
            )

    @staticmethod
    def replay_failed(spend: PendingSpend, error: BaseException) -> None:
        """Report a replayed spend that failed again; it stays pending."""
        logger.warning(
            "the pending spend %s x%s (reference=%s) failed again and stays in the journal: %s",
            spend.tool,
            spend.units,
            spend.reference,
            error,
        )


def _refusal(
    stored: JournalEntry | UnreadableEntry, kind: RefusalKind, reason: str
) -> RefusedSpend:
    if isinstance(stored, UnreadableEntry):
        tool, units, reference = stored.tool, stored.units, stored.reference
        created_at = stored.created_at
    else:
        spend = stored.spend
        tool, units, reference = spend.tool, str(spend.units), spend.reference
        created_at = spend.created_at
    return RefusedSpend(cut(tool), cut(units), cut(reference), created_at, kind, reason)
