"""The journal suites' stand-in for the API, and how they read a journal back.

`Ledger` answers like the API and counts charges on the server's side, so that "charged
exactly once" is not inferred from the client's. It is the spend route of a respx router
(`tests/answers.py`): checks answer `QUOTE`, and spends are charged by the ledger.
`rows(path)` reads an SQLite journal file with `sqlite3` on a connection of its own, as
another process would see it; the in-process tests read either backend through a store
(`stores.py`). Used by the in-process journal tests (`test_journal.py`) and the ones
across processes (`tests/wire/test_journal_processes.py`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import threading
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from amaimedia import Meter, SpendFailedError
from tests.answers import CHARGE, api_router, error, requests
from tests.conftest import Harness

SpendReply = httpx.Response | BaseException


class Ledger:
    """The API as a ledger: each `(tool, reference)` is charged once, however often sent.

    Attributes:
        router: The respx router that answers: `QUOTE` at `check`, the ledger at `spend`.
        sent: The reference of every spend request received, in order.
        charged: The tokens charged per reference; a reference sent again is answered
            like the first time and charged nothing more.
        down: While true, every spend answers 503.
        refuse: References answered with `(status, error)` every time they are sent.
        replies: Answers (or transport exceptions) for the next spends, used up first.
        delay: Seconds each spend takes to answer.
        on_spend: Called with the reference as each spend arrives, before it is answered.
    """

    def __init__(self) -> None:
        self.router = api_router()
        self.router["spend"].mock(side_effect=self.spend)
        self.sent: list[str] = []
        self.charged: dict[str, int] = {}
        self.down = False
        self.refuse: dict[str, tuple[int, str]] = {}
        self.replies: deque[SpendReply] = deque()
        self.delay = 0.0
        self.on_spend: Callable[[str], None] | None = None
        self._lock = threading.Lock()

    @property
    def requests(self) -> list[httpx.Request]:
        """Every request answered (or failed by a transport error), checks included."""
        return requests(self.router.calls)

    def spend(self, request: httpx.Request) -> httpx.Response:
        reference = json.loads(request.content)["reference"]
        with self._lock:
            self.sent.append(reference)
            reply = self.replies.popleft() if self.replies else None
        if self.on_spend is not None:
            self.on_spend(reference)
        if self.delay:
            threading.Event().wait(self.delay)
        if isinstance(reply, BaseException):
            raise reply
        if reply is not None:
            return reply
        if self.down:
            return error(503, "server_error")
        if reference in self.refuse:
            status, code = self.refuse[reference]
            return error(status, code)
        with self._lock:
            self.charged.setdefault(reference, CHARGE["charged"])
        return httpx.Response(200, json=CHARGE)


def journal_client(harness: Harness, ledger: Ledger, target: Path | str, **options: Any) -> Any:
    """A client on `ledger` that keeps its journal at `target`: a path, or a database URL."""
    http = harness.http_client(ledger.router)
    return harness.client(http_client=http, spend_journal=target, **options)


def run_block(
    harness: Harness, client: Any, reference: str | None = None, *, units: float = 3
) -> Meter:
    """One metered block whose work succeeds; its meter."""
    if harness.is_async:

        async def block() -> Meter:
            meter: Meter
            async with client.metered("dub", units, reference=reference) as meter:
                await asyncio.sleep(0)
            return meter

        result: Meter = harness.run(block())
        return result
    meter: Meter
    with client.metered("dub", units, reference=reference) as meter:
        pass
    return meter


def leave_pending(harness: Harness, client: Any, ledger: Ledger, *references: str) -> None:
    """Blocks whose spends fail with a 503: each leaves one pending entry."""
    ledger.down = True
    for reference in references:
        with pytest.raises(SpendFailedError):
            run_block(harness, client, reference)
    ledger.down = False


def rows(path: Path) -> list[dict[str, Any]]:
    """An SQLite journal's rows as stored (units as JSON text, timestamps as ISO text)."""
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.row_factory = sqlite3.Row
        return [dict(row) for row in db.execute("SELECT * FROM spends ORDER BY id")]


def entry_id(path: Path, reference: str) -> int:
    """The id of the one entry with this reference in an SQLite journal."""
    (row,) = [row for row in rows(path) if row["reference"] == reference]
    return int(row["id"])


def pending_references(harness: Harness, client: Any) -> list[str]:
    return [spend.reference for spend in harness.run(client.pending_spends())]
