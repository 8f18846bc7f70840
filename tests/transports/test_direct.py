"""The direct path: `AsyncAmaiClient(transport="aiohttp")` past httpx's client layer.

Over real loopback sockets (`FakeAmaiServer().serve()`), with the real aiohttp transport.
A 2xx is parsed straight from aiohttp's bytes (a `DirectAnswer`); every other answer, and
a 2xx that does not parse, raises what the httpx path raises, with a real `httpx.Response`
and `httpx.Request`. A pool of the caller's keeps httpx's client layer. No timing is
asserted: the benchmark measures the speed.
"""

from __future__ import annotations

import asyncio
import gzip
import json
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar

import httpx
import pytest

from amaimedia import (
    AiohttpTransport,
    APIResponseValidationError,
    APITimeoutError,
    AsyncAmaiClient,
    AuthenticationError,
    Charge,
    Hooks,
    InsufficientCreditsError,
    Quote,
    ResponseEvent,
)
from amaimedia._transports._direct import DirectAnswer, DirectPath
from amaimedia.testing import FakeAmaiServer
from tests.answers import KEY, QUOTE

_T = TypeVar("_T")
TIMEOUT = 0.3


@pytest.fixture
def fake() -> FakeAmaiServer:
    return FakeAmaiServer()


@pytest.fixture
def served(fake: FakeAmaiServer) -> Iterator[str]:
    with fake.serve() as base_url:
        yield base_url


def run(main: Callable[[], Coroutine[Any, Any, _T]]) -> _T:
    return asyncio.run(main())


def direct_client(base_url: str, key: str = KEY, **options: Any) -> AsyncAmaiClient:
    options.setdefault("timeout", TIMEOUT)
    options.setdefault("max_retries", 0)
    return AsyncAmaiClient(api_key=key, base_url=base_url, transport="aiohttp", **options)


def spy_on_answers(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Record what each attempt of the direct path returns."""
    answers: list[object] = []
    attempt = DirectPath.attempt

    async def recorded(self: DirectPath, *args: Any) -> Any:
        answer = await attempt(self, *args)
        answers.append(answer)
        return answer

    monkeypatch.setattr(DirectPath, "attempt", recorded)
    return answers


def test_only_the_client_s_own_aiohttp_pool_goes_direct() -> None:
    async def main() -> None:
        own = AsyncAmaiClient(api_key=KEY, transport="aiohttp")
        assert isinstance(own._direct, DirectPath)
        assert own.with_options(max_retries=0)._direct is own._direct  # the shared pool
        default = AsyncAmaiClient(api_key=KEY)
        assert default._direct is None
        http = httpx.AsyncClient(transport=AiohttpTransport())
        caller_s = AsyncAmaiClient(api_key=KEY, http_client=http)
        assert caller_s._direct is None
        await own.aclose()
        await default.aclose()
        await http.aclose()

    run(main)


def test_a_2xx_parses_straight_into_the_model_with_its_request_id(
    fake: FakeAmaiServer, served: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = fake.create_key(balance=100)
    answers = spy_on_answers(monkeypatch)

    async def main() -> tuple[Quote, Charge]:
        async with direct_client(served, key) as client:
            return await client.check("dub", 2), await client.spend("dub", 2, reference="j-1")

    quote, charge = run(main)
    assert [type(answer) for answer in answers] == [DirectAnswer, DirectAnswer]
    assert quote == Quote(ok=True, allowed=True, cost_tokens=80, balance_after=20)
    assert (charge.charged, charge.balance_after, charge.reference) == (80, 20, "j-1")
    check_id, spend_id = (answer.request_id for answer in fake.requests)
    assert (quote.request_id, charge.request_id) == (check_id, spend_id)
    assert check_id is not None


def test_the_bytes_on_the_wire_are_those_httpx_would_send(
    fake: FakeAmaiServer, served: str
) -> None:
    key = fake.create_key()

    async def main() -> None:
        async with direct_client(served, key) as client:
            await client.check("chat", units=2)
        async with AsyncAmaiClient(api_key=key, base_url=served) as client:
            await client.check("chat", units=2)

    run(main)
    direct, through_httpx = fake.requests
    assert direct.content == through_httpx.content == b'{"tool":"chat","units":2}'
    assert list(direct.headers) == list(through_httpx.headers)


def test_an_error_answer_raises_as_ever_with_a_real_response(
    fake: FakeAmaiServer, served: str
) -> None:
    key = fake.create_key(balance=10)

    async def main() -> InsufficientCreditsError:
        async with direct_client(served, key) as client:
            with pytest.raises(InsufficientCreditsError) as info:
                await client.spend("dub", units=1, reference="job-9")
            return info.value

    error = run(main)
    assert (error.status_code, error.cost_tokens, error.balance) == (402, 40, 10)
    assert error.reference == "job-9"
    assert isinstance(error.response, httpx.Response)
    assert isinstance(error.response.request, httpx.Request)
    assert error.response.request.url.path == "/api/v1/tools/spend"
    assert json.loads(error.response.request.content)["reference"] == "job-9"
    assert error.response.is_closed
    assert error.body == error.response.json()
    assert error.request_id == fake.requests[-1].request_id
    assert str(error).startswith("402 insufficient_credits")


def test_an_echoed_key_is_blanked_on_the_direct_path(fake: FakeAmaiServer, served: str) -> None:
    body = {"ok": False, "error": "auth_required", "message": f"bad key {KEY}"}
    fake.fail_next("check", status=401, body=body)

    async def main() -> AuthenticationError:
        async with direct_client(served) as client:
            with pytest.raises(AuthenticationError) as info:
                await client.check("chat")
            return info.value

    error = run(main)
    assert KEY not in str(error)
    assert "[API key]" in str(error)
    assert KEY not in json.dumps(error.body)


def test_a_2xx_that_echoes_the_key_holds_the_stand_in(fake: FakeAmaiServer, served: str) -> None:
    key = fake.create_key()
    body = {**QUOTE, "note": f"for {key}"}
    fake.fail_next("check", status=200, body=body, headers={"cf-ray": f"req-{key}"})
    fake.fail_next("check", status=200, body=body, headers={"cf-ray": f"req-{key}"})

    async def main() -> tuple[Quote, Any]:
        async with direct_client(served, key) as client:
            return await client.check("chat"), await client.with_raw_response.check("chat")

    quote, raw = run(main)
    assert quote.model_extra == {"note": "for [API key]"}
    assert quote.request_id == raw.request_id == "req-[API key]"
    assert key not in repr(quote) + repr(raw.parse())


def test_a_2xx_that_does_not_parse_raises_with_a_real_response(
    fake: FakeAmaiServer, served: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake.fail_next("check", status=200, body={"ok": True, "allowed": "maybe"})
    answers = spy_on_answers(monkeypatch)

    async def main() -> APIResponseValidationError:
        async with direct_client(served) as client:
            with pytest.raises(APIResponseValidationError) as info:
                await client.check("chat")
            return info.value

    error = run(main)
    assert [type(answer) for answer in answers] == [DirectAnswer]
    assert isinstance(error.response, httpx.Response)
    assert error.response.request.url.path == "/api/v1/tools/check"
    assert error.response.json() == {"ok": True, "allowed": "maybe"}
    assert "is not a valid Quote" in str(error)


def test_an_encoded_2xx_goes_the_httpx_way_within_bounds(
    fake: FakeAmaiServer, served: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    body = gzip.compress(json.dumps(QUOTE).encode())
    fake.fail_next("check", status=200, body=body, headers={"content-encoding": "gzip"})
    twice = gzip.compress(body)
    fake.fail_next("check", status=200, body=twice, headers={"content-encoding": "gzip, gzip"})
    answers = spy_on_answers(monkeypatch)

    async def main() -> tuple[Quote, APIResponseValidationError]:
        async with direct_client(served) as client:
            quote = await client.check("chat")
            with pytest.raises(APIResponseValidationError) as info:
                await client.check("chat")
            return quote, info.value

    quote, refused = run(main)
    assert isinstance(answers[0], httpx.Response)
    assert quote.cost_tokens == QUOTE["cost_tokens"]
    assert "encoded twice over" in str(refused)
    assert refused.body is None


def test_an_answer_over_the_size_cap_is_refused_unread(fake: FakeAmaiServer, served: str) -> None:
    fake.fail_next("check", status=200, body=b"{" + b" " * (2 << 20) + b"}")

    async def main() -> APIResponseValidationError:
        async with direct_client(served) as client:
            with pytest.raises(APIResponseValidationError) as info:
                await client.check("chat")
            return info.value

    error = run(main)
    assert "too large" in str(error)
    assert error.body is None


def test_a_slow_answer_is_a_read_timeout(fake: FakeAmaiServer, served: str) -> None:
    key = fake.create_key()
    fake.fail_next("check", delay=2 * TIMEOUT)

    async def main() -> APITimeoutError:
        async with direct_client(served, key) as client:
            with pytest.raises(APITimeoutError) as info:
                await client.check("chat")
            assert (await client.check("chat")).ok  # the late answer's connection is gone
            return info.value

    error = run(main)
    assert isinstance(error.__cause__, httpx.ReadTimeout)
    assert error.__cause__.request.url.path == "/api/v1/tools/check"


def test_total_timeout_cuts_the_direct_attempt(fake: FakeAmaiServer, served: str) -> None:
    fake.fail_next("check", delay=1.0)

    async def main() -> APITimeoutError:
        async with direct_client(served, timeout=5.0, total_timeout=0.2) as client:
            with pytest.raises(APITimeoutError) as info:
                await client.check("chat")
            return info.value

    assert isinstance(run(main).__cause__, httpx.ReadTimeout)


def test_hooks_see_the_direct_answers(fake: FakeAmaiServer, served: str) -> None:
    seen: list[ResponseEvent] = []
    fake.fail_next("check", status=503, body={"ok": False, "error": "unavailable"})

    async def main() -> None:
        key = fake.create_key()
        client = direct_client(served, key, max_retries=1, hooks=Hooks(on_response=seen.append))

        async def no_wait(seconds: float) -> None:
            pass

        client._sleep = no_wait
        async with client:
            await client.check("chat")

    run(main)
    assert [(event.attempt, event.status_code) for event in seen] == [(1, 503), (2, 200)]
    assert [event.request_id for event in seen] == [r.request_id for r in fake.requests]
    assert seen[0].error is not None
    assert seen[1].error is None


def test_with_raw_response_gets_an_httpx_response(fake: FakeAmaiServer, served: str) -> None:
    key = fake.create_key()

    async def main() -> None:
        async with direct_client(served, key) as client:
            raw = await client.with_raw_response.check("chat")
            assert raw.status_code == 200
            assert raw.request_id == fake.requests[-1].request_id
            response = raw.http_response
            assert isinstance(response, httpx.Response)
            assert response.json()["ok"] is True
            assert response.request.url.path == "/api/v1/tools/check"
            assert response.http_version == "HTTP/1.1"
            assert response.elapsed.total_seconds() >= 0
            assert raw.parse().request_id == raw.request_id

    run(main)


def test_a_pool_of_the_caller_s_keeps_httpx_s_client_layer(
    fake: FakeAmaiServer, served: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = fake.create_key()
    answers = spy_on_answers(monkeypatch)
    sent: list[httpx.Request] = []

    async def record(request: httpx.Request) -> None:
        sent.append(request)

    async def main() -> Quote:
        http = httpx.AsyncClient(
            transport=AiohttpTransport(), event_hooks={"request": [record]}, timeout=5
        )
        async with http, AsyncAmaiClient(api_key=key, base_url=served, http_client=http) as c:
            return await c.check("chat")

    assert run(main).ok
    assert answers == []
    assert [request.url.path for request in sent] == ["/api/v1/tools/check"]


def test_a_closed_client_sends_nothing(served: str) -> None:
    async def main() -> None:
        client = direct_client(served)
        await client.aclose()
        with pytest.raises(Exception, match="closed"):
            await client.check("chat")

    run(main)


@pytest.mark.parametrize(
    "headers",
    [
        [],
        [("X-Request-Id", "r-1")],
        [("x-request-id", "r-1"), ("X-Request-ID", "r-2")],  # joined, as httpx reads it
        [("x-request-id", "r-1"), ("CF-Ray", "8a1b-LHR")],  # cf-ray first
        [("cf-ray", ""), ("x-request-id", "r-1")],  # an empty one does not count
    ],
)
def test_the_request_id_read_from_aiohttp_s_headers_is_the_one_httpx_reads(
    headers: list[tuple[str, str]],
) -> None:
    from multidict import CIMultiDict, CIMultiDictProxy

    from amaimedia._response import request_id_in

    raw = tuple((name.encode(), value.encode()) for name, value in headers)
    parsed = CIMultiDictProxy(CIMultiDict(headers))

    class Answer:
        status, reason, version = 200, "OK", None
        raw_headers = raw
        headers = parsed

    class Body:
        answer = Answer()

    class Outgoing:
        url = httpx.URL("http://127.0.0.1/api/v1/tools/check")

    answer = DirectAnswer(Outgoing(), Body(), b"{}", 0.0)  # type: ignore[arg-type]
    assert answer.request_id == request_id_in(httpx.Headers(list(raw)))
