"""`amaimedia.testing.FakeAmaiServer`: the API's answers, the ledger, keys and balances.

The table of requests and documented answers runs twice: through the in-process
transport and through raw httpx over a real loopback socket (`fake.serve()`), so the
two ways in are proven to answer alike; so do the records of what arrived (headers with
the key redacted, the raw body). The rest drives the fake with the SDK's clients.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import MappingProxyType
from typing import Any

import httpx
import pytest

from amaimedia import (
    AmaiClient,
    APIError,
    AuthenticationError,
    Charge,
    ForbiddenError,
    InsufficientCreditsError,
    Quote,
    SpendFailedError,
)
from amaimedia.testing import FakeAmaiServer, RecordedRequest, SpendRecord
from amaimedia.testing._ledger import key_digest
from tests.conftest import Harness

CHECK = "/api/v1/tools/check"
SPEND = "/api/v1/tools/spend"
KNOWN_TOOLS = "chat, image, voice_clone, dub, music, sfx, speech2text, translate"


@contextmanager
def raw_http(fake: FakeAmaiServer, via: str) -> Iterator[httpx.Client]:
    """A plain httpx client reaching `fake` in process, or over a loopback socket."""
    if via == "in-process":
        with httpx.Client(transport=fake.transport(), base_url=fake.BASE_URL) as http:
            yield http
    else:
        with fake.serve() as base_url, httpx.Client(base_url=base_url, timeout=5) as http:
            yield http


@pytest.fixture(params=["in-process", "loopback"])
def via(request: pytest.FixtureRequest) -> str:
    return str(request.param)


# --- the documented answers, both ways in ----------------------------------------------


@dataclasses.dataclass(frozen=True)
class Case:
    """One request and the answer the API doc gives for it.

    `auth` is the Authorization header with `{key}` standing for a fresh key (None sends
    none); `key_state` revokes or suspends that key first.
    """

    id: str
    path: str
    body: object
    status: int
    expected: dict[str, Any]
    method: str = "POST"
    auth: str | None = "Bearer {key}"
    key_state: tuple[str, ...] = ()
    balance: int = 10_000
    balance_after: int | None = None  # None: unchanged
    headers: tuple[tuple[str, str], ...] = ()

    def content(self) -> bytes:
        return self.body if isinstance(self.body, bytes) else json.dumps(self.body).encode()


def invalid(message: str) -> dict[str, Any]:
    return {"ok": False, "error": "invalid_request", "message": message}


AUTH_REQUIRED = {"ok": False, "error": "auth_required"}
FORBIDDEN = {"ok": False, "error": "forbidden"}
NOT_FOUND = {"ok": False, "error": "not_found"}
METHOD_NOT_ALLOWED = {"ok": False, "error": "method_not_allowed"}
CHAT = {"tool": "chat", "units": 1}
CHAT_SPEND = {"tool": "chat", "units": 1, "reference": "req_2026-07-03_abc123"}


def both(path: str) -> str:
    return "check" if path == CHECK else "spend"


CASES = [
    # check: the documented example, and what the balance decides
    Case(
        "check-documented", CHECK, CHAT, 200,
        {"ok": True, "allowed": True, "cost_tokens": 5, "balance_after": 9995},
    ),
    Case(
        "check-fractional-units", CHECK, {"tool": "dub", "units": 2.5}, 200,
        {"ok": True, "allowed": True, "cost_tokens": 100, "balance_after": 9900},
    ),
    Case(
        "check-not-covered", CHECK, CHAT, 200,
        {"ok": True, "allowed": False, "cost_tokens": 5, "balance_after": 3}, balance=3,
    ),
    Case(
        "check-exactly-covered", CHECK, CHAT, 200,
        {"ok": True, "allowed": True, "cost_tokens": 5, "balance_after": 0}, balance=5,
    ),
    Case(
        "check-extra-fields-ignored", CHECK, {**CHAT, "reference": "x", "note": [1]}, 200,
        {"ok": True, "allowed": True, "cost_tokens": 5, "balance_after": 9995},
    ),
    Case(
        "check-query-string-ignored", CHECK + "?debug=1", CHAT, 200,
        {"ok": True, "allowed": True, "cost_tokens": 5, "balance_after": 9995},
    ),
    Case(
        "check-scheme-case-insensitive", CHECK, CHAT, 200,
        {"ok": True, "allowed": True, "cost_tokens": 5, "balance_after": 9995},
        auth="bearer {key}",
    ),
    # spend: the documented example, and 402
    Case(
        "spend-documented", SPEND, CHAT_SPEND, 200,
        {"ok": True, "charged": 5, "balance_after": 9995}, balance_after=9995,
    ),
    Case(
        "spend-exactly-covered", SPEND, CHAT_SPEND, 200,
        {"ok": True, "charged": 5, "balance_after": 0}, balance=5, balance_after=0,
    ),
    Case(
        "spend-insufficient-credits", SPEND, CHAT_SPEND, 402,
        {"ok": False, "error": "insufficient_credits", "cost_tokens": 5, "balance": 2},
        balance=2,
    ),
    # authentication, on both endpoints
    *[
        case
        for path, body in ((CHECK, CHAT), (SPEND, CHAT_SPEND))
        for case in (
            Case(f"{both(path)}-no-key", path, body, 401, AUTH_REQUIRED, auth=None),
            Case(f"{both(path)}-basic-scheme", path, body, 401, AUTH_REQUIRED, auth="Basic {key}"),
            Case(f"{both(path)}-bearer-no-token", path, body, 401, AUTH_REQUIRED, auth="Bearer"),
            Case(f"{both(path)}-two-words", path, body, 401, AUTH_REQUIRED, auth="Bearer {key} 2"),
            Case(
                f"{both(path)}-unknown-key", path, body, 401, AUTH_REQUIRED,
                auth="Bearer amai_live_never_issued_0000000000000",
            ),
            Case(f"{both(path)}-revoked", path, body, 401, AUTH_REQUIRED, key_state=("revoke",)),
            Case(f"{both(path)}-suspended", path, body, 403, FORBIDDEN, key_state=("suspend",)),
            Case(
                f"{both(path)}-revoked-and-suspended", path, body, 401, AUTH_REQUIRED,
                key_state=("suspend", "revoke"),
            ),
            Case(
                f"{both(path)}-two-authorization-headers", path, body, 401, AUTH_REQUIRED,
                headers=(("authorization", "Bearer x"),),
            ),
            Case(f"{both(path)}-auth-before-body", path, b"{", 401, AUTH_REQUIRED, auth=None),
            Case(
                f"{both(path)}-suspended-before-body", path, b"{", 403, FORBIDDEN,
                key_state=("suspend",),
            ),
        )
    ],
    # malformed bodies, on both endpoints
    *[
        Case(f"{both(path)}-{name}", path, body, 400, invalid(message))
        for path in (CHECK, SPEND)
        for name, body, message in (
            ("not-json", b'{"tool": "chat",', "the body is not valid JSON"),
            ("empty-body", b"", "the body is not valid JSON"),
            ("not-utf8", b"\xff\xfe{", "the body is not valid JSON"),
            ("nan-literal", b'{"tool": "chat", "units": NaN}', "the body is not valid JSON"),
            ("list-body", [CHAT], "the body must be a JSON object"),
            ("null-body", None, "the body must be a JSON object"),
            ("missing-tool", {"units": 1, "reference": "r"}, "tool is required"),
            ("tool-not-string", {"tool": 5, "units": 1}, "tool must be a string"),
            (
                "unknown-tool",
                {"tool": "karaoke", "units": 1, "reference": "r"},
                f"unknown tool 'karaoke'; known tools: {KNOWN_TOOLS}",
            ),
            ("missing-units", {"tool": "chat", "reference": "r"}, "units is required"),
            *[
                (
                    f"units-{label}",
                    units,
                    "units must be a positive, finite number",
                )
                for label, units in (
                    ("zero", b'{"tool": "chat", "units": 0, "reference": "r"}'),
                    ("negative", b'{"tool": "chat", "units": -1.5, "reference": "r"}'),
                    ("string", b'{"tool": "chat", "units": "1", "reference": "r"}'),
                    ("bool", b'{"tool": "chat", "units": true, "reference": "r"}'),
                    ("null", b'{"tool": "chat", "units": null, "reference": "r"}'),
                    ("infinite", b'{"tool": "chat", "units": 1e999, "reference": "r"}'),
                )
            ],
        )
    ],
    Case("spend-missing-reference", SPEND, CHAT, 400, invalid("reference is required")),
    Case(
        "spend-empty-reference", SPEND, {**CHAT, "reference": ""}, 400,
        invalid("reference must be a non-empty string"),
    ),
    Case(
        "spend-reference-not-string", SPEND, {**CHAT, "reference": 7}, 400,
        invalid("reference must be a non-empty string"),
    ),
    # routing
    Case("unknown-path", "/api/v1/tools/other", CHAT, 404, NOT_FOUND),
    Case("root-path", "/", CHAT, 404, NOT_FOUND, method="GET"),
    Case("trailing-slash", CHECK + "/", CHAT, 404, NOT_FOUND),
    Case("path-case-matters", "/api/v1/tools/CHECK", CHAT, 404, NOT_FOUND),
    Case("unknown-path-without-key", "/api/v2/tools/check", CHAT, 404, NOT_FOUND, auth=None),
    *[
        Case(
            f"{method.lower()}-{both(path)}", path, CHAT, 405, METHOD_NOT_ALLOWED,
            method=method, auth=None,
        )
        for method, path in (("GET", CHECK), ("PUT", SPEND), ("DELETE", CHECK), ("PATCH", SPEND))
    ],
]  # fmt: skip


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_answers_as_the_api_doc_says(case: Case, via: str) -> None:
    fake = FakeAmaiServer()
    key = fake.create_key(balance=case.balance)
    for action in case.key_state:
        getattr(fake, action)(key)
    headers = list(case.headers)
    if case.auth is not None:
        headers.append(("authorization", case.auth.format(key=key)))

    with raw_http(fake, via) as http:
        response = http.request(case.method, case.path, content=case.content(), headers=headers)

    assert response.status_code == case.status
    assert response.json() == case.expected
    assert response.headers["content-type"] == "application/json"
    assert response.headers["x-request-id"].startswith("req_fake_")
    if case.status == 405:
        assert response.headers["allow"] == "POST"
    expected_balance = case.balance if case.balance_after is None else case.balance_after
    assert fake.balance(key) == expected_balance
    assert len(fake.spends) == (1 if case.balance_after is not None else 0)
    [recorded] = fake.requests
    assert recorded.status == case.status
    assert recorded.request_id == response.headers["x-request-id"]
    assert recorded.method == case.method
    assert recorded.path == case.path.split("?")[0]


def test_every_answer_has_a_fresh_request_id(via: str) -> None:
    fake = FakeAmaiServer()
    key = fake.create_key()
    with raw_http(fake, via) as http:
        ids = {
            http.post(CHECK, json=CHAT, headers={"authorization": f"Bearer {key}"}).headers[
                "x-request-id"
            ]
            for _ in range(5)
        }
    assert len(ids) == 5


# --- through the SDK's clients -----------------------------------------------------------


def sdk_client(harness: Harness, fake: FakeAmaiServer, key: str, **options: Any) -> Any:
    """The fake's own in-process client of the harness's kind, closed with the harness."""
    client = fake.async_client(key, **options) if harness.is_async else fake.client(key, **options)
    harness.record_sleeps(client)
    harness._clients.append(client)
    return client


def test_clients_check_and_spend(harness: Harness) -> None:
    fake = FakeAmaiServer()
    key = fake.create_key(balance=1_000)
    client = sdk_client(harness, fake, key)

    quote = harness.run(client.check("image", units=3))
    charge = harness.run(client.spend("image", units=3, reference="job-1"))

    assert quote == Quote(ok=True, allowed=True, cost_tokens=60, balance_after=940)
    assert charge == Charge(ok=True, charged=60, balance_after=940, reference="job-1")
    assert fake.balance(key) == 940
    assert str(client.base_url) == FakeAmaiServer.BASE_URL


def test_client_options_are_passed_through(harness: Harness) -> None:
    fake = FakeAmaiServer()
    client = sdk_client(
        harness, fake, fake.create_key(), timeout=3.0, max_retries=0, max_retry_after=9.0
    )
    assert client.timeout == httpx.Timeout(3.0)
    assert (client.max_retries, client.max_retry_after) == (0, 9.0)

    defaults = sdk_client(harness, fake, fake.create_key(), base_url="https://other.invalid")
    assert (defaults.max_retries, defaults.max_retry_after) == (2, 60.0)
    assert str(defaults.base_url) == "https://other.invalid"


def test_a_journaled_client_replays_what_an_outage_left(harness: Harness, tmp_path: Path) -> None:
    fake = FakeAmaiServer()
    key = fake.create_key(balance=1_000)
    path = tmp_path / "spends.sqlite3"
    client = sdk_client(harness, fake, key, max_retries=0, spend_journal=path)
    assert client.spend_journal == str(path)
    fake.fail_next("spend", status=503)

    async def run_async() -> None:
        async with client.metered("dub", units=2, reference="job-1"):
            pass

    def run_sync() -> None:
        with client.metered("dub", units=2, reference="job-1"):
            pass

    with pytest.raises(SpendFailedError):
        harness.run(run_async()) if harness.is_async else run_sync()
    assert fake.spends == []

    charges = harness.run(client.replay_pending())

    assert [charge.reference for charge in charges] == ["job-1"]
    assert [row.reference for row in fake.spends] == ["job-1"]
    assert fake.balance(key) == 920


def test_a_refused_quote_keeps_the_balance(harness: Harness) -> None:
    fake = FakeAmaiServer()
    key = fake.create_key(balance=30)
    quote = harness.run(sdk_client(harness, fake, key).check("dub"))
    assert quote == Quote(ok=True, allowed=False, cost_tokens=40, balance_after=30)
    assert fake.balance(key) == 30


def test_insufficient_credits_charges_nothing(harness: Harness) -> None:
    fake = FakeAmaiServer()
    key = fake.create_key(balance=30)
    client = sdk_client(harness, fake, key)

    with pytest.raises(InsufficientCreditsError) as caught:
        harness.run(client.spend("dub", reference="job-1"))

    assert (caught.value.cost_tokens, caught.value.balance) == (40, 30)
    assert caught.value.reference == "job-1"
    assert fake.balance(key) == 30
    assert fake.spends == []


def test_revoked_and_suspended_keys(harness: Harness) -> None:
    fake = FakeAmaiServer()
    revoked, suspended, fine = fake.create_key(), fake.create_key(), fake.create_key()
    fake.revoke(revoked)
    fake.suspend(suspended)

    with pytest.raises(AuthenticationError):
        harness.run(sdk_client(harness, fake, revoked).check("chat"))
    with pytest.raises(ForbiddenError):
        harness.run(sdk_client(harness, fake, suspended).spend("chat"))
    assert harness.run(sdk_client(harness, fake, fine).check("chat")).allowed is True
    # Other keys' accounts are untouched, and a revoked account can still be read.
    assert fake.balance(revoked) == fake.balance(suspended) == 10_000


def test_a_key_never_issued_is_refused(harness: Harness) -> None:
    fake = FakeAmaiServer()
    fake.create_key()
    client = sdk_client(harness, fake, "amai_live_not_from_this_fake_000000")
    with pytest.raises(AuthenticationError) as caught:
        harness.run(client.check("chat"))
    assert caught.value.request_id is not None
    assert caught.value.request_id.startswith("req_fake_")


def test_a_bad_request_maps_to_api_error(harness: Harness) -> None:
    fake = FakeAmaiServer()
    client = sdk_client(harness, fake, fake.create_key())
    with pytest.raises(APIError) as caught:
        harness.run(client.check("karaoke"))
    assert (caught.value.status_code, caught.value.error) == (400, "invalid_request")
    assert "unknown tool 'karaoke'" in str(caught.value)


# --- idempotency and the ledger ----------------------------------------------------------


def test_a_repeated_reference_replays_the_original_answer(harness: Harness) -> None:
    fake = FakeAmaiServer()
    key = fake.create_key(balance=1_000)
    client = sdk_client(harness, fake, key)

    first = harness.run(client.spend("dub", units=2, reference="job-1"))
    harness.run(client.spend("chat", reference="job-2"))
    again = harness.run(client.spend("dub", units=2, reference="job-1"))
    # The reference names the work: a replay with other units still replays.
    other_units = harness.run(client.spend("dub", units=9, reference="job-1"))

    assert first == again == other_units
    assert first.charged == 80
    assert first.balance_after == 920  # the original answer, not today's balance
    assert fake.balance(key) == 915
    assert [(row.tool, row.reference) for row in fake.spends] == [
        ("dub", "job-1"),
        ("chat", "job-2"),
    ]
    assert [r.status for r in fake.requests] == [200, 200, 200, 200]


def test_idempotency_is_per_account_and_tool(harness: Harness) -> None:
    fake = FakeAmaiServer()
    alice, bob = fake.create_key(balance=100), fake.create_key(balance=100)

    harness.run(sdk_client(harness, fake, alice).spend("chat", reference="job-1"))
    harness.run(sdk_client(harness, fake, alice).spend("sfx", reference="job-1"))
    harness.run(sdk_client(harness, fake, bob).spend("chat", reference="job-1"))

    assert fake.balance(alice) == 85
    assert fake.balance(bob) == 95
    assert [row.account for row in fake.spends] == [
        fake.account_id(alice),
        fake.account_id(alice),
        fake.account_id(bob),
    ]
    assert fake.account_id(alice) != fake.account_id(bob)


def test_a_refused_spend_may_succeed_after_a_top_up(harness: Harness) -> None:
    fake = FakeAmaiServer()
    key = fake.create_key(balance=10)
    client = sdk_client(harness, fake, key)

    with pytest.raises(InsufficientCreditsError):
        harness.run(client.spend("image", reference="job-1"))
    assert fake.top_up(key, 15) == 25
    charge = harness.run(client.spend("image", reference="job-1"))

    assert (charge.charged, charge.balance_after) == (20, 5)
    assert len(fake.spends) == 1


def test_a_replay_answers_even_when_the_balance_is_gone(harness: Harness) -> None:
    fake = FakeAmaiServer()
    key = fake.create_key(balance=5)
    client = sdk_client(harness, fake, key)
    first = harness.run(client.spend("chat", reference="job-1"))
    assert harness.run(client.spend("chat", reference="job-1")) == first
    assert fake.balance(key) == 0


def test_the_ledger_rows() -> None:
    fake = FakeAmaiServer()
    key = fake.create_key(balance=500)
    before = datetime.now(timezone.utc)
    with fake.client(key) as client:
        client.spend("voice_clone", units=12.5, reference="clip-7")
        client.spend("voice_clone", units=12.5, reference="clip-7")

    [row] = fake.spends
    assert row == SpendRecord(
        tool="voice_clone",
        units=12.5,
        reference="clip-7",
        charged=25,
        balance_after=475,
        created_at=row.created_at,
        account=fake.account_id(key),
    )
    assert row.created_at.tzinfo is timezone.utc
    assert before <= row.created_at <= before + timedelta(minutes=1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        row.charged = 0  # type: ignore[misc]


def test_spends_and_requests_are_copies() -> None:
    fake = FakeAmaiServer()
    with fake.client(fake.create_key()) as client:
        client.spend("chat", reference="job-1")
    fake.spends.clear()
    fake.requests.clear()
    assert len(fake.spends) == 1
    assert len(fake.requests) == 1


def test_requests_record_what_arrived() -> None:
    fake = FakeAmaiServer()
    key = fake.create_key(balance=3)
    with fake.client(key) as client:
        client.check("chat")
        with pytest.raises(InsufficientCreditsError):
            client.spend("chat", reference="job-1")
    with httpx.Client(transport=fake.transport(), base_url=fake.BASE_URL) as http:
        http.post("/nowhere?x=1", content=b"not json")

    check, spend, lost = fake.requests
    assert check == RecordedRequest(
        method="POST",
        path=CHECK,
        endpoint="check",
        body={"tool": "chat", "units": 1},
        status=200,
        request_id=check.request_id,
    )
    assert (spend.endpoint, spend.body["reference"], spend.status) == ("spend", "job-1", 402)
    assert (lost.endpoint, lost.path, lost.body, lost.status) == (None, "/nowhere", None, 404)


@pytest.mark.parametrize(
    ("sent", "recorded"),
    [
        ("Bearer {key}", "Bearer [redacted]"),
        ("bearer {key}", "bearer [redacted]"),
        ("Basic {key}", "[redacted]"),
        ("{key}", "[redacted]"),
        ("Bearer", "[redacted]"),
    ],
)
def test_requests_record_the_headers_without_the_key(via: str, sent: str, recorded: str) -> None:
    fake = FakeAmaiServer()
    key = fake.create_key()
    headers = {
        "Authorization": sent.format(key=key),
        "Proxy-Authorization": f"Basic {key}",
        "X-Trace": "Trace-1",
    }
    with raw_http(fake, via) as http:
        http.post(CHECK, json=CHAT, headers=headers)

    [request] = fake.requests
    names = [name for name, _ in request.headers]
    assert names == [name.lower() for name in names]
    assert {"host", "user-agent", "content-length", "content-type"} <= set(names)
    got = dict(request.headers)
    assert got["authorization"] == recorded
    assert got["proxy-authorization"] == "[redacted]"
    assert got["x-trace"] == "Trace-1"  # values as sent
    assert not any(key in value or key[10:] in value for _, value in request.headers)


def test_requests_record_the_body_byte_for_byte(via: str) -> None:
    fake = FakeAmaiServer()
    key = fake.create_key()
    sent = [b'{"tool": "chat",\n "units": 1}', b"not json", b""]
    with raw_http(fake, via) as http:
        for content in sent:
            http.post(CHECK, content=content, headers={"Authorization": f"Bearer {key}"})

    assert [request.content for request in fake.requests] == sent
    assert [request.body for request in fake.requests] == [CHAT, None, None]
    assert [request.status for request in fake.requests] == [200, 400, 400]


def test_headers_and_content_are_not_compared_nor_shown() -> None:
    fake = FakeAmaiServer()
    key = fake.create_key()
    with fake.client(key) as client:
        client.check("chat")
    [request] = fake.requests
    assert request.headers
    assert request.content
    bare = dataclasses.replace(request, headers=(), content=b"")
    assert bare == request
    assert repr(bare) == repr(request)
    assert "headers" not in repr(request)


# --- prices and exact arithmetic ---------------------------------------------------------


def test_default_prices() -> None:
    assert dict(FakeAmaiServer.DEFAULT_PRICES) == {
        "chat": 5,
        "image": 20,
        "voice_clone": 2,
        "dub": 40,
        "music": 30,
        "sfx": 10,
        "speech2text": 8,
        "translate": 3,
    }
    assert isinstance(FakeAmaiServer.DEFAULT_PRICES, MappingProxyType)
    assert FakeAmaiServer().prices == FakeAmaiServer.DEFAULT_PRICES


def test_prices_override_and_add() -> None:
    fake = FakeAmaiServer(prices={"chat": 7, "karaoke": 11})
    key = fake.create_key()
    with fake.client(key) as client:
        assert client.check("chat").cost_tokens == 7
        assert client.check("karaoke", units=2).cost_tokens == 22
        assert client.check("dub").cost_tokens == 40
    assert fake.prices["karaoke"] == 11
    assert FakeAmaiServer.DEFAULT_PRICES["chat"] == 5  # the defaults are untouched
    with pytest.raises(TypeError):
        fake.prices["chat"] = 1  # type: ignore[index]


@pytest.mark.parametrize(
    ("prices", "error", "message"),
    [
        ({"chat": 0}, ValueError, "the price of 'chat' must be a positive number of tokens"),
        ({"chat": -5}, ValueError, "the price of 'chat' must be a positive"),
        ({"chat": 2.5}, TypeError, "the price of 'chat' must be an int, got float"),
        ({"chat": True}, TypeError, "the price of 'chat' must be an int, got bool"),
        ({"": 1}, ValueError, "tool names must be non-empty, without whitespace"),
        ({"text to speech": 1}, ValueError, "tool names must be non-empty"),
        ({5: 1}, TypeError, "price table keys must be tool names (str), got 5"),
        ([("chat", 1)], TypeError, "prices must be a mapping of tool to int, got list"),
    ],
)
def test_invalid_prices_are_refused(prices: Any, error: type[Exception], message: str) -> None:
    with pytest.raises(error) as caught:
        FakeAmaiServer(prices=prices)
    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("tool", "units", "cost"),
    [
        ("dub", 2.5, 100),  # 2.5 * 40, exactly
        ("music", 0.1, 3),  # 0.1 * 30 is 3.0000000000000004 in floats: still 3
        ("sfx", 0.7, 7),  # 0.7 * 10 is 7.000000000000001 in floats: still 7
        ("translate", 0.1, 1),  # 0.3, rounded up
        ("chat", 0.01, 1),  # any work costs at least one token
        ("voice_clone", 1.5, 3),
        ("speech2text", 3, 24),
        ("image", 1e-300, 1),
        ("chat", 10**30, 5 * 10**30),  # a huge int, not a float
    ],
)
def test_cost_is_the_exact_ceiling(tool: str, units: float, cost: int) -> None:
    fake = FakeAmaiServer()
    with fake.client(fake.create_key()) as client:
        assert client.check(tool, units=units).cost_tokens == cost


# --- keys and accounts -------------------------------------------------------------------


def test_create_key() -> None:
    fake = FakeAmaiServer()
    keys = [fake.create_key() for _ in range(20)]
    assert len(set(keys)) == 20
    assert all(key.startswith("amai_live_") and len(key) == 42 for key in keys)
    assert all(fake.balance(key) == 10_000 for key in keys)
    assert fake.balance(fake.create_key(balance=0)) == 0
    assert [fake.account_id(key) for key in keys[:3]] == ["acct_1", "acct_2", "acct_3"]


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda f: f.create_key(balance=-1), ValueError, "balance must be 0 or more tokens"),
        (lambda f: f.create_key(balance=1.5), TypeError, "balance must be an int number"),
        (lambda f: f.create_key(balance=True), TypeError, "got bool"),
        (lambda f: f.top_up(f.create_key(), 0), ValueError, "tokens must be 1 or more"),
        (lambda f: f.top_up(f.create_key(), "5"), TypeError, "tokens must be an int number"),
        (lambda f: f.balance(None), TypeError, "key must be a str, got NoneType"),
    ],
)
def test_invalid_amounts_are_refused(
    call: Callable[[FakeAmaiServer], object], error: type[Exception], message: str
) -> None:
    with pytest.raises(error) as caught:
        call(FakeAmaiServer())
    assert message in str(caught.value)


UNKNOWN_KEY = "amai_live_SECRETthatwasneverissued0000"


@pytest.mark.parametrize("method", ["balance", "account_id", "revoke", "suspend", "top_up"])
def test_an_unknown_key_is_a_clear_value_error(method: str) -> None:
    fake = FakeAmaiServer()
    fake.create_key()
    args = (UNKNOWN_KEY, 5) if method == "top_up" else (UNKNOWN_KEY,)
    with pytest.raises(ValueError, match="unknown API key") as caught:
        getattr(fake, method)(*args)
    assert "SECRET" not in str(caught.value)
    assert "create_key()" in str(caught.value)


def test_revoke_and_suspend_are_idempotent() -> None:
    fake = FakeAmaiServer()
    key = fake.create_key()
    fake.revoke(key)
    fake.revoke(key)
    fake.suspend(key)
    fake.suspend(key)
    assert fake.top_up(key, 1) == 10_001


def walk(root: object) -> Iterator[object]:
    """Every object reachable from `root` through attributes and containers."""
    seen: set[int] = set()
    stack: list[object] = [root]
    while stack:
        obj = stack.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        yield obj
        if isinstance(obj, dict | MappingProxyType):
            stack.extend(obj.keys())
            stack.extend(obj.values())
        elif isinstance(obj, list | tuple | set | frozenset | deque):
            stack.extend(obj)
        elif hasattr(obj, "__dict__") and not isinstance(obj, type):
            stack.extend(vars(obj).values())


def test_only_a_hash_of_the_key_is_kept() -> None:
    fake = FakeAmaiServer()
    key = fake.create_key(balance=100)
    fake.fail_next("check", status=429)
    with fake.client(key, max_retries=0) as client:
        with pytest.raises(APIError):
            client.check("chat")
        client.spend("chat", reference="job-1")

    reachable = list(walk(fake))
    texts = [obj for obj in reachable if isinstance(obj, str)]
    blobs = [obj for obj in reachable if isinstance(obj, bytes)]
    assert key_digest(key) in texts  # the walk reached where the key is kept
    assert not any(key in text or key[10:] in text for text in texts)
    assert not any(key.encode() in blob for blob in blobs)
    assert key not in repr(fake) + repr(fake.spends) + repr(fake.requests)


def test_repr() -> None:
    fake = FakeAmaiServer()
    with fake.client(fake.create_key()) as client:
        client.spend("chat")
    assert repr(fake) == "FakeAmaiServer(accounts=1, spends=1, requests=1)"


# --- many at once ------------------------------------------------------------------------


def test_threads_over_loopback_keep_exact_balances() -> None:
    fake = FakeAmaiServer()
    # Covers exactly 60 chat spends: the threads below try 160 distinct ones, and every
    # thread also repeats the same 20 shared references.
    key = fake.create_key(balance=60 * 5 + 20 * 5)
    outcomes: list[str] = []

    with (
        fake.serve() as base_url,
        AmaiClient(api_key=key, base_url=base_url, timeout=10) as client,
    ):

        def work(thread: int) -> list[Charge]:
            shared = [client.spend("chat", reference=f"shared-{i}") for i in range(20)]
            for i in range(20):
                try:
                    client.spend("chat", reference=f"own-{thread}-{i}")
                    outcomes.append("charged")
                except InsufficientCreditsError:
                    outcomes.append("refused")
            return shared

        with ThreadPoolExecutor(max_workers=8) as pool:
            shared = list(pool.map(work, range(8)))

    assert fake.balance(key) == 0
    assert outcomes.count("charged") == 60
    assert outcomes.count("refused") == 100
    assert len(fake.spends) == 80
    # Every thread got the one original answer for each shared reference.
    assert all(batch == shared[0] for batch in shared)
    assert len({(c.balance_after, c.reference) for c in shared[0]}) == 20
    balances_after = sorted(row.balance_after for row in fake.spends)
    assert balances_after == list(range(0, 400, 5))


def test_tasks_in_process_keep_exact_balances() -> None:
    fake = FakeAmaiServer()
    key = fake.create_key(balance=100_000)

    async def main() -> list[Charge]:
        async with fake.async_client(key) as client:
            unique = [client.spend("music", reference=f"job-{i}") for i in range(150)]
            repeated = [client.spend("sfx", reference="same") for _ in range(50)]
            return await asyncio.gather(*unique, *repeated)

    charges = asyncio.run(main())
    assert fake.balance(key) == 100_000 - 150 * 30 - 10
    assert len(fake.spends) == 151
    assert len({c.balance_after for c in charges[150:]}) == 1
