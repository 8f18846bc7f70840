from __future__ import annotations

import httpx

from amaimedia import Charge, Quote
from tests.conftest import Harness
from tests.fakes import CHARGE, QUOTE, FakeAPI


def test_check_then_spend(harness: Harness, api: FakeAPI) -> None:
    client = harness.client(api)
    quote = harness.run(client.check("chat"))
    charge = harness.run(client.spend("chat", reference="job-1"))
    assert quote == Quote(**QUOTE)
    assert charge == Charge(**CHARGE, reference="job-1")
    assert api.bodies() == [
        {"tool": "chat", "units": 1},
        {"tool": "chat", "units": 1, "reference": "job-1"},
    ]


def test_a_balance_too_low_is_an_answer_not_an_error(harness: Harness, api: FakeAPI) -> None:
    """check() mirrors the server: a 200 with allowed=false is a Quote, not an exception."""
    refused = {"ok": True, "allowed": False, "cost_tokens": 400, "balance_after": -320}
    api.queue("check", httpx.Response(200, json=refused))
    quote = harness.run(harness.client(api).check("dub", units=10))
    assert quote == Quote(**refused)
    assert quote.allowed is False
    assert len(api.requests) == 1
