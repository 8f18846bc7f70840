"""`ScopedJournal`: one account's view of a spend journal, as the metered blocks use it.

A client builds one for its key and base URL, and hands it to every metered block and
replay it runs. The block's rules for a journal live here, once, for both clients: an
entry is committed before the spend is sent, a journal that cannot be written never
stops a spend (sending it is the charge's best chance), and a failure to record an
outcome is logged, never raised over the outcome itself.
"""

from __future__ import annotations

import hashlib
from typing import TypeAlias

import httpx

from amaimedia._exceptions import AmaiError, SpendJournalError
from amaimedia._logging import logger
from amaimedia._models import Charge
from amaimedia._types import Units

from ._protocol import EntryId, JournalEntry, PendingSpend, SpendJournal, TransactionalJournal
from ._replay import ReplayRules

__all__ = ["ScopedJournal", "Written", "journal_scope"]

Written: TypeAlias = "tuple[EntryId | None, bool]"
"""What `ScopedJournal.add` did: the entry written (or `None`), and whether it is claimed."""


def journal_scope(api_key: str, base_url: httpx.URL) -> str:
    """Which account and API an entry belongs to: a hash, never the key itself.

    The URL is taken as requests use it, so `https://api.amaimedia.com/` and
    `https://api.amaimedia.com` are one API.
    """
    root = str(base_url).rstrip("/")
    return hashlib.sha256(f"{root}\n{api_key}".encode()).hexdigest()[:32]


class ScopedJournal:
    """A journal backend and the scope of one client's entries in it.

    Args:
        backend: Where the entries are kept.
        scope: The account and API they belong to (see `journal_scope`).
    """

    __slots__ = ("backend", "scope")

    def __init__(self, backend: SpendJournal, scope: str) -> None:
        self.backend = backend
        self.scope = scope

    def __repr__(self) -> str:
        return f"ScopedJournal({self.backend.location!r})"

    @property
    def location(self) -> str:
        """Where the backend lives, safe to show."""
        return self.backend.location

    def add(self, tool: str, units: Units, reference: str) -> Written:
        """Commit a spend as pending before it is sent, and claim it for the sender.

        Returns the entry (`None` if it could not be written) and whether the caller
        holds its claim (`False` when a replay elsewhere holds it: the spend still goes
        out, since the server charges a reference once, and the replay settles it). A
        journal that cannot be written does not stop the spend: sending it is the best
        chance the charge has. The failure is logged, and a `SpendFailedError` raised
        later says the spend was not journaled.
        """
        try:
            return self.backend.add_and_claim(self.scope, tool, units, reference)
        except SpendJournalError as exc:
            logger.warning("the spend %s is sent without a journal entry: %s", reference, exc)
            return None, False

    def undo_add(self, written: Written) -> None:
        """Give back the claim `add` took, for a caller that will not send the spend."""
        entry, owned = written
        if owned and entry is not None:
            self.backend.release(entry)

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

    def done(self, entry: EntryId, charge: Charge) -> None:
        """Mark a claimed entry charged, and release it.

        A failure to write is logged, not raised: the server has the charge, and a later
        replay of the entry would charge nothing.
        """
        try:
            self.backend.mark_done(entry, charge.charged)
        except SpendJournalError as exc:
            logger.warning("the spend %s was charged but stays pending: %s", charge.reference, exc)
        finally:
            self.backend.release(entry)

    def failed(self, entry: EntryId, error: AmaiError) -> None:
        """Record a failed attempt on a claimed entry, which stays pending, and release it."""
        try:
            self.backend.mark_failed(entry, error)
        except SpendJournalError as exc:
            logger.warning("could not record the failure of a pending spend: %s", exc)
        finally:
            self.backend.release(entry)

    def outbox(self, connection: object, *, is_async: bool) -> TransactionalJournal:
        """The backend, for a write in the caller's transaction on `connection`.

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
        return backend

    def pending(self) -> list[JournalEntry]:
        """This scope's pending entries, oldest first.

        Raises:
            SpendJournalError: The journal cannot be read.
        """
        return self.backend.pending(self.scope)

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
    def replay_failed(spend: PendingSpend, error: AmaiError) -> None:
        """Report a replayed spend that failed again; it stays pending."""
        logger.warning(
            "the pending spend %s x%s (reference=%s) failed again and stays in the journal: %s",
            spend.tool,
            spend.units,
            spend.reference,
            error,
        )
