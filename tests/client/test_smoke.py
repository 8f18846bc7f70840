"""The round trip in process: a check, then a spend, with either client.

Over a real socket: `tests/wire/test_transport.py`.
"""

from __future__ import annotations

import httpx
import respx

from amaimedia import Charge, Quote
from tests.answers import CHARGE, QUOTE, bodies, queue
from tests.conftest import Harness


def test_check_then_spend(harness: Harness, api: respx.Router) -> None:
    client = harness.client(api)
    quote = harness.run(client.check("chat"))
    charge = harness.run(client.spend("chat", reference="job-1"))
    assert quote == Quote(**QUOTE)
    assert charge == Charge(**CHARGE, reference="job-1")
    assert bodies(api.calls) == [
        {"tool": "chat", "units": 1},
        {"tool": "chat", "units": 1, "reference": "job-1"},
    ]


def test_a_balance_too_low_is_an_answer_not_an_error(harness: Harness, api: respx.Router) -> None:
    """check() mirrors the server: a 200 with allowed=false is a Quote, not an exception."""
    refused = {"ok": True, "allowed": False, "cost_tokens": 400, "balance_after": -320}
    queue(api["check"], httpx.Response(200, json=refused))
    quote = harness.run(harness.client(api).check("dub", units=10))
    assert quote == Quote(**refused)
    assert quote.allowed is False
    assert api.calls.call_count == 1
