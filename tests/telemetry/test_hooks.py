"""`Hooks`: what each hook is told, in what order, and that none can break a call or see the key.

Each body runs against both clients through `harness`, over the `api` respx router (or an
offline `FakeAmaiServer` where its ledger and request ids are the point). Waits between
retries are recorded in `harness.sleeps`, not slept. `Recorder` is a set of hooks that
writes down every event it is given, tagged with the hook's name.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx

from amaimedia import (
    APIConnectionError,
    ChargeEvent,
    Hooks,
    InsufficientCreditsError,
    Meter,
    RateLimitError,
    RequestEvent,
    ResponseEvent,
    RetryEvent,
    ServerError,
    SpendFailedError,
)
from amaimedia.testing import FakeAmaiServer
from tests.answers import CHARGE, KEY, QUOTE, error, queue
from tests.conftest import Harness

Event = RequestEvent | ResponseEvent | RetryEvent | ChargeEvent
HOOK_NAMES = ("on_request", "on_response", "on_retry", "on_charge")


class Recorder:
    """Hooks that record every event, in the order the client gave them."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, Event]] = []
        self.hooks = Hooks(
            on_request=self._hook("on_request"),
            on_response=self._hook("on_response"),
            on_retry=self._hook("on_retry"),
            on_charge=self._hook("on_charge"),
        )

    def _hook(self, name: str) -> Callable[[Event], None]:
        def hook(event: Event) -> None:
            self.seen.append((name, event))

        return hook

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self.seen]

    def of(self, name: str) -> list[Any]:
        return [event for hook, event in self.seen if hook == name]


def run_block(
    harness: Harness, block: Any, work: Callable[[Meter], object] | None = None
) -> Meter:
    """Run `work(meter)` as the body of a metered block, with `with` or `async with`."""
    if harness.is_async:

        async def run() -> Meter:
            async with block as meter:
                if work is not None:
                    work(meter)
            return meter  # type: ignore[no-any-return]

        return harness.run(run())  # type: ignore[no-any-return]
    with block as meter:
        if work is not None:
            work(meter)
    return meter  # type: ignore[no-any-return]


def fake_client(harness: Harness, fake: FakeAmaiServer, key: str, **options: Any) -> Any:
    """A client of the harness's kind on `fake`, in process."""
    transport = fake.async_transport() if harness.is_async else fake.transport()
    http = harness.http_client(transport=transport)
    return harness.client(http_client=http, api_key=key, **options)


def with_id(status: int, body: dict[str, Any], request_id: str) -> httpx.Response:
    return httpx.Response(status, json=body, headers={"x-request-id": request_id})


# --- what each hook is told, in order -------------------------------------------------------


def test_a_check_is_one_request_then_one_response(harness: Harness, api: respx.Router) -> None:
    queue(api["check"], with_id(200, QUOTE, "req-check"))
    recorder = Recorder()
    client = harness.client(api, hooks=recorder.hooks)

    harness.run(client.check("dub", 3))

    assert recorder.names == ["on_request", "on_response"]
    [request] = recorder.of("on_request")
    assert request == RequestEvent("check", "dub", 3, None, 1)
    [response] = recorder.of("on_response")
    assert (response.operation, response.tool, response.units, response.reference) == (
        "check",
        "dub",
        3,
        None,
    )
    assert (response.attempt, response.status_code, response.request_id) == (1, 200, "req-check")
    assert response.error is None
    assert response.elapsed >= 0


def test_a_spend_ends_with_its_charge(harness: Harness, api: respx.Router) -> None:
    queue(api["spend"], with_id(200, CHARGE, "req-spend"))
    recorder = Recorder()
    client = harness.client(api, hooks=recorder.hooks)

    harness.run(client.spend("chat", 2, reference="job-1"))

    assert recorder.names == ["on_request", "on_response", "on_charge"]
    assert recorder.of("on_request") == [RequestEvent("spend", "chat", 2, "job-1", 1)]
    [response] = recorder.of("on_response")
    assert (response.operation, response.reference) == ("spend", "job-1")
    assert (response.status_code, response.error) == (200, None)
    assert recorder.of("on_charge") == [
        ChargeEvent(
            tool="chat",
            units=2,
            reference="job-1",
            charged=5,
            balance_after=9990,
            request_id="req-spend",
            attempts=1,
        )
    ]


def test_a_generated_reference_is_the_same_in_every_event(
    harness: Harness, api: respx.Router
) -> None:
    queue(api["spend"], error(503))
    recorder = Recorder()
    client = harness.client(api, hooks=recorder.hooks)

    charge = harness.run(client.spend("chat"))

    assert len(recorder.seen) == 6  # two attempts, a retry, a charge
    assert {event.reference for _, event in recorder.seen} == {charge.reference}


def test_a_retried_spend_tells_each_attempt_the_wait_and_one_charge(
    harness: Harness, api: respx.Router
) -> None:
    queue(
        api["spend"],
        error(429, "rate_limited", headers={"retry-after": "2", "x-request-id": "req-429"}),
        with_id(200, CHARGE, "req-200"),
    )
    recorder = Recorder()
    client = harness.client(api, hooks=recorder.hooks)

    harness.run(client.spend("chat", reference="job-1"))

    assert recorder.names == [
        "on_request",
        "on_response",
        "on_retry",
        "on_request",
        "on_response",
        "on_charge",
    ]
    assert [event.attempt for event in recorder.of("on_request")] == [1, 2]
    first, second = recorder.of("on_response")
    assert (first.attempt, first.status_code, first.request_id) == (1, 429, "req-429")
    assert isinstance(first.error, RateLimitError)
    assert (second.attempt, second.status_code, second.request_id) == (2, 200, "req-200")
    assert second.error is None
    [retry] = recorder.of("on_retry")
    assert (retry.operation, retry.tool, retry.reference, retry.attempt) == (
        "spend",
        "chat",
        "job-1",
        1,
    )
    assert retry.wait == 2.0 == harness.sleeps[0]  # the server's Retry-After, as waited
    assert retry.error is first.error
    [charge] = recorder.of("on_charge")
    assert (charge.charged, charge.balance_after, charge.reference) == (5, 9990, "job-1")
    assert charge.attempts == 2
    assert charge.request_id == "req-200"  # the answer that charged, not the 429


def test_a_backoff_wait_is_the_one_slept(harness: Harness, api: respx.Router) -> None:
    queue(api["check"], error(503), error(502))
    recorder = Recorder()
    client = harness.client(api, hooks=recorder.hooks)

    harness.run(client.check("chat"))

    waits = [event.wait for event in recorder.of("on_retry")]
    assert waits == harness.sleeps
    assert len(waits) == 2
    assert [event.attempt for event in recorder.of("on_retry")] == [1, 2]


def test_a_connection_error_is_a_response_without_a_status(
    harness: Harness, api: respx.Router
) -> None:
    queue(api["check"], httpx.ConnectError("connection refused"))
    recorder = Recorder()
    client = harness.client(api, hooks=recorder.hooks)

    harness.run(client.check("chat"))

    assert recorder.names == ["on_request", "on_response", "on_retry", "on_request", "on_response"]
    failed, answered = recorder.of("on_response")
    assert (failed.status_code, failed.request_id) == (None, None)
    assert isinstance(failed.error, APIConnectionError)
    assert recorder.of("on_retry")[0].error is failed.error
    assert (answered.status_code, answered.error) == (200, None)


def test_a_spend_that_failed_for_good_is_never_a_charge(
    harness: Harness, api: respx.Router
) -> None:
    queue(api["spend"], error(402, "insufficient_credits", headers={"x-request-id": "req-402"}))
    recorder = Recorder()
    client = harness.client(api, hooks=recorder.hooks)

    with pytest.raises(InsufficientCreditsError) as caught:
        harness.run(client.spend("chat", reference="job-1"))

    assert recorder.names == ["on_request", "on_response"]  # a 402 is not retried
    [response] = recorder.of("on_response")
    assert (response.status_code, response.request_id) == (402, "req-402")
    assert response.error is caught.value


def test_a_connection_error_without_retries_left(harness: Harness, api: respx.Router) -> None:
    queue(api["spend"], httpx.ConnectError("connection refused"))
    recorder = Recorder()
    client = harness.client(api, hooks=recorder.hooks, max_retries=0)

    with pytest.raises(APIConnectionError):
        harness.run(client.spend("chat", reference="job-1"))

    assert recorder.names == ["on_request", "on_response"]
    assert recorder.of("on_response")[0].status_code is None


# --- metered blocks and replays -------------------------------------------------------------


def test_a_metered_block_tells_its_check_its_spend_and_its_charge(
    harness: Harness, api: respx.Router
) -> None:
    recorder = Recorder()
    client = harness.client(api, hooks=recorder.hooks)

    def work(meter: Meter) -> None:
        # The check was told before the work; the spend comes after it.
        assert [(n, e.operation) for n, e in recorder.seen] == [
            ("on_request", "check"),
            ("on_response", "check"),
        ]
        meter.units = 4

    meter = run_block(harness, client.metered("dub", units=3, reference="job-9"), work)

    assert [(name, getattr(event, "operation", None)) for name, event in recorder.seen] == [
        ("on_request", "check"),
        ("on_response", "check"),
        ("on_request", "spend"),
        ("on_response", "spend"),
        ("on_charge", None),
    ]
    assert recorder.of("on_request")[0].units == 3  # quoted for the expected work
    assert recorder.of("on_request")[1] == RequestEvent("spend", "dub", 4, "job-9", 1)
    [charge] = recorder.of("on_charge")
    assert (charge.tool, charge.units, charge.reference) == ("dub", 4, "job-9")
    assert meter.charge is not None
    assert charge.charged == meter.charge.charged


def test_a_metered_block_whose_spend_is_retried(harness: Harness, api: respx.Router) -> None:
    queue(api["spend"], error(503))
    recorder = Recorder()
    client = harness.client(api, hooks=recorder.hooks)

    run_block(harness, client.metered("chat", reference="job-3"))

    [retry] = recorder.of("on_retry")
    assert (retry.operation, retry.reference) == ("spend", "job-3")
    assert recorder.of("on_charge")[0].attempts == 2


def test_a_metered_block_whose_work_raised_tells_no_spend(
    harness: Harness, api: respx.Router
) -> None:
    recorder = Recorder()
    client = harness.client(api, hooks=recorder.hooks)

    def work(meter: Meter) -> None:
        raise LookupError("the work failed")

    with pytest.raises(LookupError):
        run_block(harness, client.metered("chat"), work)

    assert [event.operation for _, event in recorder.seen] == ["check", "check"]


def test_a_replayed_spend_is_told_like_any_spend(
    harness: Harness, api: respx.Router, tmp_path: Path
) -> None:
    queue(api["spend"], error(503))
    recorder = Recorder()
    journal = str(tmp_path / "spends.sqlite3")
    client = harness.client(api, hooks=recorder.hooks, max_retries=0, spend_journal=journal)
    with pytest.raises(SpendFailedError):
        run_block(harness, client.metered("chat", reference="job-5"))
    assert recorder.of("on_charge") == []

    report = harness.run(client.replay_pending())

    assert [charge.reference for charge in report] == ["job-5"]
    [charge] = recorder.of("on_charge")
    assert (charge.reference, charge.charged, charge.attempts) == ("job-5", 5, 1)


def test_the_events_match_the_server_ledger_and_its_request_ids(harness: Harness) -> None:
    fake = FakeAmaiServer()
    key = fake.create_key(balance=1_000)
    # Charged, and the answer lost: the retry with the same reference reports the charge.
    fake.fail_next("spend", drop_after_commit=True)
    recorder = Recorder()
    client = fake_client(harness, fake, key, hooks=recorder.hooks)

    charge = harness.run(client.spend("dub", 2, reference="job-1"))

    [spend] = fake.spends
    [event] = recorder.of("on_charge")
    assert (event.charged, event.balance_after) == (charge.charged, fake.balance(key))
    assert event.charged == 1_000 - fake.balance(key)
    assert event.attempts == 2
    dropped, answered = recorder.of("on_response")
    assert (dropped.status_code, dropped.request_id) == (None, None)
    assert answered.request_id == fake.requests[-1].request_id is not None
    assert event.request_id == answered.request_id
    assert spend.reference == event.reference == "job-1"


# --- a hook that raises ---------------------------------------------------------------------


class HookFailed(Exception):
    pass


def raising_hooks(calls: list[str]) -> Hooks:
    def hook(name: str) -> Callable[[Event], None]:
        def raising(event: Event) -> None:
            calls.append(name)
            raise HookFailed(f"{name} is broken")

        return raising

    return Hooks(**{name: hook(name) for name in HOOK_NAMES})


def test_raising_hooks_never_break_a_metered_block_or_its_charge(
    harness: Harness, api: respx.Router, caplog: pytest.LogCaptureFixture
) -> None:
    queue(api["spend"], error(503))  # so that on_retry is called too
    calls: list[str] = []
    client = harness.client(api, hooks=raising_hooks(calls))

    with caplog.at_level(logging.WARNING, logger="amaimedia"):
        meter = run_block(harness, client.metered("chat", reference="job-1"))

    assert meter.state == "charged"
    assert meter.charge is not None
    assert meter.charge.charged == 5
    assert api["spend"].call_count == 2  # the retry went on despite its hook
    # Every hook was called, each time it was due, whichever raised before it.
    assert calls.count("on_request") == 3  # the check, two spend attempts
    assert calls.count("on_charge") == 1
    hook_warnings = [r for r in caplog.records if r.getMessage().endswith("goes on without it")]
    assert len(hook_warnings) == len(calls)
    for record, name in zip(hook_warnings, calls, strict=True):
        assert record.levelno == logging.WARNING
        assert record.getMessage() == f"the {name} hook raised; the call goes on without it"
        assert record.exc_info is not None
        assert isinstance(record.exc_info[1], HookFailed)


@pytest.mark.parametrize("name", HOOK_NAMES)
def test_each_hook_that_raises_is_named_and_the_call_returns(
    harness: Harness, api: respx.Router, caplog: pytest.LogCaptureFixture, name: str
) -> None:
    queue(api["spend"], error(503))

    def broken(event: Event) -> None:
        raise HookFailed(name)

    client = harness.client(api, hooks=Hooks(**{name: broken}))

    with caplog.at_level(logging.WARNING, logger="amaimedia"):
        charge = harness.run(client.spend("chat", reference="job-1"))

    assert charge.charged == 5
    named = {r.getMessage() for r in caplog.records if r.levelno == logging.WARNING}
    assert named == {f"the {name} hook raised; the call goes on without it"}


def test_a_raising_hook_does_not_change_what_a_failed_call_raises(
    harness: Harness, api: respx.Router
) -> None:
    queue(api["check"], error(402, "insufficient_credits"))
    calls: list[str] = []
    client = harness.client(api, hooks=raising_hooks(calls))

    with pytest.raises(InsufficientCreditsError) as caught:
        harness.run(client.check("chat"))

    assert not isinstance(caught.value.__context__, HookFailed)
    assert calls == ["on_request", "on_response"]


def test_hooks_run_in_the_calling_thread(harness: Harness, api: respx.Router) -> None:
    threads: list[int] = []
    loops: list[bool] = []

    def note(event: Event) -> None:
        threads.append(threading.get_ident())
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            loops.append(False)
        else:
            loops.append(True)

    client = harness.client(api, hooks=Hooks(on_request=note, on_response=note, on_charge=note))

    harness.run(client.spend("chat"))

    assert threads == [threading.get_ident()] * 3
    assert loops == [harness.is_async] * 3  # the async client runs them on its loop


# --- the key ------------------------------------------------------------------------------------


def texts_of(value: object) -> list[str]:
    """What a hook could print of a value: its repr and str, and an error's, down its chain."""
    texts = [repr(value), str(value)]
    seen: set[int] = set()
    error = value if isinstance(value, BaseException) else None
    # respx chains its own error to the transport's and back: each link is read once.
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        texts += [repr(error), str(error), *(repr(arg) for arg in error.args)]
        # `response` is httpx's own answer, whose request carries the key in its
        # Authorization header, as on every error the SDK raises: it is the one
        # attribute not read, here as in an error's notebook table.
        texts += [repr(v) for k, v in vars(error).items() if k != "response"]
        error = error.__cause__
    return texts


def test_no_event_holds_the_key(harness: Harness, api: respx.Router, tmp_path: Path) -> None:
    queue(api["check"], httpx.ConnectError("connection refused"), error(500))
    queue(
        api["spend"],
        error(429, "rate_limited", headers={"retry-after": "1"}),
        error(402, "insufficient_credits"),
        httpx.ReadTimeout("the answer did not come"),
    )
    recorder = Recorder()
    client = harness.client(api, hooks=recorder.hooks, max_retries=1)

    with pytest.raises(ServerError):  # a connection error, then a 500 for good
        harness.run(client.check("chat"))
    with pytest.raises(InsufficientCreditsError):  # a 429, then a 402
        harness.run(client.spend("chat", reference="job-1"))
    run_block(harness, client.metered("dub", units=2))  # a timeout, then a charge

    assert {name for name, _ in recorder.seen} == set(HOOK_NAMES)
    assert sum(event.error is not None for event in recorder.of("on_response")) == 5
    for name, event in recorder.seen:
        texts = [repr(event), str(event)]
        for field in dataclasses.fields(event):
            texts += texts_of(getattr(event, field.name))
        leaked = [text for text in texts if KEY in text]
        assert leaked == [], f"{name} was given the key: {leaked}"


# --- what the client accepts --------------------------------------------------------------------


@pytest.mark.parametrize("name", HOOK_NAMES)
def test_a_hook_that_is_not_callable_is_refused(name: str) -> None:
    with pytest.raises(TypeError, match=rf"^Hooks\({name}=\.\.\.\) must be callable, got int$"):
        Hooks(**{name: 3})


def test_hooks_on_charge_3_is_refused() -> None:
    with pytest.raises(TypeError, match="on_charge"):
        Hooks(on_charge=3)  # type: ignore[arg-type]


@pytest.mark.parametrize("hooks", ["x", print, {"on_charge": print}])
def test_hooks_that_are_not_hooks_fail_before_anything_is_opened(
    harness: Harness, api: respx.Router, tmp_path: Path, hooks: object
) -> None:
    journal = tmp_path / "spends.sqlite3"

    with pytest.raises(TypeError, match=r"^hooks must be an amaimedia\.Hooks, got "):
        harness.client(api, hooks=hooks, spend_journal=str(journal))

    assert api.calls.call_count == 0
    assert not journal.exists()  # refused before the journal was opened


def test_with_options_refuses_hooks_that_are_not_hooks(
    harness: Harness, api: respx.Router
) -> None:
    client = harness.client(api)

    with pytest.raises(TypeError, match=r"^hooks must be an amaimedia\.Hooks, got str$"):
        client.with_options(hooks="x")


def test_with_options_none_turns_the_hooks_off_and_no_argument_keeps_them(
    harness: Harness, api: respx.Router
) -> None:
    recorder = Recorder()
    client = harness.client(api, hooks=recorder.hooks)
    silent = client.with_options(hooks=None)
    kept = client.with_options(max_retries=0)

    harness.run(silent.check("chat"))
    assert recorder.seen == []

    harness.run(kept.check("chat"))
    assert recorder.names == ["on_request", "on_response"]

    harness.run(client.check("chat"))  # the original keeps its own
    assert len(recorder.seen) == 4


def test_with_options_gives_a_copy_other_hooks(harness: Harness, api: respx.Router) -> None:
    first, second = Recorder(), Recorder()
    client = harness.client(api, hooks=first.hooks)
    other = client.with_options(hooks=second.hooks)

    harness.run(other.spend("chat"))

    assert first.seen == []
    assert second.names == ["on_request", "on_response", "on_charge"]


@pytest.mark.parametrize("name", HOOK_NAMES)
def test_an_async_hook_is_refused_since_it_would_never_run(name: str) -> None:
    async def hook(event: Event) -> None:  # pragma: no cover - never called
        pass

    with pytest.raises(TypeError, match=rf"^Hooks\({name}=\.\.\.\) must be a plain function"):
        Hooks(**{name: hook})
