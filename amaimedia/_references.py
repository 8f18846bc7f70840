"""Idempotency references for spends the caller did not name."""

from __future__ import annotations

import secrets
from datetime import datetime, timezone

__all__ = ["new_reference"]


def new_reference() -> str:
    """A fresh reference such as `req_2026-07-03_5f0c2a9e41d7b38c6a15`.

    The date (UTC) makes references easy to find in the account's history; the 80
    random bits make them unique across processes and machines without coordination.
    """
    day = datetime.now(timezone.utc).strftime("%Y-%m-%d")
    return f"req_{day}_{secrets.token_hex(10)}"
