"""docs/errors.md: "Everything the SDK raises derives from `AmaiError`", through every door.

A property test drives every public method of both clients (`check`, `spend`, `metered` as
a block and as a decorator, `pending_spends`, `replay_pending`, `with_options`, `close` /
`aclose`) through the states a long-lived client meets: open, closed, a copy of a closed
client, the original of a closed copy, and (async) a second event loop after the first one
ended, which docs/configuration.md "Event loops" says works. Each call meets a hostile
answer: any status from 100 to 599, any body and content type, truncated JSON, a connection
cut before or after the server committed; in process (`FakeAmaiServer().client(key)`, or a
transport of the test's own for the statuses the fake does not send) and over loopback
(`fake.serve()`). Some calls are interrupted by their caller: a task cancelled, a
`KeyboardInterrupt` from the transport or from the block's body, the body's own exception.

Only these may come out: an `AmaiError` (whose `str` and `repr` work), a `ValueError` or
`TypeError` when the arguments were bad, and the caller's own interrupts and exceptions,
unchanged, exactly when the caller caused them; and a cancelled task ends in
`CancelledError`, as docs/async.md says.

Each door (a method, in a state, of one client: 72 of them) gets examples of its own,
`AMAI_PROPERTY_EXAMPLES` (6 by default, some ten seconds in all); they are derandomized, so
CI runs the same ones every time. tests/soak/test_properties.py explores answers and
arguments at length (slow); this one is about the doors, and runs on every leg. What it
found is pinned at the end.
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from amaimedia import (
    AmaiClient,
    AmaiError,
    AsyncAmaiClient,
    Charge,
    PendingSpend,
    Quote,
    ReplayReport,
    SpendFailedError,
)
from amaimedia.testing import FakeAmaiServer

# Read at import: the suite's autouse fixture clears AMAI_* variables before each test.
# Per door (a method, in a state, of one client): 72 doors.
EXAMPLES = int(os.environ.get("AMAI_PROPERTY_EXAMPLES", "6"))

PROPERTY = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    # The autouse fixture only clears environment variables, and the served fake is reset
    # by each example: both harmless to share. A slow example waited for a cut connection.
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

OPERATIONS = [
    "check",
    "spend",
    "metered",
    "decorator",
    "pending_spends",
    "replay_pending",
    "with_options",
    "close",
]
STATES = ["open", "closed", "copy of a closed client", "original of a closed copy"]
ASYNC_STATES = [*STATES, "second event loop"]


class Boom(Exception):
    """The caller's own failure, raised by the block's body."""


# --- what the caller passes ----------------------------------------------------------------

GOOD_TOOLS = st.sampled_from(["chat", "dub", "image", "karaoke"])  # karaoke: unknown, 400
BAD_TOOLS = st.sampled_from(["", " ", None, 3])
GOOD_UNITS = st.sampled_from([1, 2.5, 0.1, 10**6])
BAD_UNITS = st.sampled_from([0, -1, float("nan"), float("inf"), "2", None, True])
GOOD_OPTIONS = st.fixed_dictionaries(
    {},
    optional={
        "timeout": st.sampled_from([5, 0.5, None]),
        "max_retries": st.integers(0, 2),
        "max_retry_after": st.sampled_from([0.0, 1.0]),
    },
)
BAD_OPTIONS = st.sampled_from(
    [
        {"timeout": -1},
        {"timeout": "5"},
        {"max_retries": -1},
        {"max_retries": 1.5},
        {"max_retry_after": float("nan")},
        {"base_url": "ftp://api.amaimedia.com"},
        {"api_key": 5},
    ]
)


@dataclass(frozen=True)
class Call:
    """One public method, with its arguments, and what the caller does around it."""

    operation: str
    tool: Any
    units: Any
    options: dict[str, Any]
    bad_arguments: bool
    body: str  # what a metered block's body does: "work", "boom", "interrupt"


@st.composite
def calls(draw: st.DrawFn, operation: str) -> Call:
    bad = draw(st.integers(0, 9)) == 0  # one call in ten has a bad argument
    tool, units, options = draw(GOOD_TOOLS), draw(GOOD_UNITS), draw(GOOD_OPTIONS)
    if bad:
        which = draw(st.sampled_from(["tool", "units", "options"]))
        if which == "tool":
            tool = draw(BAD_TOOLS)
        elif which == "units":
            units = draw(BAD_UNITS)
        else:
            options = draw(BAD_OPTIONS)
    body = draw(st.sampled_from(["work", "work", "work", "boom", "interrupt"]))
    return Call(operation, tool, units, options, bad, body)


# --- what the server answers ---------------------------------------------------------------

_VALID = [
    {"ok": True, "allowed": True, "cost_tokens": 5, "balance_after": 95},
    {"ok": True, "charged": 5, "balance_after": 95},
    {"ok": False, "error": "insufficient_credits", "cost_tokens": 5, "balance": 1},
]
_SHAPED = st.dictionaries(
    st.sampled_from(["ok", "allowed", "cost_tokens", "balance_after", "charged", "error"]),
    st.none() | st.booleans() | st.integers(-(2**64), 2**64) | st.floats() | st.text(max_size=8),
    max_size=5,
)
BODIES = st.one_of(
    st.binary(max_size=64),
    st.text(max_size=64).map(str.encode),
    _SHAPED.map(lambda value: json.dumps(value).encode()),
    # Truncated JSON: a documented answer cut anywhere.
    st.tuples(st.sampled_from(_VALID), st.integers(0, 60)).map(
        lambda pair: json.dumps(pair[0]).encode()[: pair[1]]
    ),
    st.just(b"<html><body>502 Bad Gateway</body></html>"),
)
CONTENT_TYPES = st.sampled_from(
    [
        "application/json",
        "application/json; charset=utf-16",
        "text/html",
        "text/plain; charset=no-such-charset",
        "application/octet-stream",
    ]
)
RETRY_AFTER = st.none() | st.sampled_from(["0", "1", "-1", "nan", "soon", "1e308"])


@dataclass(frozen=True)
class Answer:
    """What the server does to the call's requests."""

    kind: str  # "as documented", "fault", "cut", "cut after commit", "any status"
    endpoint: str  # "check" or "spend"
    times: int
    status: int = 200
    body: bytes = b""
    content_type: str = "application/json"
    retry_after: str | None = None


# The endpoint each call reaches first, where its hostile answer goes (a metered block's
# check, or its spend).
ENDPOINTS = {
    "check": ["check"],
    "with_options": ["check"],
    "spend": ["spend"],
    "replay_pending": ["spend"],
    "metered": ["check", "spend"],
    "decorator": ["check", "spend"],
    "pending_spends": ["check"],
    "close": ["check"],
}


@st.composite
def answers(draw: st.DrawFn, *, operation: str, loopback: bool) -> Answer:
    # Hostile first: hypothesis draws the first choices most often.
    kinds = ["fault", "cut", "cut after commit", "as documented"]
    kind = draw(st.sampled_from(kinds if loopback else ["any status", *kinds]))
    endpoint = draw(st.sampled_from(ENDPOINTS[operation]))
    times = draw(st.integers(1, 3))
    if kind in ("as documented", "cut", "cut after commit"):
        return Answer(kind, endpoint, times)
    low = 100 if kind == "any status" else 200
    return Answer(
        kind,
        endpoint,
        times,
        status=draw(st.integers(low, 599)),
        body=draw(BODIES),
        content_type=draw(CONTENT_TYPES),
        # The fake writes Retry-After itself; a transport of the test's own sends it as is.
        retry_after=draw(RETRY_AFTER),
    )


def queue(fake: FakeAmaiServer, answer: Answer) -> None:
    """Queues the answer's faults on the fake (an "any status" answer is the transport's)."""
    fake.reset_faults()
    if answer.kind == "cut":
        fake.fail_next(answer.endpoint, drop=True, times=answer.times)
    elif answer.kind == "cut after commit":
        fake.fail_next(answer.endpoint, drop_after_commit=True, times=answer.times)
    elif answer.kind == "fault":
        fake.fail_next(
            answer.endpoint,
            status=answer.status,
            body=answer.body,
            content_type=answer.content_type,
            retry_after=answer.retry_after,
            times=answer.times,
        )


@dataclass
class Interrupts:
    """The caller's own interrupts: which were planned, and which happened."""

    keyboard_on_request: int | None = None  # the transport raises on this request (1-based)
    armed: bool = False  # set once the setting up is done, with the call under test
    requests: int = 0
    raised_keyboard: bool = False
    raised_boom: bool = False
    cancelled: bool = False

    def arm(self) -> None:
        self.armed, self.requests = True, 0

    def on_request(self) -> None:
        self.requests += 1
        if self.armed and self.requests == self.keyboard_on_request:
            self.raised_keyboard = True
            raise KeyboardInterrupt


def hostile(
    answer: Answer, caller: Interrupts, request: httpx.Request, served: list[int]
) -> httpx.Response | None:
    """The "any status" answer to this request, or `None` to let the fake answer it."""
    if answer.kind != "any status" or not request.url.path.endswith(answer.endpoint):
        return None
    if not caller.armed:
        return None
    if len(served) >= answer.times:
        return None
    served.append(answer.status)
    headers = {"content-type": answer.content_type}
    if answer.retry_after is not None:
        headers["retry-after"] = answer.retry_after
    return httpx.Response(answer.status, headers=headers, content=answer.body)


def sync_transport(
    fake: FakeAmaiServer, answer: Answer, caller: Interrupts
) -> httpx.BaseTransport:
    inner, served = fake.transport(), []

    def handle(request: httpx.Request) -> httpx.Response:
        caller.on_request()
        return hostile(answer, caller, request, served) or inner.handle_request(request)

    return httpx.MockTransport(handle)


def async_transport(
    fake: FakeAmaiServer, answer: Answer, caller: Interrupts
) -> httpx.AsyncBaseTransport:
    inner, served = fake.async_transport(), []

    async def handle(request: httpx.Request) -> httpx.Response:
        caller.on_request()
        answered = hostile(answer, caller, request, served)
        return answered or await inner.handle_async_request(request)

    return httpx.MockTransport(handle)


# --- the accepted outcomes -----------------------------------------------------------------


def check_outcome(scenario: Scenario, caller: Interrupts, outcome: BaseException | None) -> None:
    """Fails unless `outcome` is one the docs allow for this call."""
    if caller.cancelled:
        # docs/async.md: "CancelledError propagates unchanged".
        assert isinstance(outcome, asyncio.CancelledError), f"cancelled, and got {outcome!r}"
        return
    if outcome is None:
        return
    if isinstance(outcome, AmaiError):
        assert str(outcome)
        assert repr(outcome)
        # An interrupt is the caller's: never turned into an error of the SDK's.
        assert not caller.raised_keyboard, f"KeyboardInterrupt became {outcome!r}"
        assert not caller.raised_boom, f"the body's own exception became {outcome!r}"
        return
    if isinstance(outcome, KeyboardInterrupt):
        assert caller.raised_keyboard, "a KeyboardInterrupt no one raised"
        return
    if isinstance(outcome, asyncio.CancelledError):
        raise AssertionError("a CancelledError from a task no one cancelled")
    if isinstance(outcome, Boom):
        assert caller.raised_boom
        return
    if isinstance(outcome, (ValueError, TypeError)):
        assert scenario.call.bad_arguments, f"{type(outcome).__name__} for good arguments"
        return
    raise AssertionError(f"{type(outcome).__name__} is not an AmaiError: {outcome!r}")


def check_result(call: Call, result: object) -> None:
    expected: dict[str, type | tuple[type, ...]] = {
        "check": Quote,
        "spend": Charge,
        "metered": (Charge, type(None)),
        "decorator": str,
        "pending_spends": list,
        "replay_pending": ReplayReport,
        "with_options": Quote,
        "close": type(None),
    }
    assert isinstance(result, expected[call.operation]), (call.operation, result)
    if call.operation == "pending_spends":
        assert all(isinstance(entry, PendingSpend) for entry in result)  # type: ignore[attr-defined]


# --- the calls, sync -----------------------------------------------------------------------


def body(call: Call, caller: Interrupts) -> None:
    if call.body == "boom":
        caller.raised_boom = True
        raise Boom("the caller's own failure")
    if call.body == "interrupt":
        caller.raised_keyboard = True
        raise KeyboardInterrupt


def run_sync(client: AmaiClient, call: Call, caller: Interrupts) -> object:
    if call.operation == "check":
        return client.check(call.tool, call.units)
    if call.operation == "spend":
        return client.spend(call.tool, call.units, reference="job-1")
    if call.operation == "metered":
        with client.metered(call.tool, call.units, reference="job-1") as meter:
            body(call, caller)
        return meter.charge
    if call.operation == "decorator":

        @client.metered(call.tool, call.units)
        def job() -> str:
            body(call, caller)
            return "done"

        return job()
    if call.operation == "pending_spends":
        return client.pending_spends()
    if call.operation == "replay_pending":
        return client.replay_pending()
    if call.operation == "with_options":
        with client.with_options(**call.options) as copy:
            copy._sleep = no_sleep  # type: ignore[method-assign]
            return copy.check(call.tool, call.units)
    client.close()
    return client.close()  # twice: closing is idempotent


def no_sleep(seconds: float) -> None:
    pass


def sync_state(client: AmaiClient, state: str) -> AmaiClient:
    """The client in `state`; the caller closes `client`."""
    if state == "closed":
        client.close()
    elif state == "copy of a closed client":
        client.close()
        copy = client.with_options(timeout=5)
        copy._sleep = no_sleep  # type: ignore[method-assign]
        return copy
    elif state == "original of a closed copy":
        client.with_options(timeout=5).close()
    return client


def owe_a_spend(client: AmaiClient, fake: FakeAmaiServer) -> None:
    """Leaves one spend pending in the client's journal, for the replay to send."""
    fake.reset_faults()
    fake.fail_next("spend", status=503, times=5)
    try:
        with client.with_options(max_retries=0).metered("chat", reference="owed-1"):
            pass
    except AmaiError:
        pass
    fake.reset_faults()


# --- the calls, async ----------------------------------------------------------------------


async def run_async(client: AsyncAmaiClient, call: Call, caller: Interrupts) -> object:
    if call.operation == "check":
        return await client.check(call.tool, call.units)
    if call.operation == "spend":
        return await client.spend(call.tool, call.units, reference="job-1")
    if call.operation == "metered":
        async with client.metered(call.tool, call.units, reference="job-1") as meter:
            body(call, caller)
        return meter.charge
    if call.operation == "decorator":

        @client.metered(call.tool, call.units)
        async def job() -> str:
            body(call, caller)
            return "done"

        return await job()
    if call.operation == "pending_spends":
        return await client.pending_spends()
    if call.operation == "replay_pending":
        return await client.replay_pending()
    if call.operation == "with_options":
        async with client.with_options(**call.options) as copy:
            copy._sleep = no_async_sleep  # type: ignore[method-assign]
            return await copy.check(call.tool, call.units)
    await client.aclose()
    return await client.aclose()


async def no_async_sleep(seconds: float) -> None:
    pass


async def async_state(client: AsyncAmaiClient, state: str) -> AsyncAmaiClient:
    if state == "closed":
        await client.aclose()
    elif state == "copy of a closed client":
        await client.aclose()
        copy = client.with_options(timeout=5)
        copy._sleep = no_async_sleep  # type: ignore[method-assign]
        return copy
    elif state == "original of a closed copy":
        await client.with_options(timeout=5).aclose()
    return client


async def aowe_a_spend(client: AsyncAmaiClient, fake: FakeAmaiServer) -> None:
    fake.reset_faults()
    fake.fail_next("spend", status=503, times=5)
    try:
        async with client.with_options(max_retries=0).metered("chat", reference="owed-1"):
            pass
    except AmaiError:
        pass
    fake.reset_faults()


async def interrupted(
    scenario: Scenario,
    client: AsyncAmaiClient,
    make: Callable[[], Awaitable[object]],
    caller: Interrupts,
) -> object:
    """Runs `make()` as a task that is cancelled, or whose client is closed, after some turns
    of the loop, as the scenario says."""
    task = asyncio.ensure_future(make())
    steps = scenario.cancel_after if scenario.cancel_after is not None else scenario.close_after
    if steps is None:
        return await task
    for _ in range(steps):
        if task.done():
            break
        await asyncio.sleep(0)
    if scenario.cancel_after is not None:
        caller.cancelled = task.cancel()
    else:
        # A worker shutting down: the client is closed while the call may be in flight.
        await client.aclose()
    return await task


# --- the property --------------------------------------------------------------------------


@dataclass
class Scenario:
    """Everything one example draws, in the order it is used (hypothesis prints it)."""

    call: Call
    answer: Answer
    state: str
    loopback: bool
    journal: bool
    max_retries: int
    keyboard_on_request: int | None
    close_while_waiting: bool
    cancel_after: int | None = None
    close_after: int | None = None


@st.composite
def scenarios(draw: st.DrawFn, *, is_async: bool, operation: str, state: str) -> Scenario:
    loopback = draw(st.integers(0, 9)) == 0  # one example in ten over a socket
    call = draw(calls(operation))
    return Scenario(
        call=call,
        answer=draw(answers(operation=call.operation, loopback=loopback)),
        state=state,
        loopback=loopback,
        journal=draw(st.booleans()),
        max_retries=draw(st.integers(0, 2)),
        # A Ctrl-C from the transport only in process: a served fake runs in its own thread.
        keyboard_on_request=None if loopback else draw(st.none() | st.integers(1, 3)),
        # A worker shutting down: its client is closed while a call waits to retry.
        close_while_waiting=draw(st.integers(0, 4)) == 0,
        **(draw(interruptions()) if is_async else {}),
    )


@st.composite
def interruptions(draw: st.DrawFn) -> dict[str, int | None]:
    """An async call's task is cancelled, or its client closed, after some turns of the loop.

    Over a socket too: an `aclose()` while a request was on its way once left that request's
    connection open for the garbage collector to find (a `ResourceWarning`, which the suite
    makes an error).
    """
    which = draw(st.sampled_from(["none", "none", "cancel", "close"]))
    steps = draw(st.integers(0, 30))
    return {
        "cancel_after": steps if which == "cancel" else None,
        "close_after": steps if which == "close" else None,
    }


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[FakeAmaiServer, str]]:
    fake = FakeAmaiServer()
    with fake.serve() as base_url:
        yield fake, base_url


def options(scenario: Scenario, directory: Path) -> dict[str, Any]:
    journal = str(directory / "spends.sqlite3") if scenario.journal else None
    return {"max_retries": scenario.max_retries, "max_retry_after": 1.0, "spend_journal": journal}


def play_sync(scenario: Scenario, served: tuple[FakeAmaiServer, str]) -> None:
    fake = served[0] if scenario.loopback else FakeAmaiServer()
    key = fake.create_key(balance=1_000)
    caller = Interrupts(keyboard_on_request=scenario.keyboard_on_request)
    with tempfile.TemporaryDirectory() as directory:
        settings = options(scenario, Path(directory))
        if scenario.loopback:
            client = AmaiClient(api_key=key, base_url=served[1], **settings)
        else:
            http = httpx.Client(transport=sync_transport(fake, scenario.answer, caller))
            client = AmaiClient(api_key=key, http_client=http, **settings)
        client._sleep = no_sleep  # type: ignore[method-assign]
        try:
            if scenario.journal:
                owe_a_spend(client, fake)
            target = sync_state(client, scenario.state)
            if scenario.close_while_waiting:
                target._sleep = lambda seconds: target.close()  # type: ignore[method-assign]
            queue(fake, scenario.answer)
            caller.arm()
            outcome: BaseException | None = None
            try:
                result = run_sync(target, scenario.call, caller)
            except BaseException as exc:
                outcome = exc
            else:
                check_result(scenario.call, result)
            check_outcome(scenario, caller, outcome)
        finally:
            fake.reset_faults()
            client.close()


def play_async(scenario: Scenario, served: tuple[FakeAmaiServer, str]) -> None:
    fake = served[0] if scenario.loopback else FakeAmaiServer()
    key = fake.create_key(balance=1_000)
    caller = Interrupts(keyboard_on_request=scenario.keyboard_on_request)
    with tempfile.TemporaryDirectory() as directory:
        settings = options(scenario, Path(directory))
        if scenario.loopback:
            client = AsyncAmaiClient(api_key=key, base_url=served[1], **settings)
        else:
            http = httpx.AsyncClient(transport=async_transport(fake, scenario.answer, caller))
            client = AsyncAmaiClient(api_key=key, http_client=http, **settings)
        client._sleep = no_async_sleep  # type: ignore[method-assign]

        async def prepare() -> AsyncAmaiClient:
            if scenario.journal:
                await aowe_a_spend(client, fake)
            if scenario.state == "second event loop":
                # The first loop uses the client, then ends (asyncio.run closes it).
                await client.check("chat")
                return client
            return await async_state(client, scenario.state)

        async def play(target: AsyncAmaiClient) -> object:
            if scenario.close_while_waiting:

                async def closing(seconds: float) -> None:
                    await target.aclose()

                target._sleep = closing  # type: ignore[method-assign]
            queue(fake, scenario.answer)
            caller.arm()
            return await interrupted(
                scenario, target, lambda: run_async(target, scenario.call, caller), caller
            )

        outcome: BaseException | None = None
        try:
            target = asyncio.run(prepare())
            try:
                result = asyncio.run(play(target))
            except BaseException as exc:
                outcome = exc
            else:
                check_result(scenario.call, result)
            check_outcome(scenario, caller, outcome)
        finally:
            fake.reset_faults()
            asyncio.run(client.aclose())


# Every door is tried, each with examples of its own: drawn at random, some would get none.
@pytest.mark.parametrize("state", STATES)
@pytest.mark.parametrize("operation", OPERATIONS)
@PROPERTY
@given(data=st.data())
def test_the_sync_client_raises_only_amai_errors(
    operation: str, state: str, data: st.DataObject, served: tuple[FakeAmaiServer, str]
) -> None:
    scenario = data.draw(scenarios(is_async=False, operation=operation, state=state))
    play_sync(scenario, served)


@pytest.mark.parametrize("state", ASYNC_STATES)
@pytest.mark.parametrize("operation", OPERATIONS)
@PROPERTY
@given(data=st.data())
def test_the_async_client_raises_only_amai_errors(
    operation: str, state: str, data: st.DataObject, served: tuple[FakeAmaiServer, str]
) -> None:
    scenario = data.draw(scenarios(is_async=True, operation=operation, state=state))
    play_async(scenario, served)


# --- what the property found, pinned -------------------------------------------------------


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("operation", ["check", "spend", "metered"])
def test_a_client_closed_while_a_call_waits_to_retry_raises_an_amai_error(
    mode: str, operation: str, served: tuple[FakeAmaiServer, str]
) -> None:
    """Found by the property (before ef15a3b): a worker that closed its client while a call
    waited to retry a 503 got a bare `RuntimeError: Cannot send a request, as the client has
    been closed.`, with no `.reference` on a spend and no `SpendFailedError` from a metered
    block."""
    fake, base_url = served
    key = fake.create_key()
    endpoint = "check" if operation == "check" else "spend"
    fake.reset_faults()
    fake.fail_next(endpoint, status=503)
    try:
        if mode == "sync":
            error = closed_while_waiting_sync(key, base_url, operation)
        else:
            error = asyncio.run(closed_while_waiting_async(key, base_url, operation))
    finally:
        fake.reset_faults()
    if operation == "spend":
        assert error.reference == "job-1"
    if operation == "metered":
        assert isinstance(error, SpendFailedError)
        assert error.reference == "job-1"


def closed_while_waiting_sync(key: str, base_url: str, operation: str) -> AmaiError:
    client = AmaiClient(api_key=key, base_url=base_url, max_retries=1)
    client._sleep = lambda seconds: client.close()  # type: ignore[method-assign]

    def call() -> None:
        if operation == "check":
            client.check("chat")
        elif operation == "spend":
            client.spend("chat", reference="job-1")
        else:
            with client.metered("chat", reference="job-1"):
                pass

    with pytest.raises(AmaiError) as info:
        call()
    return info.value


async def closed_while_waiting_async(key: str, base_url: str, operation: str) -> AmaiError:
    client = AsyncAmaiClient(api_key=key, base_url=base_url, max_retries=1)

    async def closing(seconds: float) -> None:
        await client.aclose()

    client._sleep = closing  # type: ignore[method-assign]

    async def call() -> None:
        if operation == "check":
            await client.check("chat")
        elif operation == "spend":
            await client.spend("chat", reference="job-1")
        else:
            async with client.metered("chat", reference="job-1"):
                pass

    with pytest.raises(AmaiError) as info:
        await call()
    return info.value
