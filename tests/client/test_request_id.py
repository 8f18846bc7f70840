"""`Quote.request_id` and `Charge.request_id`: the answer's id, for a support ticket.

The same header the errors read (`cf-ray`, else `x-request-id`), set on the results of
`check()` and `spend()`. It is metadata of the answer, not part of the result: equality,
hashing, `model_dump()`, the JSON and the JSON schema leave it out, so comparisons and
serialized answers are what they were before it existed.
"""

from __future__ import annotations

import copy
import json
import pickle

import httpx
import pytest
import respx

from amaimedia import Charge, Quote, ServerError
from tests.answers import CHARGE, QUOTE, error, queue
from tests.conftest import Harness


def answered(harness: Harness, api: respx.Router, headers: dict[str, str]) -> tuple[Quote, Charge]:
    queue(api["check"], httpx.Response(200, json=QUOTE, headers=headers))
    queue(api["spend"], httpx.Response(200, json=CHARGE, headers=headers))
    client = harness.client(api)
    quote = harness.run(client.check("chat"))
    charge = harness.run(client.spend("chat", reference="job-1"))
    return quote, charge


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        pytest.param({"cf-ray": "8f1e2d3c4b5a6978-AMS"}, "8f1e2d3c4b5a6978-AMS", id="cf-ray"),
        pytest.param({"x-request-id": "req-42"}, "req-42", id="x-request-id"),
        pytest.param({"cf-ray": "ray-1", "x-request-id": "req-1"}, "ray-1", id="cf-ray-first"),
        pytest.param({}, None, id="absent"),
        pytest.param({"cf-ray": ""}, None, id="empty"),
    ],
)
def test_the_results_carry_the_request_id_of_their_answer(
    harness: Harness, api: respx.Router, headers: dict[str, str], expected: str | None
) -> None:
    quote, charge = answered(harness, api, headers)
    assert quote.request_id == expected
    assert charge.request_id == expected


def test_it_is_the_id_an_error_of_the_same_answer_would_carry(
    harness: Harness, api: respx.Router
) -> None:
    headers = {"x-request-id": "req-7"}
    queue(api["check"], error(500, "server_error", headers=headers))
    queue(api["check"], httpx.Response(200, json=QUOTE, headers=headers))
    client = harness.client(api, max_retries=0)
    with pytest.raises(ServerError) as caught:
        harness.run(client.check("chat"))
    assert harness.run(client.check("chat")).request_id == caught.value.request_id == "req-7"


def test_a_retried_call_carries_the_id_of_the_answer_that_succeeded(
    harness: Harness, api: respx.Router
) -> None:
    queue(
        api["spend"],
        error(503, "server_error", headers={"cf-ray": "failed-attempt"}),
        httpx.Response(200, json=CHARGE, headers={"cf-ray": "the-charge"}),
    )
    charge = harness.run(harness.client(api).spend("chat", reference="job-1"))
    assert charge.request_id == "the-charge"


def test_equality_and_hashing_leave_it_out(harness: Harness, api: respx.Router) -> None:
    quote, charge = answered(harness, api, {"cf-ray": "ray-1"})
    by_hand_quote, by_hand_charge = Quote(**QUOTE), Charge(**CHARGE, reference="job-1")
    assert by_hand_quote.request_id is None
    assert by_hand_charge.request_id is None

    assert quote == by_hand_quote
    assert charge == by_hand_charge
    assert hash(quote) == hash(by_hand_quote)
    assert hash(charge) == hash(by_hand_charge)
    assert len({quote, by_hand_quote}) == 1
    # Equality is still of the fields, the extra ones and the class.
    assert quote != Quote(**{**QUOTE, "cost_tokens": 6})
    assert quote != Quote(**QUOTE, region="eu")
    assert charge != Charge(**CHARGE, reference="job-2")
    assert quote != QUOTE


def test_two_answers_of_one_charge_are_equal_whatever_their_ids(
    harness: Harness, api: respx.Router
) -> None:
    """A replayed reference answers the original charge again, under a new request id."""
    queue(
        api["spend"],
        httpx.Response(200, json=CHARGE, headers={"cf-ray": "first"}),
        httpx.Response(200, json=CHARGE, headers={"cf-ray": "replayed"}),
    )
    client = harness.client(api)
    first = harness.run(client.spend("chat", reference="job-1"))
    again = harness.run(client.spend("chat", reference="job-1"))
    assert (first.request_id, again.request_id) == ("first", "replayed")
    assert first == again


def test_dumps_json_and_the_schema_leave_it_out(harness: Harness, api: respx.Router) -> None:
    quote, charge = answered(harness, api, {"cf-ray": "ray-1"})
    assert quote.model_dump() == QUOTE
    assert charge.model_dump() == {**CHARGE, "reference": "job-1"}
    assert json.loads(quote.model_dump_json()) == QUOTE
    assert "ray-1" not in charge.model_dump_json()
    for model in (Quote, Charge):
        for mode in ("validation", "serialization"):
            schema = model.model_json_schema(mode=mode)
            assert "request_id" not in schema["properties"]
            assert "request_id" not in schema.get("required", [])
        assert "request_id" not in model.model_fields


def test_repr_and_the_notebook_table_are_unchanged(harness: Harness, api: respx.Router) -> None:
    quote, charge = answered(harness, api, {"cf-ray": "ray-1"})
    assert repr(quote) == repr(Quote(**QUOTE))
    assert repr(charge) == repr(Charge(**CHARGE, reference="job-1"))
    assert quote._repr_html_() == Quote(**QUOTE)._repr_html_()
    assert "ray-1" not in charge._repr_html_()


def test_copies_and_pickles_keep_it(harness: Harness, api: respx.Router) -> None:
    """A copy of an answer is still that answer, so it keeps the id a ticket needs."""
    quote, charge = answered(harness, api, {"cf-ray": "ray-1"})
    for model in (quote, charge):
        assert model.model_copy().request_id == "ray-1"
        assert model.model_copy(deep=True).request_id == "ray-1"
        assert copy.copy(model).request_id == "ray-1"
        assert copy.deepcopy(model).request_id == "ray-1"
        unpickled = pickle.loads(pickle.dumps(model))
        assert unpickled == model
        assert unpickled.request_id == "ray-1"


def test_it_is_read_only_and_no_field(harness: Harness, api: respx.Router) -> None:
    quote, _ = answered(harness, api, {"cf-ray": "ray-1"})
    with pytest.raises(Exception, match="frozen"):
        quote.request_id = "forged"  # type: ignore[misc]
    assert quote.request_id == "ray-1"
    # Given by hand it is an extra field like any other: the property stays the answer's.
    by_hand = Quote(**QUOTE, request_id="typed-in")
    assert by_hand.request_id is None
    assert by_hand.model_dump()["request_id"] == "typed-in"


def test_a_body_field_of_the_same_name_does_not_replace_the_header(
    harness: Harness, api: respx.Router
) -> None:
    body = {**QUOTE, "request_id": "from-the-body"}
    queue(api["check"], httpx.Response(200, json=body, headers={"cf-ray": "from-the-header"}))
    quote = harness.run(harness.client(api).check("chat"))
    assert quote.request_id == "from-the-header"
    assert quote.model_dump() == body  # kept, as every extra field is


def test_validating_a_dict_by_hand_gives_none() -> None:
    assert Quote.model_validate(QUOTE).request_id is None
    assert Charge.model_validate_json(json.dumps({**CHARGE, "reference": "j"})).request_id is None
    assert Charge.model_validate(CHARGE, context={"reference": "j"}).request_id is None
