"""How to test your own app's billing offline, with the `amai_fake` pytest fixture.

Installing the SDK installs a pytest plugin: any test can ask for `amai_fake`, a fresh
`amaimedia.testing.FakeAmaiServer`, and needs no network and no real key.

    python -m pytest examples/test_my_app.py
"""

from __future__ import annotations

import pytest

from amaimedia import AmaiClient, InsufficientCreditsError, SpendFailedError
from amaimedia.testing import FakeAmaiServer

# --- the app under test -------------------------------------------------------------------


class OutOfCredits(Exception):
    """What the app shows its user when their balance is too low."""


def translate(client: AmaiClient, text: str, *, job_id: str) -> str:
    """A feature of the app: translate text, billed per 1,000 characters."""
    units = max(1, len(text) // 1000)
    try:
        with client.metered("translate", units=units, reference=f"translate-{job_id}"):
            return text.upper()  # the real translation would go here
    except InsufficientCreditsError as exc:
        raise OutOfCredits(f"this needs {exc.cost_tokens} tokens") from exc


# --- its tests ----------------------------------------------------------------------------


@pytest.fixture
def key(amai_fake: FakeAmaiServer) -> str:
    return amai_fake.create_key(balance=100)


def test_a_translation_is_charged_once(amai_fake: FakeAmaiServer, key: str) -> None:
    with amai_fake.client(key) as client:
        assert translate(client, "hello", job_id="j1") == "HELLO"
        translate(client, "hello", job_id="j1")  # the same job again: not charged again

    assert [row.reference for row in amai_fake.spends] == ["translate-j1"]
    assert amai_fake.balance(key) == 100 - 3


def test_a_user_without_credits_gets_a_clear_message(amai_fake: FakeAmaiServer) -> None:
    poor = amai_fake.create_key(balance=2)
    with amai_fake.client(poor) as client, pytest.raises(OutOfCredits, match="needs 3 tokens"):
        translate(client, "hello", job_id="j2")
    assert amai_fake.spends == []


def test_a_lost_answer_is_retried_without_a_double_charge(
    amai_fake: FakeAmaiServer, key: str
) -> None:
    amai_fake.fail_next("spend", drop_after_commit=True)  # charged, but the answer is lost
    with amai_fake.client(key) as client:
        translate(client, "hello", job_id="j3")
    assert len(amai_fake.spends) == 1
    assert amai_fake.balance(key) == 97


def test_a_spend_that_keeps_failing_can_be_replayed(amai_fake: FakeAmaiServer, key: str) -> None:
    amai_fake.fail_next("spend", status=503)
    with amai_fake.client(key, max_retries=0) as client:  # no retries: fail at once
        with pytest.raises(SpendFailedError) as caught:
            translate(client, "hello", job_id="j4")
        failed = caught.value
        client.spend(failed.tool, failed.units, reference=failed.reference)
    assert [row.reference for row in amai_fake.spends] == ["translate-j4"]


def test_over_real_http(amai_fake: FakeAmaiServer, key: str) -> None:
    with amai_fake.serve() as base_url, AmaiClient(api_key=key, base_url=base_url) as client:
        translate(client, "x" * 5000, job_id="j5")
    assert amai_fake.spends[0].units == 5
