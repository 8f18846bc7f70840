"""Accounts, balances and the spend ledger of the fake: the billing rules, without HTTP.

Not thread-safe by itself: `FakeAmaiServer` holds one lock around every use, so that a
check, a spend or a top-up is atomic however many threads, tasks or connections call.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Final

from amaimedia._auth import KEY_PREFIX

from ._pricing import cost_tokens

__all__ = ["Account", "Ledger", "SpendRecord", "key_digest"]

# 24 random bytes: as hard to guess as a real key, and recognisable by its prefix.
_KEY_BYTES: Final = 24


def key_digest(key: str) -> str:
    """The SHA-256 of a key, the only form in which the fake keeps it."""
    return hashlib.sha256(key.encode("utf-8", "replace")).hexdigest()


@dataclass(frozen=True)
class SpendRecord:
    """One row of the fake's ledger: a spend that charged the account.

    A replayed reference adds no row, as it charges nothing; nor does a spend refused
    for insufficient credits.

    Attributes:
        tool: The tool charged for, such as `"chat"`.
        units: The units sent, as sent (an int or a float).
        reference: The idempotency key sent with the spend.
        charged: The tokens charged.
        balance_after: The account's balance right after this charge.
        created_at: When the charge was made (timezone-aware, UTC).
        account: The id of the charged account, such as `"acct_1"`; see
            [`FakeAmaiServer.account_id`][amaimedia.testing.FakeAmaiServer.account_id].
    """

    tool: str
    units: int | float
    reference: str
    charged: int
    balance_after: int
    created_at: datetime
    account: str


@dataclass(eq=False)
class Account:
    """One account, and the one key that opens it (kept as a digest only)."""

    id: str
    key_digest: str = field(repr=False)
    balance: int
    revoked: bool = False
    suspended: bool = False


class Ledger:
    """Every account, the spends that charged them, and the answers kept for replays."""

    def __init__(self, prices: Mapping[str, int]) -> None:
        self.prices = prices
        self.spends: list[SpendRecord] = []
        self._accounts: dict[str, Account] = {}
        # The first answer to each (account, tool, reference), returned again on a replay.
        self._charges: dict[tuple[str, str, str], dict[str, Any]] = {}

    @property
    def account_count(self) -> int:
        """How many accounts (keys) were created."""
        return len(self._accounts)

    def open_account(self, balance: int) -> str:
        """Create an account holding `balance` tokens, and return its new key."""
        key = KEY_PREFIX + secrets.token_urlsafe(_KEY_BYTES)
        digest = key_digest(key)
        self._accounts[digest] = Account(
            id=f"acct_{len(self._accounts) + 1}", key_digest=digest, balance=balance
        )
        return key

    def lookup(self, key: str) -> Account | None:
        """The account the key opens (revoked or not), or `None` for a key never issued."""
        return self._accounts.get(key_digest(key))

    def quote(self, account: Account, tool: str, units: int | float) -> dict[str, Any]:
        """The body of a check: never charges."""
        cost = cost_tokens(self.prices[tool], units)
        allowed = cost <= account.balance
        # A refused quote reports the balance as it stands: nothing would be spent.
        balance_after = account.balance - cost if allowed else account.balance
        return {
            "ok": True,
            "allowed": allowed,
            "cost_tokens": cost,
            "balance_after": balance_after,
        }

    def spend(
        self, account: Account, tool: str, units: int | float, reference: str
    ) -> tuple[int, dict[str, Any]]:
        """The status and body of a spend, charging the account at most once per reference."""
        replay = self._charges.get((account.id, tool, reference))
        if replay is not None:
            return 200, dict(replay)
        cost = cost_tokens(self.prices[tool], units)
        if cost > account.balance:
            # Not remembered: after a top-up, the same reference may succeed.
            return 402, {
                "ok": False,
                "error": "insufficient_credits",
                "cost_tokens": cost,
                "balance": account.balance,
            }
        account.balance -= cost
        body = {"ok": True, "charged": cost, "balance_after": account.balance}
        self._charges[(account.id, tool, reference)] = body
        self.spends.append(
            SpendRecord(
                tool=tool,
                units=units,
                reference=reference,
                charged=cost,
                balance_after=account.balance,
                created_at=datetime.now(timezone.utc),
                account=account.id,
            )
        )
        return 200, dict(body)
