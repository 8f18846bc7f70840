"""Idempotency references for spends the caller did not name."""

from __future__ import annotations

import secrets
import time
from datetime import datetime, timezone

__all__ = ["new_reference"]

# The UTC day of the last reference made, as a day number and as text: formatting a date
# costs more than the rest of a reference, and the day changes once a day.
_day: tuple[int, str] = (-1, "")


def new_reference() -> str:
    """A fresh reference such as `req_2026-07-03_5f0c2a9e41d7b38c6a15`.

    The date (UTC) makes references easy to find in the account's history; the 80
    random bits make them unique across processes and machines without coordination.
    """
    global _day  # a cache: a race only formats the same day twice
    now = time.time()
    today = int(now // 86400)
    number, day = _day
    if today != number:
        day = datetime.fromtimestamp(now, timezone.utc).strftime("%Y-%m-%d")
        _day = (today, day)
    return f"req_{day}_{secrets.token_hex(10)}"
