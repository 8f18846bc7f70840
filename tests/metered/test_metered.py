"""`metered()`: quote, run the work, then spend exactly once, and never when the work failed.

Each test body runs against both clients through the `harness` fixture, in process, over
the `api` respx router. A metered block is entered with `enter(harness, block)` and left
with `leave(harness, block, exc)` so that one body drives both `with` and `async with`.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import pickle
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
import respx

from amaimedia import (
    AmaiClient,
    AmaiError,
    APIConnectionError,
    APIResponseValidationError,
    AsyncAmaiClient,
    AsyncMeteredBlock,
    AuthenticationError,
    ForbiddenError,
    InsufficientCreditsError,
    Meter,
    MeteredBlock,
    ServerError,
    SpendFailedError,
)
from tests.answers import KEY, api_router, bodies, error, queue, requests
from tests.conftest import Harness


class Ledger:
    """A stateful spend endpoint, queued on the `api` router: a `(tool, reference)` pair is
    charged once.

    `drop_after_commit` makes the next spend record the charge and then fail like a
    connection cut before the answer arrived.
    """

    def __init__(self, api: respx.Router, price: int = 40, balance: int = 10_000) -> None:
        self.price = price
        self.balance = balance
        self.results: dict[tuple[str, str], dict[str, Any]] = {}
        self.drop_after_commit = 0
        self.charges: list[str] = []
        self._lock = threading.Lock()
        queue(api["spend"], *[self.spend] * 10_000)

    def spend(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        key = (body["tool"], body["reference"])
        with self._lock:
            if key not in self.results:
                cost = round(self.price * body["units"])
                self.balance -= cost
                self.results[key] = {"ok": True, "charged": cost, "balance_after": self.balance}
                self.charges.append(body["reference"])
            if self.drop_after_commit:
                self.drop_after_commit -= 1
                raise httpx.RemoteProtocolError("Server disconnected without sending a response.")
            return httpx.Response(200, json=self.results[key])


def enter(harness: Harness, block: Any) -> Meter:
    if harness.is_async:
        return harness.run(block.__aenter__())  # type: ignore[no-any-return]
    return block.__enter__()  # type: ignore[no-any-return]


def leave(harness: Harness, block: Any, exc: BaseException | None = None) -> None:
    args = (None, None, None) if exc is None else (type(exc), exc, exc.__traceback__)
    if harness.is_async:
        harness.run(block.__aexit__(*args))
    else:
        block.__exit__(*args)


def run_block(
    harness: Harness, block: Any, work: Callable[[Meter], object] | None = None
) -> Meter:
    """Run `work(meter)` as the body of a metered block, the way `with` would."""
    meter = enter(harness, block)
    try:
        if work is not None:
            work(meter)
    except BaseException as exc:
        leave(harness, block, exc)
        raise
    leave(harness, block)
    return meter


# --- the happy path ---------------------------------------------------------------------


def test_a_block_checks_then_spends_once(harness: Harness, api: respx.Router) -> None:
    client = harness.client(api)
    seen: list[str] = []

    def work(meter: Meter) -> None:
        # Quoted and referenced before any work, and nothing spent yet.
        assert meter.quote.allowed
        assert meter.quote.cost_tokens == 5
        assert meter.state == "running"
        assert meter.charge is None
        assert [r.url.path for r in requests(api.calls)] == ["/api/v1/tools/check"]
        seen.append(meter.reference)

    meter = run_block(harness, client.metered("dub", units=3), work)

    assert [r.url.path for r in requests(api.calls)] == [
        "/api/v1/tools/check",
        "/api/v1/tools/spend",
    ]
    assert bodies(api["check"].calls) == [{"tool": "dub", "units": 3}]
    assert bodies(api["spend"].calls) == [{"tool": "dub", "units": 3, "reference": seen[0]}]
    assert meter.state == "charged"
    assert meter.charge is not None
    assert meter.charge.charged == 5
    assert meter.charge.reference == meter.reference == seen[0]
    assert meter.reference.startswith("req_")


def test_the_with_statement_gives_the_meter(api: respx.Router) -> None:
    with (
        AmaiClient(
            api_key=KEY, http_client=httpx.Client(transport=httpx.MockTransport(api.handler))
        ) as client,
        client.metered("chat") as meter,
    ):
        assert isinstance(meter, Meter)
    assert meter.charge is not None


def test_the_async_with_statement_gives_the_meter(api: respx.Router) -> None:
    async def main() -> Meter:
        http = httpx.AsyncClient(transport=httpx.MockTransport(api.async_handler))
        aclient = AsyncAmaiClient(api_key=KEY, http_client=http)
        async with aclient, aclient.metered("voice_clone", units=12) as meter:
            assert isinstance(meter, Meter)
        await http.aclose()
        return meter

    meter = asyncio.run(main())
    assert meter.charge is not None
    assert bodies(api["spend"].calls)[0]["units"] == 12


def test_a_reference_of_your_own(harness: Harness, api: respx.Router) -> None:
    client = harness.client(api)
    meter = run_block(harness, client.metered("dub", units=3, reference="job-42"))
    assert meter.reference == "job-42"
    assert bodies(api["spend"].calls)[0]["reference"] == "job-42"


def test_units_set_in_the_block_are_billed(harness: Harness, api: respx.Router) -> None:
    client = harness.client(api)

    def work(meter: Meter) -> None:
        meter.units = 2.5
        assert meter.units == 2.5

    run_block(harness, client.metered("dub", units=3), work)
    assert bodies(api["check"].calls)[0]["units"] == 3
    assert bodies(api["spend"].calls)[0]["units"] == 2.5


@pytest.mark.parametrize(
    ("units", "error", "message"),
    [
        (0, ValueError, "units must be a positive"),
        (float("nan"), ValueError, "units must be a positive"),
        ("2", TypeError, "units must be a positive"),
        (True, TypeError, "units must be a positive"),
    ],
)
def test_invalid_units_set_in_the_block_fail_the_block(
    harness: Harness, api: respx.Router, units: Any, error: type[Exception], message: str
) -> None:
    client = harness.client(api)

    def work(meter: Meter) -> None:
        meter.units = units

    with pytest.raises(error, match=message):
        run_block(harness, client.metered("dub", units=3), work)
    assert bodies(api["spend"].calls) == []


def test_cancel_skips_the_spend(harness: Harness, api: respx.Router) -> None:
    client = harness.client(api)

    def work(meter: Meter) -> None:
        meter.cancel()
        meter.cancel()  # idempotent
        assert meter.cancelled

    meter = run_block(harness, client.metered("dub"), work)
    assert meter.state == "cancelled"
    assert meter.charge is None
    assert bodies(api["spend"].calls) == []


def test_a_finished_meter_refuses_changes(harness: Harness, api: respx.Router) -> None:
    client = harness.client(api)
    meter = run_block(harness, client.metered("dub"))
    with pytest.raises(RuntimeError, match="only change inside the metered block; it is charged"):
        meter.units = 2
    with pytest.raises(RuntimeError, match="only a running metered block can be cancelled"):
        meter.cancel()
    assert meter.units == 1


def test_meter_repr_reads_well(harness: Harness, api: respx.Router) -> None:
    client = harness.client(api)
    meter = run_block(harness, client.metered("dub", units=3, reference="job-7"))
    assert repr(meter) == (
        "Meter(tool='dub', units=3, reference='job-7', state='charged', cost_tokens=5, charged=5)"
    )
    block = client.metered("chat", units=2)
    assert repr(block) == f"{type(block).__name__}(tool='chat', units=2)"
    assert isinstance(block, AsyncMeteredBlock if harness.is_async else MeteredBlock)


# --- entering: no work without funds -----------------------------------------------------


def test_allowed_false_raises_before_the_block_runs(harness: Harness, api: respx.Router) -> None:
    client = harness.client(api)
    quote = {"ok": True, "allowed": False, "cost_tokens": 120, "balance_after": 80}
    queue(api["check"], httpx.Response(200, json=quote))
    ran: list[bool] = []

    with pytest.raises(InsufficientCreditsError) as caught:
        run_block(harness, client.metered("dub", units=3), lambda meter: ran.append(True))

    assert ran == []
    assert bodies(api["spend"].calls) == []
    exc = caught.value
    assert exc.cost_tokens == 120
    assert exc.balance is None
    assert exc.status_code == 402
    assert exc.error == "insufficient_credits"
    assert "dub x3" in str(exc)
    assert "120 tokens" in str(exc)


def test_a_402_at_check_raises_before_the_block_runs(harness: Harness, api: respx.Router) -> None:
    client = harness.client(api)
    queue(api["check"], error(402, "insufficient_credits", cost_tokens=120, balance=80))
    ran: list[bool] = []

    with pytest.raises(InsufficientCreditsError) as caught:
        run_block(harness, client.metered("dub", units=3), lambda meter: ran.append(True))

    assert ran == []
    assert bodies(api["spend"].calls) == []
    assert (caught.value.cost_tokens, caught.value.balance) == (120, 80)


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        (lambda: error(401, "auth_required"), AuthenticationError),
        (lambda: error(403, "forbidden"), ForbiddenError),
        (lambda: httpx.ConnectError("refused"), APIConnectionError),
        (lambda: httpx.Response(200, json={"ok": True}), APIResponseValidationError),
    ],
)
def test_other_check_errors_propagate_and_the_block_never_runs(
    harness: Harness, api: respx.Router, reply: Callable[[], Any], expected: type[AmaiError]
) -> None:
    client = harness.client(api, max_retries=0)
    queue(api["check"], reply())
    ran: list[bool] = []

    with pytest.raises(expected):
        run_block(harness, client.metered("chat"), lambda meter: ran.append(True))

    assert ran == []
    assert bodies(api["spend"].calls) == []


# --- the block fails: nothing is charged -------------------------------------------------


class Boom(Exception):
    pass


@pytest.mark.parametrize(
    "raised",
    [Boom("work failed"), KeyboardInterrupt(), SystemExit(3), asyncio.CancelledError()],
    ids=["exception", "KeyboardInterrupt", "SystemExit", "CancelledError"],
)
def test_a_failing_block_spends_nothing_and_its_exception_propagates_unchanged(
    harness: Harness, api: respx.Router, raised: BaseException
) -> None:
    client = harness.client(api)
    block = client.metered("dub", units=3)
    meter = enter(harness, block)

    caught: list[BaseException] = []
    try:
        raise raised
    except BaseException as exc:
        # What `with` does with an exception: hand it to __exit__, then re-raise it.
        leave(harness, block, exc)
        caught.append(exc)

    assert caught == [raised]
    assert raised.__cause__ is None
    assert raised.__context__ is None
    assert bodies(api["spend"].calls) == []
    assert meter.state == "failed"
    assert meter.charge is None


def test_a_failing_block_spends_nothing_with_real_with_statements(api: respx.Router) -> None:
    http = httpx.Client(transport=httpx.MockTransport(api.handler))
    client = AmaiClient(api_key=KEY, http_client=http)
    with pytest.raises(Boom), client.metered("dub"):
        raise Boom

    async def main() -> None:
        ahttp = httpx.AsyncClient(transport=httpx.MockTransport(api.async_handler))
        aclient = AsyncAmaiClient(api_key=KEY, http_client=ahttp)
        with pytest.raises(Boom):
            async with aclient.metered("dub"):
                raise Boom
        await ahttp.aclose()

    asyncio.run(main())
    http.close()
    assert len(bodies(api["check"].calls)) == 2
    assert bodies(api["spend"].calls) == []


def test_a_cancelled_task_spends_nothing() -> None:
    api = api_router()
    started = asyncio.Event()

    async def main() -> None:
        http = httpx.AsyncClient(transport=httpx.MockTransport(api.async_handler))
        aclient = AsyncAmaiClient(api_key=KEY, http_client=http)

        async def job() -> None:
            async with aclient.metered("dub"):
                started.set()
                await asyncio.sleep(60)

        task = asyncio.create_task(job())
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await http.aclose()

    asyncio.run(main())
    assert len(bodies(api["check"].calls)) == 1
    assert bodies(api["spend"].calls) == []


# --- the spend fails: SpendFailedError, and a replay charges once -------------------------


def test_a_402_at_spend_raises_spend_failed_error(harness: Harness, api: respx.Router) -> None:
    client = harness.client(api)
    queue(api["spend"], error(402, "insufficient_credits", cost_tokens=120, balance=80))

    with pytest.raises(SpendFailedError) as caught:
        run_block(harness, client.metered("dub", units=3, reference="job-9"))

    exc = caught.value
    assert (exc.tool, exc.units, exc.reference) == ("dub", 3, "job-9")
    assert exc.journaled is False
    assert isinstance(exc.__cause__, InsufficientCreditsError)
    assert exc.__cause__.balance == 80
    assert isinstance(exc, AmaiError)
    message = str(exc)
    assert "metered('dub', units=3)" in message
    assert "402 insufficient_credits" in message
    assert "client.spend('dub', 3, reference='job-9')" in message
    assert "journal" not in message


@pytest.mark.parametrize(
    ("reply", "cause"),
    [
        (lambda: error(401, "auth_required"), AuthenticationError),
        (lambda: error(403, "forbidden"), ForbiddenError),
        (lambda: httpx.Response(200, content=b"<html>"), APIResponseValidationError),
        (
            lambda: httpx.Response(200, json={"ok": True, "charged": "many"}),
            APIResponseValidationError,
        ),
    ],
)
def test_spend_errors_become_spend_failed_error(
    harness: Harness, api: respx.Router, reply: Callable[[], Any], cause: type[AmaiError]
) -> None:
    client = harness.client(api)
    queue(api["spend"], reply())
    with pytest.raises(SpendFailedError) as caught:
        run_block(harness, client.metered("chat"))
    assert type(caught.value.__cause__) is cause
    assert caught.value.reference == caught.value.__cause__.reference
    assert len(bodies(api["spend"].calls)) == 1  # none of these is retried


def test_spend_retries_are_exhausted_then_replay_charges_once(
    harness: Harness, api: respx.Router
) -> None:
    client = harness.client(api, max_retries=2)
    queue(api["spend"], *[error(503, None)] * 3)  # before the ledger's answers
    ledger = Ledger(api)

    block = client.metered("dub", units=3)
    with pytest.raises(SpendFailedError) as caught:
        run_block(harness, block)

    exc = caught.value
    assert isinstance(exc.__cause__, ServerError)
    assert len(harness.sleeps) == 2  # the client's retry policy was used
    references = {body["reference"] for body in bodies(api["spend"].calls)}
    assert references == {exc.reference}
    assert ledger.charges == []

    charge = harness.run(client.spend(exc.tool, exc.units, reference=exc.reference))
    again = harness.run(client.spend(exc.tool, exc.units, reference=exc.reference))
    assert charge.charged == again.charged == 120
    assert ledger.charges == [exc.reference]


def test_a_spend_cut_after_commit_is_retried_and_charged_once(
    harness: Harness, api: respx.Router
) -> None:
    client = harness.client(api)
    ledger = Ledger(api)
    ledger.drop_after_commit = 1

    meter = run_block(harness, client.metered("dub", units=3))

    sent = bodies(api["spend"].calls)
    assert len(sent) == 2
    assert sent[0] == sent[1]
    assert ledger.charges == [meter.reference]
    assert meter.charge is not None
    assert meter.charge.charged == 120
    assert ledger.balance == 10_000 - 120


def test_an_interrupt_during_the_spend_propagates(harness: Harness, api: respx.Router) -> None:
    client = harness.client(api)
    interrupt = KeyboardInterrupt()
    queue(api["spend"], interrupt)
    block = client.metered("dub")
    with pytest.raises(KeyboardInterrupt) as caught:
        run_block(harness, block)
    assert caught.value is interrupt
    assert block._meter is not None
    assert block._meter.state == "spend_failed"


def test_spend_failed_error_pickles(harness: Harness, api: respx.Router) -> None:
    client = harness.client(api)
    queue(api["spend"], error(403, "forbidden"))
    with pytest.raises(SpendFailedError) as caught:
        run_block(harness, client.metered("sfx", units=1.5, reference="job-1"))
    copy = pickle.loads(pickle.dumps(caught.value))
    assert type(copy) is SpendFailedError
    assert (copy.tool, copy.units, copy.reference, copy.journaled) == ("sfx", 1.5, "job-1", False)
    assert str(copy) == str(caught.value)


# --- arguments are checked before any request ------------------------------------------


@pytest.mark.parametrize(
    ("arguments", "error", "message"),
    [
        ({"tool": ""}, ValueError, "tool must be a non-empty name"),
        ({"tool": None}, TypeError, "tool must be a str"),
        ({"tool": "dub", "units": 0}, ValueError, "units must be a positive"),
        ({"tool": "dub", "units": "3"}, TypeError, "units must be a positive"),
        ({"tool": "dub", "reference": ""}, ValueError, "reference must not be empty"),
        ({"tool": "dub", "reference": "x" * 256}, ValueError, "at most 255 characters"),
        ({"tool": "dub", "reference": 42}, TypeError, "a str, a callable that returns one"),
    ],
)
def test_bad_arguments_fail_when_metered_is_called(
    harness: Harness,
    api: respx.Router,
    arguments: dict[str, Any],
    error: type[Exception],
    message: str,
) -> None:
    client = harness.client(api)
    with pytest.raises(error, match=message):
        client.metered(**arguments)
    assert api.calls.call_count == 0


def test_a_reference_callable_is_only_for_the_decorator(
    harness: Harness, api: respx.Router
) -> None:
    client = harness.client(api)
    block = client.metered("dub", reference=lambda: "job-1")
    with pytest.raises(TypeError, match="in a with-block pass the reference itself"):
        enter(harness, block)
    assert api.calls.call_count == 0


def test_a_block_cannot_be_entered_twice_at_once(harness: Harness, api: respx.Router) -> None:
    client = harness.client(api)
    block = client.metered("dub")
    first = enter(harness, block)
    with pytest.raises(RuntimeError, match="already running"):
        enter(harness, block)
    leave(harness, block)
    # Once finished, the same block object may run again: a new meter, a new reference.
    second = run_block(harness, block)
    assert first.reference != second.reference
    assert len(bodies(api["spend"].calls)) == 2


def test_a_closed_client_refuses_to_meter(harness: Harness, api: respx.Router) -> None:
    client = harness.client(api)
    harness.run(client.aclose() if harness.is_async else client.close())
    with pytest.raises(AmaiError, match="is closed"):
        enter(harness, client.metered("dub"))
    assert api.calls.call_count == 0


# --- the decorator ----------------------------------------------------------------------


def test_the_sync_decorator_meters_each_call(api: respx.Router) -> None:
    client = AmaiClient(
        api_key=KEY, http_client=httpx.Client(transport=httpx.MockTransport(api.handler))
    )

    @client.metered("chat")
    def answer(prompt: str, *, loud: bool = False) -> str:
        """Answer a prompt."""
        return prompt.upper() if loud else prompt

    assert answer("hi") == "hi"
    assert answer("hi", loud=True) == "HI"
    assert answer.__name__ == "answer"
    assert answer.__doc__ == "Answer a prompt."
    assert str(inspect.signature(answer)) == "(prompt: 'str', *, loud: 'bool' = False) -> 'str'"
    references = [body["reference"] for body in bodies(api["spend"].calls)]
    assert len(references) == len(set(references)) == 2
    client.close()


def test_the_async_decorator_meters_each_call(api: respx.Router) -> None:
    async def main() -> None:
        http = httpx.AsyncClient(transport=httpx.MockTransport(api.async_handler))
        aclient = AsyncAmaiClient(api_key=KEY, http_client=http)

        @aclient.metered("voice_clone", units=12)
        async def clone(text: str) -> str:
            """Clone a voice."""
            await asyncio.sleep(0)
            return text[::-1]

        assert inspect.iscoroutinefunction(clone)
        assert await clone("abc") == "cba"
        assert await clone("xy") == "yx"
        assert clone.__name__ == "clone"
        assert clone.__doc__ == "Clone a voice."
        await http.aclose()

    asyncio.run(main())
    sent = bodies(api["spend"].calls)
    assert [body["units"] for body in sent] == [12, 12]
    assert sent[0]["reference"] != sent[1]["reference"]


def test_the_decorator_derives_references_from_the_arguments(
    harness: Harness, api: respx.Router
) -> None:
    client = harness.client(api)
    derived: list[tuple[Any, ...]] = []

    def reference(job_id: int, *, priority: int = 0) -> str:
        derived.append((job_id, priority))
        return f"job-{job_id}"

    if harness.is_async:

        @client.metered("dub", units=2, reference=reference)
        async def render(job_id: int, *, priority: int = 0) -> int:
            return job_id

    else:

        @client.metered("dub", units=2, reference=reference)
        def render(job_id: int, *, priority: int = 0) -> int:
            return job_id

    assert harness.run(render(7, priority=1)) == 7
    assert harness.run(render(8)) == 8
    assert derived == [(7, 1), (8, 0)]
    assert [body["reference"] for body in bodies(api["spend"].calls)] == ["job-7", "job-8"]


def test_a_failing_decorated_call_spends_nothing(harness: Harness, api: respx.Router) -> None:
    client = harness.client(api)

    if harness.is_async:

        @client.metered("dub")
        async def work() -> None:
            raise Boom

    else:

        @client.metered("dub")
        def work() -> None:
            raise Boom

    with pytest.raises(Boom):
        harness.run(work())
    assert len(bodies(api["check"].calls)) == 1
    assert bodies(api["spend"].calls) == []


def test_the_decorator_refuses_the_wrong_kind_of_function(
    harness: Harness, api: respx.Router
) -> None:
    client = harness.client(api)

    async def coroutine_function() -> None:
        pass

    def plain_function() -> None:
        pass

    wrong = plain_function if harness.is_async else coroutine_function
    with pytest.raises(TypeError, match=r"use (Async)?AmaiClient\.metered"):
        client.metered("chat")(wrong)
    with pytest.raises(TypeError, match="decorates a function, got int"):
        client.metered("chat")(42)
    assert api.calls.call_count == 0


def test_the_decorator_refuses_a_fixed_reference(harness: Harness, api: respx.Router) -> None:
    client = harness.client(api)

    async def coroutine_function() -> None:
        pass

    def plain_function() -> None:
        pass

    function = coroutine_function if harness.is_async else plain_function
    with pytest.raises(TypeError, match="every call after the first would be free"):
        client.metered("chat", reference="job-1")(function)


# --- many blocks at once ----------------------------------------------------------------


def test_200_concurrent_async_blocks_spend_200_times() -> None:
    api = api_router()
    ledger = Ledger(api, price=5)

    async def main() -> list[Meter]:
        http = httpx.AsyncClient(transport=httpx.MockTransport(api.async_handler))
        aclient = AsyncAmaiClient(api_key=KEY, http_client=http)

        async def job(i: int) -> Meter:
            async with aclient.metered("chat") as meter:
                await asyncio.sleep(0.001 * (i % 7))
            return meter

        meters = await asyncio.gather(*(job(i) for i in range(200)))
        await http.aclose()
        return meters

    meters = asyncio.run(main())
    references = {meter.reference for meter in meters}
    assert len(references) == 200
    assert sorted(ledger.charges) == sorted(references)
    assert len(bodies(api["spend"].calls)) == 200
    assert all(meter.state == "charged" for meter in meters)
    assert ledger.balance == 10_000 - 200 * 5


def test_threads_share_one_client_for_metered_blocks() -> None:
    api = api_router()
    ledger = Ledger(api, price=5)
    client = AmaiClient(
        api_key=KEY, http_client=httpx.Client(transport=httpx.MockTransport(api.handler))
    )

    def job(i: int) -> str:
        with client.metered("chat", reference=f"job-{i}") as meter:
            pass
        return meter.reference

    with ThreadPoolExecutor(max_workers=16) as pool:
        references = list(pool.map(job, range(100)))

    assert sorted(ledger.charges) == sorted(references)
    assert len(set(references)) == 100
    client.close()
