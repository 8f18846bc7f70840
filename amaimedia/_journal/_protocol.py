"""The spend journal's seam: what the clients and metered blocks need from a backend."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any, Literal, Protocol, TypeAlias, runtime_checkable

from amaimedia import _json
from amaimedia._html import html_table
from amaimedia._types import Units

__all__ = [
    "EntryId",
    "JournalEntry",
    "PendingSpend",
    "RefusalKind",
    "RefusedSpend",
    "SpendJournal",
    "StoredEntry",
    "TransactionalJournal",
    "UnreadableEntry",
    "cut",
    "read_entry",
    "shown",
]

EntryId: TypeAlias = int
"""How a backend names one entry: unique within its file or database."""


@dataclass(frozen=True)
class PendingSpend:
    """A spend in the journal that the server has not confirmed yet.

    Attributes:
        tool: The tool that did the work.
        units: The units to charge.
        reference: The spend's idempotency key.
        created_at: When the entry was first written (UTC).
        attempts: How many times the spend was sent and failed.
        last_error: The last failure, as `str(error)`, or `None` if none was recorded
            (such as a process killed while the spend was in flight).
        error_code: The stable error string of the last failure when the server gave
            one (`"insufficient_credits"`): a rejection that a retry alone cannot fix.
    """

    tool: str
    units: Units
    reference: str
    created_at: datetime
    attempts: int
    last_error: str | None
    error_code: str | None

    def _repr_html_(self) -> str:
        """Every field as a small HTML table for notebooks."""
        return html_table(
            type(self).__name__,
            [(field.name, getattr(self, field.name)) for field in fields(self)],
        )


RefusalKind: TypeAlias = Literal[
    "tampered", "unauthenticated", "legacy", "unreadable", "duplicate"
]
"""Why a pending row is refused; see `RefusedSpend.kind`."""


@dataclass(frozen=True)
class RefusedSpend:
    """A pending row of the journal that the SDK will not send, and why.

    The row is not one this key wrote, or no longer as it wrote it. Its fields are shown
    as the row holds them, unchecked (do not act on them without checking), and cut at
    200 characters.

    Attributes:
        tool: The row's tool.
        units: The row's units, as text.
        reference: The row's reference.
        created_at: When the row says it was written, or `None` if that cannot be read.
        kind: `"tampered"`: its authentication code does not match what it holds (changed
            by someone without the key, or flipped back to pending after it was charged).
            `"legacy"`: written by amaimedia 0.1, before rows were authenticated; adopt it
            with `adopt_unauthenticated=True` once checked. `"unauthenticated"`: no code
            at all, and not from 0.1. `"unreadable"`: malformed (units that are no number,
            JSON nested too deep, a time that cannot be read). `"duplicate"`: a previous
            key's entry that could not be adopted, since this key has one of the same
            tool and reference.
        reason: Why it is not sent and what to do about it, in words.
    """

    tool: str
    units: str
    reference: str
    created_at: datetime | None
    kind: RefusalKind
    reason: str

    def _repr_html_(self) -> str:
        """Every field as a small HTML table for notebooks."""
        return html_table(
            type(self).__name__,
            [(field.name, getattr(self, field.name)) for field in fields(self)],
        )


@dataclass(frozen=True)
class JournalEntry:
    """A pending spend as a backend stores it: its id, what to send, and the row's code.

    Attributes:
        id: The entry.
        spend: What the row holds.
        mac: The row's authentication code (see `_integrity.py`), or `None` for a row
            written without one (by amaimedia 0.1, or straight into the backend).
    """

    id: EntryId
    spend: PendingSpend
    mac: str | None = None


@dataclass(frozen=True)
class UnreadableEntry:
    """A pending row that cannot be decoded: what of it can be shown, and what is wrong.

    One such row must not stop a listing or a replay of the others: backends return it
    in its place, and the replay reports it as refused.
    """

    id: EntryId
    tool: str
    units: str
    reference: str
    created_at: datetime | None
    problem: str


StoredEntry: TypeAlias = "JournalEntry | UnreadableEntry"
"""What `SpendJournal.pending` returns for each pending row."""


@runtime_checkable
class SpendJournal(Protocol):
    """A place where spends are committed before they are sent: one file or database.

    SQLite (`_sqlite.py`) and PostgreSQL (`_postgres.py`) implement it. A backend is
    shared by every client of the process that opens the same location, and by other
    processes that open it too; `scope` (derived from the key, the API and the journal's
    `salt`, never the key) keeps accounts apart in it.

    A backend stores what it is given and knows no key: the clients compute each row's
    authentication code (`mac`) and check it when they read the row back
    (`_integrity.py`). A backend must store `units`, `reference`, `tool` and `created_at`
    exactly as given, since the code covers them.

    `add` must be durable when it returns: it is the whole point of a journal; the
    outcomes (`mark_done`, `mark_failed`, `mark_refused`) may be recorded lazily, since a
    lost one only leads to a replay the API answers without charging again. Every method
    may block on I/O, so the async client runs them all in worker threads (`claim` too,
    in a way that gives back a claim whose caller was cancelled while waiting for it).

    Errors are raised as `SpendJournalError`.

    A backend may also hold a reservation book for every process using it: a
    `reservation_book()` method, not part of this protocol, returning a `SharedBook`
    (`_admission.py`), one per backend object and process. Admission looks for it on the
    open backend; without it, each process's blocks are admitted against its own book. A
    book without `SharedBook.holds` decides every block itself (no allotments).
    """

    @property
    def location(self) -> str:
        """Where the journal lives, safe to show: a path, or a URL without its password."""
        ...

    @property
    def salt(self) -> str:
        """The journal's random salt, made with it: what makes its scopes its own."""
        ...

    def add(
        self,
        scope: str,
        tool: str,
        units: Units,
        reference: str,
        *,
        created_at: datetime | None = None,
        mac: str | None = None,
    ) -> EntryId:
        """Commit a pending spend and return its entry.

        Writing the same `(scope, tool, reference)` again makes that entry pending again,
        with the new units, time and code and a fresh history, rather than adding a
        second one. `created_at` defaults to now; `mac` to none (a row no client trusts).
        """
        ...

    def add_and_claim(
        self,
        scope: str,
        tool: str,
        units: Units,
        reference: str,
        *,
        created_at: datetime | None = None,
        mac: str | None = None,
    ) -> tuple[EntryId, bool]:
        """`add`, and `claim` the entry, so that no replay can take it in between.

        Returns the entry and whether the claim was taken (`False` if someone else
        holds it). The entry, once visible to other workers, is already claimed.
        """
        ...

    def mark_done(self, entry: EntryId, charged: int, *, mac: str | None = None) -> None:
        """Record that the server confirmed the spend, with the done row's code."""
        ...

    def mark_failed(self, entry: EntryId, error: BaseException) -> None:
        """Record a failed attempt; the entry stays pending."""
        ...

    def mark_refused(self, entry: EntryId, reason: str) -> None:
        """Record why a pending entry is not sent (as its `last_error`); it stays pending."""
        ...

    def rescope(self, entry: EntryId, scope: str, mac: str) -> bool:
        """Move a pending entry to another scope, with its code there (a key's adoption).

        Returns `False`, changing nothing, when the entry is no longer pending or `scope`
        holds an entry of the same tool and reference already.
        """
        ...

    def pending(self, scope: str) -> list[StoredEntry]:
        """The pending entries of one scope, oldest first.

        A row that cannot be decoded comes as an `UnreadableEntry`, in its place: one bad
        row never stops the listing of the others.
        """
        ...

    def claim(self, entry: EntryId) -> bool:
        """Take the exclusive right to send an entry; `False` if someone else holds it.

        A claim must end when its holder dies (a killed process), with no lease to wait
        out, so that what it left behind can be replayed at once.
        """
        ...

    def claim_pending(self, entry: EntryId) -> bool:
        """Claim an entry if it is still pending; `False` if it is taken or settled."""
        ...

    def release(self, entry: EntryId) -> None:
        """Give a claim back."""
        ...


@runtime_checkable
class TransactionalJournal(Protocol):
    """A journal in a database the caller writes to as well: the transactional outbox.

    `add_in` writes a pending spend on the caller's own connection, inside the caller's
    transaction, so that the work's result and the spend it owes commit together or not
    at all. PostgreSQL (`_postgres.py`) implements it.
    """

    def add_in(
        self,
        connection: Any,
        scope: str,
        tool: str,
        units: Units,
        reference: str,
        *,
        created_at: datetime | None = None,
        mac: str | None = None,
    ) -> EntryId:
        """Write a pending spend on `connection`, in whatever transaction it has open."""
        ...

    async def add_in_async(
        self,
        connection: Any,
        scope: str,
        tool: str,
        units: Units,
        reference: str,
        *,
        created_at: datetime | None = None,
        mac: str | None = None,
    ) -> EntryId:
        """`add_in` on an async connection."""
        ...


def read_entry(row: tuple[object, ...], created_at: Callable[[object], datetime]) -> StoredEntry:
    """One pending row as a backend read it, decoded; never raises for what the row holds.

    `row` is `(id, tool, units, reference, created_at, attempts, last_error, error_code,
    mac)`; `created_at` decodes the backend's form of the time. Units that are not a JSON
    number, JSON nested too deep to decode, a time that cannot be read: the row comes back
    as an `UnreadableEntry` saying so, and the listing goes on.
    """
    entry_id, tool, units, reference, created, attempts, last_error, error_code, mac = row
    entry = int(str(entry_id))
    tool_text, units_text, reference_text = str(tool), str(units), str(reference)
    moment: datetime | None = None
    try:
        moment = created_at(created)
        decoded = _json.loads(units_text)
        if isinstance(decoded, bool) or not isinstance(decoded, int | float):
            raise ValueError(f"not a number: {shown(units_text)}")
    except _UNREADABLE as exc:
        # The message says what, never the whole row.
        problem = f"{type(exc).__name__}: {shown(str(exc))}"
        return UnreadableEntry(entry, tool_text, units_text, reference_text, moment, problem)
    spend = PendingSpend(
        tool=tool_text,
        units=decoded,
        reference=reference_text,
        created_at=moment,
        attempts=_count(attempts),
        last_error=None if last_error is None else str(last_error),
        error_code=None if error_code is None else str(error_code),
    )
    return JournalEntry(id=entry, spend=spend, mac=None if mac is None else str(mac))


_UNREADABLE = (ValueError, TypeError, OverflowError, MemoryError)


def _count(value: object) -> int:
    # Not covered by the row's code, and only ever shown: a bad one is not worth a refusal.
    try:
        return int(str(value))
    except ValueError:
        return 0


def shown(text: str, limit: int = 80) -> str:
    """At most `limit` characters of untrusted text, quoted, for a message or a log line."""
    return repr(text) if len(text) <= limit else f"{text[:limit]!r}… ({len(text)} characters)"


def cut(text: str, limit: int = 200) -> str:
    """Untrusted text kept for display: at most `limit` characters."""
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text)} characters)"
