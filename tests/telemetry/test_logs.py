"""The `amaimedia` logger's lines about money: one INFO per charge, one WARNING per lost spend.

Each body runs against both clients through `harness`, over the `api` respx router. The
lines are read from `caplog`; their structured fields are attributes of each `LogRecord`
(`extra=`), which is what a JSON formatter reads.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx

from amaimedia import APIConnectionError, Hooks, InsufficientCreditsError, Meter, SpendFailedError
from tests.answers import CHARGE, KEY, error, queue
from tests.conftest import Harness
from tests.telemetry.test_hooks import run_block

CHARGE_FIELDS = ("tool", "units", "reference", "charged", "balance_after", "request_id")
FAILURE_FIELDS = ("tool", "units", "reference", "error_type", "status_code", "request_id")


def charge_lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [record for record in caplog.records if record.getMessage().startswith("charged ")]


def failure_lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [record for record in caplog.records if record.levelno >= logging.WARNING]


def fields(record: logging.LogRecord, names: tuple[str, ...]) -> dict[str, Any]:
    return {name: getattr(record, name) for name in names}


# --- one INFO line per charge ---------------------------------------------------------------


def test_a_charge_is_one_info_line_with_its_fields(
    harness: Harness, api: respx.Router, caplog: pytest.LogCaptureFixture
) -> None:
    queue(api["spend"], httpx.Response(200, json=CHARGE, headers={"x-request-id": "req-1"}))
    client = harness.client(api)

    with caplog.at_level(logging.INFO, logger="amaimedia"):
        harness.run(client.spend("dub", 3, reference="job-1"))

    [record] = caplog.records
    assert (record.name, record.levelno) == ("amaimedia", logging.INFO)
    assert record.getMessage() == (
        "charged 5 tokens for dub x3 (reference=job-1, balance_after=9990, request_id=req-1)"
    )
    assert fields(record, CHARGE_FIELDS) == {
        "tool": "dub",
        "units": 3,
        "reference": "job-1",
        "charged": 5,
        "balance_after": 9990,
        "request_id": "req-1",
    }


def test_a_retried_spend_is_still_one_charge_line_with_the_last_answers_id(
    harness: Harness, api: respx.Router, caplog: pytest.LogCaptureFixture
) -> None:
    queue(
        api["spend"],
        error(503, headers={"x-request-id": "req-503"}),
        httpx.Response(200, json=CHARGE, headers={"x-request-id": "req-200"}),
    )
    client = harness.client(api)

    with caplog.at_level(logging.INFO, logger="amaimedia"):
        harness.run(client.spend("chat", reference="job-1"))

    [record] = charge_lines(caplog)
    assert record.request_id == "req-200"  # type: ignore[attr-defined]
    assert failure_lines(caplog) == []  # a retry is no failure
    assert len(caplog.records) == 2  # and its own INFO line, "Retrying ..."


def test_a_metered_block_is_one_charge_line_even_at_debug(
    harness: Harness, api: respx.Router, caplog: pytest.LogCaptureFixture
) -> None:
    client = harness.client(api)

    with caplog.at_level(logging.DEBUG, logger="amaimedia"):
        meter = run_block(harness, client.metered("dub", units=2, reference="job-7"))

    charged = [record for record in caplog.records if hasattr(record, "charged")]
    assert len(charged) == 1
    assert charge_lines(caplog) == charged
    assert meter.charge is not None
    assert fields(charged[0], CHARGE_FIELDS) == {
        "tool": "dub",
        "units": 2,
        "reference": "job-7",
        "charged": meter.charge.charged,
        "balance_after": meter.charge.balance_after,
        "request_id": None,
    }


def test_a_check_logs_nothing_at_info(
    harness: Harness, api: respx.Router, caplog: pytest.LogCaptureFixture
) -> None:
    client = harness.client(api)

    with caplog.at_level(logging.INFO, logger="amaimedia"):
        harness.run(client.check("chat"))
        queue(api["check"], error(402, "insufficient_credits"))
        with pytest.raises(InsufficientCreditsError):
            harness.run(client.check("chat"))

    assert caplog.records == []


def test_a_refused_metered_block_logs_nothing_at_info(
    harness: Harness, api: respx.Router, caplog: pytest.LogCaptureFixture
) -> None:
    queue(
        api["check"],
        httpx.Response(
            200, json={"ok": True, "allowed": False, "cost_tokens": 5, "balance_after": -1}
        ),
    )
    client = harness.client(api)

    with (
        caplog.at_level(logging.INFO, logger="amaimedia"),
        pytest.raises(InsufficientCreditsError),
    ):
        run_block(harness, client.metered("chat"))

    assert caplog.records == []


def test_the_charge_line_costs_nothing_when_info_is_off(
    harness: Harness, api: respx.Router, caplog: pytest.LogCaptureFixture
) -> None:
    charges: list[object] = []
    client = harness.client(api, hooks=Hooks(on_charge=charges.append))

    with caplog.at_level(logging.WARNING, logger="amaimedia"):
        harness.run(client.spend("chat"))

    assert caplog.records == []
    assert len(charges) == 1  # the hooks do not depend on the log level


def test_a_request_id_from_the_server_is_escaped_in_the_charge_line(
    harness: Harness, api: respx.Router, caplog: pytest.LogCaptureFixture
) -> None:
    sneaky = "req-1\x1b[2J"
    response = httpx.Response(200, json=CHARGE, headers={"x-request-id": sneaky})
    queue(api["spend"], response)
    client = harness.client(api)

    with caplog.at_level(logging.INFO, logger="amaimedia"):
        charge = harness.run(client.spend("chat", reference="job-1"))

    [record] = charge_lines(caplog)
    assert "\x1b" not in record.getMessage()
    assert record.request_id == "req-1\\x1b[2J"  # type: ignore[attr-defined]
    assert charge.charged == 5


def test_the_fields_suit_a_json_formatter(
    harness: Harness, api: respx.Router, caplog: pytest.LogCaptureFixture
) -> None:
    queue(api["spend"], httpx.Response(200, json=CHARGE), error(402, "insufficient_credits"))
    client = harness.client(api)

    with caplog.at_level(logging.INFO, logger="amaimedia"):
        harness.run(client.spend("chat", 2.5, reference="job-1"))
        with pytest.raises(InsufficientCreditsError):
            harness.run(client.spend("chat", reference="job-2"))

    charge, failure = caplog.records
    assert json.loads(json.dumps(fields(charge, CHARGE_FIELDS)))["units"] == 2.5
    assert json.loads(json.dumps(fields(failure, FAILURE_FIELDS)))["status_code"] == 402


# --- one WARNING per spend that failed for good ---------------------------------------------


def test_a_refused_spend_is_one_warning_with_its_fields(
    harness: Harness, api: respx.Router, caplog: pytest.LogCaptureFixture
) -> None:
    refusal = error(402, "insufficient_credits", headers={"x-request-id": "req-402"})
    queue(api["spend"], refusal)
    client = harness.client(api)

    at_info = caplog.at_level(logging.INFO, logger="amaimedia")
    with at_info, pytest.raises(InsufficientCreditsError) as caught:
        harness.run(client.spend("dub", 3, reference="job-1"))

    [record] = caplog.records
    assert (record.name, record.levelno) == ("amaimedia", logging.WARNING)
    assert record.getMessage() == f"spend of dub x3 failed (reference=job-1): {caught.value}"
    assert fields(record, FAILURE_FIELDS) == {
        "tool": "dub",
        "units": 3,
        "reference": "job-1",
        "error_type": "insufficient_credits",
        "status_code": 402,
        "request_id": "req-402",
    }


def test_a_spend_that_got_no_answer_is_one_warning_named_by_its_class(
    harness: Harness, api: respx.Router, caplog: pytest.LogCaptureFixture
) -> None:
    queue(api["spend"], *[httpx.ConnectError("connection refused")] * 2)
    client = harness.client(api, max_retries=1)

    at_info = caplog.at_level(logging.INFO, logger="amaimedia")
    with at_info, pytest.raises(APIConnectionError) as caught:
        harness.run(client.spend("chat"))

    [record] = failure_lines(caplog)
    assert fields(record, FAILURE_FIELDS) == {
        "tool": "chat",
        "units": 1,
        "reference": caught.value.reference,
        "error_type": "APIConnectionError",
        "status_code": None,
        "request_id": None,
    }
    assert charge_lines(caplog) == []


@pytest.mark.parametrize("journaled", [False, True], ids=["no-journal", "journal"])
def test_a_metered_block_whose_spend_failed_is_one_warning_not_two(
    harness: Harness,
    api: respx.Router,
    caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
    journaled: bool,
) -> None:
    queue(api["spend"], error(503), error(503))
    options: dict[str, Any] = {"max_retries": 1}
    if journaled:
        options["spend_journal"] = str(tmp_path / "spends.sqlite3")
    client = harness.client(api, **options)

    with caplog.at_level(logging.INFO, logger="amaimedia"), pytest.raises(SpendFailedError):
        run_block(harness, client.metered("dub", units=2, reference="job-1"))

    [record] = failure_lines(caplog)
    assert record.getMessage().startswith("spend of dub x2 failed (reference=job-1): 503 ")
    # No error string in the answer: the failure is named by its class.
    assert fields(record, ("error_type", "status_code")) == {
        "error_type": "ServerError",
        "status_code": 503,
    }
    assert charge_lines(caplog) == []


def test_a_metered_block_whose_work_failed_warns_of_nothing(
    harness: Harness, api: respx.Router, caplog: pytest.LogCaptureFixture
) -> None:
    client = harness.client(api)

    def work(meter: Meter) -> None:
        raise LookupError("the work failed")

    with caplog.at_level(logging.INFO, logger="amaimedia"), pytest.raises(LookupError):
        run_block(harness, client.metered("chat"), work)

    assert caplog.records == []


def test_a_request_id_from_the_server_is_escaped_in_the_warning(
    harness: Harness, api: respx.Router, caplog: pytest.LogCaptureFixture
) -> None:
    # The fields are what a formatter writes (`%(request_id)s`, a JSON line), so they are
    # escaped like the charge line's: a newline from the server must not forge a line.
    sneaky = "req-1\n[WARNING amaimedia] forged"
    queue(api["spend"], error(402, "insufficient_credits", headers={"x-request-id": sneaky}))
    client = harness.client(api)

    at_info = caplog.at_level(logging.INFO, logger="amaimedia")
    with at_info, pytest.raises(InsufficientCreditsError) as caught:
        harness.run(client.spend("chat", reference="job-1"))

    [record] = failure_lines(caplog)
    assert "\n" not in record.getMessage()
    assert record.request_id == "req-1\\n[WARNING amaimedia] forged"  # type: ignore[attr-defined]
    assert caught.value.request_id == sneaky  # the error keeps what the server sent


def test_a_replay_logs_its_own_warning_and_one_charge_line(
    harness: Harness, api: respx.Router, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    queue(api["spend"], error(503), error(503))
    journal = str(tmp_path / "spends.sqlite3")
    client = harness.client(api, max_retries=0, spend_journal=journal)
    with pytest.raises(SpendFailedError):
        run_block(harness, client.metered("chat", reference="job-5"))

    caplog.clear()
    with caplog.at_level(logging.INFO, logger="amaimedia"):
        failed = harness.run(client.replay_pending())
    [warning] = failure_lines(caplog)
    assert "failed again and stays in the journal" in warning.getMessage()
    assert not hasattr(warning, "error_type")  # the replay's own line, not the spend's
    assert charge_lines(caplog) == []
    assert [spend.reference for spend in failed.failed] == ["job-5"]

    caplog.clear()
    with caplog.at_level(logging.INFO, logger="amaimedia"):
        replayed = harness.run(client.replay_pending())
    assert [charge.reference for charge in replayed] == ["job-5"]
    [record] = charge_lines(caplog)
    assert record.reference == "job-5"  # type: ignore[attr-defined]
    assert failure_lines(caplog) == []


# --- the key --------------------------------------------------------------------------------


def test_no_line_holds_the_key(
    harness: Harness, api: respx.Router, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    def broken(event: object) -> None:
        raise RuntimeError("a hook that fails")

    queue(api["check"], httpx.ConnectError("connection refused"))
    queue(
        api["spend"],
        error(429, "rate_limited", headers={"retry-after": "1"}),
        httpx.Response(200, json=CHARGE, headers={"x-request-id": "req-1"}),
        error(402, "insufficient_credits"),
        *[error(503)] * 2,
    )
    hooks = Hooks(on_request=broken, on_response=broken, on_retry=broken, on_charge=broken)
    journal = str(tmp_path / "spends.sqlite3")
    client = harness.client(api, max_retries=1, hooks=hooks, spend_journal=journal)

    with caplog.at_level(logging.DEBUG):
        harness.run(client.check("chat"))
        harness.run(client.spend("chat", reference="job-1"))
        with pytest.raises(InsufficientCreditsError):
            harness.run(client.spend("chat", reference="job-2"))
        with pytest.raises(SpendFailedError):
            run_block(harness, client.metered("dub", units=2))
        harness.run(client.replay_pending())

    assert len(charge_lines(caplog)) == 2  # the spend, and the block's replayed
    assert len([r for r in caplog.records if r.getMessage().startswith("spend of ")]) == 2
    formatter = logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s")
    for record in caplog.records:
        texts = [formatter.format(record), *(repr(value) for value in vars(record).values())]
        leaked = [text for text in texts if KEY in text]
        assert leaked == [], f"{record.getMessage()!r} shows the key"
