"""The spend journal's seam: what the clients and metered blocks need from a backend."""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any, Protocol, TypeAlias, runtime_checkable

from amaimedia._html import html_table
from amaimedia._types import Units

__all__ = ["EntryId", "JournalEntry", "PendingSpend", "SpendJournal", "TransactionalJournal"]

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


@dataclass(frozen=True)
class JournalEntry:
    """A pending spend as a backend stores it: its id, and what to send."""

    id: EntryId
    spend: PendingSpend


@runtime_checkable
class SpendJournal(Protocol):
    """A place where spends are committed before they are sent: one file or database.

    SQLite (`_sqlite.py`) and PostgreSQL (`_postgres.py`) implement it. A backend is
    shared by every client of the process that opens the same location, and by other
    processes that open it too;
    `scope` (a hash of the key and the API, never the key) keeps accounts apart in it.

    `add` must be durable when it returns: it is the whole point of a journal; the
    outcomes (`mark_done`, `mark_failed`) may be recorded lazily, since a lost one only
    leads to a replay the API answers without charging again. Every method may block on
    I/O, so the async client runs them all in worker threads (`claim` too, in a way that
    gives back a claim whose caller was cancelled while waiting for it).

    Errors are raised as `SpendJournalError`.
    """

    @property
    def location(self) -> str:
        """Where the journal lives, safe to show: a path, or a URL without its password."""
        ...

    def add(self, scope: str, tool: str, units: Units, reference: str) -> EntryId:
        """Commit a pending spend and return its entry.

        Writing the same `(scope, tool, reference)` again makes that entry pending again,
        with the new units and a fresh history, rather than adding a second one.
        """
        ...

    def add_and_claim(
        self, scope: str, tool: str, units: Units, reference: str
    ) -> tuple[EntryId, bool]:
        """`add`, and `claim` the entry, so that no replay can take it in between.

        Returns the entry and whether the claim was taken (`False` if someone else
        holds it). The entry, once visible to other workers, is already claimed.
        """
        ...

    def mark_done(self, entry: EntryId, charged: int) -> None:
        """Record that the server confirmed the spend."""
        ...

    def mark_failed(self, entry: EntryId, error: BaseException) -> None:
        """Record a failed attempt; the entry stays pending."""
        ...

    def pending(self, scope: str) -> list[JournalEntry]:
        """The pending entries of one scope, oldest first."""
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
        self, connection: Any, scope: str, tool: str, units: Units, reference: str
    ) -> EntryId:
        """Write a pending spend on `connection`, in whatever transaction it has open."""
        ...

    async def add_in_async(
        self, connection: Any, scope: str, tool: str, units: Units, reference: str
    ) -> EntryId:
        """`add_in` on an async connection."""
        ...
