"""`AsyncAmaiClient(transport="aiohttp")` and `AiohttpTransport`, over real loopback sockets.

The SDK must behave the same on either transport: the same answers, the same errors, the
same retries. The tests drive an `AsyncAmaiClient` (or a bare `httpx.AsyncClient` on the
transport) against `FakeAmaiServer().serve()`: odd answers are queued faults, and the bytes
on the wire are read back from `fake.requests`. What no HTTP server sends (a refused
connection, a full backlog, an answer that is not HTTP) is played on raw sockets.
Waits between retries are recorded, not slept. Every client is closed: pytest turns an
unclosed aiohttp session's warning into an error.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import socket
import sys
import threading
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from typing import Any, TypeVar

import aiohttp
import httpx
import multidict
import pytest
import yarl

import amaimedia
from amaimedia import (
    AiohttpTransport,
    AmaiError,
    APIConnectionError,
    APIError,
    APITimeoutError,
    AsyncAmaiClient,
    AuthenticationError,
    InsufficientCreditsError,
    Quote,
    RateLimitError,
    ServerError,
)
from amaimedia._transports import AsyncTransportName
from amaimedia._transports._aiohttp import httpx_error
from amaimedia.testing import FakeAmaiServer
from tests.answers import KEY, QUOTE
from tests.pools import aiohttp_sessions, slots

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


def aiohttp_client(
    base_url: str, key: str = KEY, **options: Any
) -> tuple[AsyncAmaiClient, list[float]]:
    """A client on the aiohttp transport, and the list its retry waits are recorded in."""
    options.setdefault("timeout", TIMEOUT)
    client = AsyncAmaiClient(api_key=key, base_url=base_url, transport="aiohttp", **options)
    sleeps: list[float] = []

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)

    client._sleep = sleep
    return client, sleeps


def transport_of(client: AsyncAmaiClient) -> AiohttpTransport:
    transport = client._http._transport
    assert isinstance(transport, AiohttpTransport)
    return transport


# --- the opt-in -------------------------------------------------------------------------------


def test_check_and_spend(fake: FakeAmaiServer, served: str) -> None:
    key = fake.create_key(balance=100)

    async def main() -> None:
        client, _ = aiohttp_client(served, key)
        async with client:
            quote = await client.check("dub", units=2)
            charge = await client.spend("dub", units=2, reference="job-1")
            async with client.metered("chat") as meter:
                pass
        assert quote == Quote(ok=True, allowed=True, cost_tokens=80, balance_after=20)
        assert (charge.charged, charge.balance_after, charge.reference) == (80, 20, "job-1")
        assert meter.charge is not None
        assert meter.charge.balance_after == 15

    run(main)
    assert fake.balance(key) == 15
    assert fake.spends[0].reference == "job-1"


def test_many_tasks_share_one_client(fake: FakeAmaiServer, served: str) -> None:
    key = fake.create_key(balance=10_000)

    async def main() -> list[int]:
        client, _ = aiohttp_client(served, key, timeout=5)
        async with client:
            charges = await asyncio.gather(*(client.spend("chat") for _ in range(64)))
        return [charge.charged for charge in charges]

    assert run(main) == [5] * 64
    assert fake.balance(key) == 10_000 - 64 * 5
    assert len({spend.reference for spend in fake.spends}) == 64


def test_close_closes_the_session_and_copies_share_it(served: str) -> None:
    async def main() -> None:
        client, _ = aiohttp_client(served, "amai_live_not_a_key")
        copy = client.with_options(max_retries=0)
        with pytest.raises(AuthenticationError):
            await copy.check("chat")
        assert transport_of(copy) is transport_of(client)
        await copy.aclose()  # the copy does not own the pool
        (session,) = aiohttp_sessions(transport_of(client))
        assert not session.closed
        await client.aclose()
        assert session.closed
        assert aiohttp_sessions(transport_of(client)) == []
        assert client.is_closed
        assert copy.is_closed

    run(main)


def test_the_default_is_httpx_own_transport() -> None:
    client = AsyncAmaiClient(api_key=KEY)
    assert not isinstance(client._http._transport, AiohttpTransport)
    explicit = AsyncAmaiClient(api_key=KEY, transport="httpx")
    assert type(explicit._http._transport) is type(client._http._transport)
    run(client.aclose)
    run(explicit.aclose)


def test_aiohttp_with_an_http_client_of_your_own_is_refused() -> None:
    http = httpx.AsyncClient()
    with pytest.raises(ValueError, match=r"AiohttpTransport\(\)"):
        AsyncAmaiClient(api_key=KEY, http_client=http, transport="aiohttp")
    # httpx's transport with your client is what passing the client already means.
    client = AsyncAmaiClient(api_key=KEY, http_client=http, transport="httpx")
    assert client._http is http
    run(http.aclose)


@pytest.mark.parametrize(
    ("transport", "error"),
    [("uvloop", ValueError), ("AIOHTTP", ValueError), ("", ValueError), (None, TypeError)],
)
def test_an_unknown_transport_is_refused(transport: Any, error: type[Exception]) -> None:
    with pytest.raises(error, match="transport must be 'httpx' or 'aiohttp'"):
        AsyncAmaiClient(api_key=KEY, transport=transport)


def test_the_sync_client_has_no_transport_argument() -> None:
    with pytest.raises(TypeError, match="transport"):
        amaimedia.AmaiClient(api_key=KEY, transport="aiohttp")  # type: ignore[call-arg]


def test_without_aiohttp_the_error_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "aiohttp", None)  # as if not installed
    with pytest.raises(ImportError, match=r"pip install amaimedia\[aiohttp\]"):
        AsyncAmaiClient(api_key=KEY, transport="aiohttp")
    with pytest.raises(ImportError, match=r"pip install amaimedia\[aiohttp\]"):
        AiohttpTransport()


@pytest.mark.parametrize(
    ("value", "error"), [(0, ValueError), (-1, ValueError), ("8", TypeError), (True, TypeError)]
)
def test_max_connections_is_checked(value: Any, error: type[Exception]) -> None:
    with pytest.raises(error, match="max_connections"):
        AiohttpTransport(max_connections=value)


def test_repr() -> None:
    assert repr(AiohttpTransport(max_connections=8)) == "AiohttpTransport(max_connections=8)"


# --- errors and retries, as with httpx's transport ------------------------------------------


def test_error_answers_map_to_the_error_tree(fake: FakeAmaiServer, served: str) -> None:
    key = fake.create_key(balance=10)

    async def main() -> None:
        client, sleeps = aiohttp_client(served, key)
        async with client:
            with pytest.raises(InsufficientCreditsError) as exc_info:
                await client.spend("dub", units=1)
            assert (exc_info.value.cost_tokens, exc_info.value.balance) == (40, 10)
            fake.fail_next("check", status=429, retry_after=120)
            with pytest.raises(RateLimitError) as limited:
                await client.check("chat")
            assert limited.value.retry_after == 120
        assert sleeps == []

    run(main)


def test_429_and_5xx_are_retried(fake: FakeAmaiServer, served: str) -> None:
    key = fake.create_key(balance=100)
    fake.fail_next("spend", status=429, retry_after=2)
    fake.fail_next("spend", status=503, body=b"<html>bad gateway</html>", content_type="text/html")

    async def main() -> None:
        client, sleeps = aiohttp_client(served, key)
        async with client:
            charge = await client.spend("chat", reference="job-7")
        assert charge.charged == 5
        assert sleeps[0] == 2
        assert len(sleeps) == 2

    run(main)
    assert fake.balance(key) == 95


def test_a_dropped_spend_is_retried_and_charged_once(fake: FakeAmaiServer, served: str) -> None:
    key = fake.create_key(balance=100)
    fake.fail_next("spend", drop_after_commit=True)

    async def main() -> None:
        client, sleeps = aiohttp_client(served, key)
        async with client:
            charge = await client.spend("sfx")
        assert charge.charged == 10
        assert len(sleeps) == 1

    run(main)
    assert fake.balance(key) == 90
    assert len(fake.spends) == 1


def test_persistent_drops_raise_a_connection_error(fake: FakeAmaiServer, served: str) -> None:
    key = fake.create_key()
    fake.fail_next("check", drop=True, times=3)

    async def main() -> None:
        client, sleeps = aiohttp_client(served, key, max_retries=2)
        async with client:
            with pytest.raises(APIConnectionError) as exc_info:
                await client.check("chat")
        assert type(exc_info.value) is APIConnectionError
        assert isinstance(exc_info.value.__cause__, httpx.RemoteProtocolError)
        assert len(sleeps) == 2

    run(main)


def test_a_slow_answer_is_a_read_timeout(fake: FakeAmaiServer, served: str) -> None:
    key = fake.create_key()
    fake.fail_next("check", delay=2 * TIMEOUT)

    async def main() -> None:
        client, _ = aiohttp_client(served, key, max_retries=0)
        async with client:
            with pytest.raises(APITimeoutError) as exc_info:
                await client.check("chat")
            assert isinstance(exc_info.value.__cause__, httpx.ReadTimeout)
            # The connection is not reused for a late answer: the next call is clean.
            assert (await client.check("chat")).ok

    run(main)


def test_a_refused_connection_is_a_connect_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nobody listens once the socket is closed

    async def main() -> None:
        client, sleeps = aiohttp_client(f"http://127.0.0.1:{port}", max_retries=1)
        async with client:
            with pytest.raises(APIConnectionError) as exc_info:
                await client.check("chat")
        assert not isinstance(exc_info.value, APITimeoutError)
        assert isinstance(exc_info.value.__cause__, httpx.ConnectError)
        assert len(sleeps) == 1

    run(main)


@pytest.mark.skipif(
    sys.platform != "linux", reason="relies on Linux dropping SYNs to a full backlog"
)
def test_a_connection_that_never_opens_is_a_connect_timeout() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        # Connections nobody accepts fill the backlog; the kernel then ignores new ones.
        fillers = [socket.socket() for _ in range(4)]
        for filler in fillers:
            filler.setblocking(False)
            filler.connect_ex(("127.0.0.1", port))

        async def main() -> None:
            client, _ = aiohttp_client(f"http://127.0.0.1:{port}", max_retries=0, timeout=0.2)
            async with client:
                with pytest.raises(APITimeoutError) as exc_info:
                    await client.check("chat")
            assert isinstance(exc_info.value.__cause__, httpx.ConnectTimeout)

        try:
            run(main)
        finally:
            for filler in fillers:
                filler.close()


def test_an_answer_that_is_not_http_is_a_protocol_error() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        port = listener.getsockname()[1]

        def answer_garbage() -> None:
            for _ in range(2):  # the first attempt, and its one retry
                connection, _ = listener.accept()
                with connection:
                    connection.recv(65536)
                    connection.sendall(b"SSH-2.0-OpenSSH_9.6\r\n\r\n")

        server = threading.Thread(target=answer_garbage, daemon=True)
        server.start()

        async def main() -> None:
            client, sleeps = aiohttp_client(f"http://127.0.0.1:{port}", max_retries=1)
            async with client:
                with pytest.raises(APIConnectionError) as exc_info:
                    await client.check("chat")
            assert isinstance(exc_info.value.__cause__, httpx.RemoteProtocolError)
            assert len(sleeps) == 1

        run(main)
        server.join(timeout=5)


def test_a_redirect_is_not_followed(fake: FakeAmaiServer, served: str) -> None:
    key = fake.create_key()
    fake.fail_next("check", status=302, headers={"location": "https://elsewhere.example/"})

    async def main() -> None:
        client, _ = aiohttp_client(served, key)
        async with client:
            with pytest.raises(APIError, match="redirect"):
                await client.check("chat")

    run(main)
    assert len(fake.requests) == 1


def html_502(fake: FakeAmaiServer, times: int) -> None:
    page = b"<html>bad gateway</html>"
    fake.fail_next("check", status=502, body=page, content_type="text/html", times=times)


# What the server does, then what the caller gets and how many requests it took.
SCENARIOS: dict[str, tuple[Callable[[FakeAmaiServer], None], type[object], int]] = {
    "dropped, then answered": (lambda fake: fake.fail_next("check", drop=True), Quote, 2),
    "dropped every time": (
        lambda fake: fake.fail_next("check", drop=True, times=3),
        APIConnectionError,
        3,
    ),
    "too slow every time": (
        lambda fake: fake.fail_next("check", delay=TIMEOUT + 0.2, times=3),
        APITimeoutError,
        3,
    ),
    "502 from the edge, then answered": (lambda fake: html_502(fake, times=1), Quote, 2),
    "502 every time": (lambda fake: html_502(fake, times=3), ServerError, 3),
    "401": (
        lambda fake: fake.fail_next(
            "check", status=401, body={"ok": False, "error": "auth_required"}
        ),
        AuthenticationError,
        1,
    ),
}


@pytest.mark.parametrize("scenario", SCENARIOS)
@pytest.mark.parametrize("transport", ["httpx", "aiohttp"])
def test_both_transports_behave_alike(
    fake: FakeAmaiServer, served: str, transport: AsyncTransportName, scenario: str
) -> None:
    key = fake.create_key()
    queue_faults, outcome, requests = SCENARIOS[scenario]
    queue_faults(fake)

    async def main() -> object:
        client = AsyncAmaiClient(
            api_key=key, base_url=served, timeout=TIMEOUT, transport=transport
        )
        sleeps: list[float] = []

        async def sleep(seconds: float) -> None:
            sleeps.append(seconds)

        client._sleep = sleep
        async with client:
            try:
                result: object = await client.check("chat")
            except AmaiError as exc:
                result = exc
        assert len(sleeps) == requests - 1
        return result

    assert type(run(main)) is outcome
    assert len(fake.requests) == requests


# --- fidelity: what goes out, what comes back ------------------------------------------------


def test_the_request_on_the_wire_is_the_one_httpx_built(fake: FakeAmaiServer, served: str) -> None:
    key = fake.create_key()

    async def main() -> None:
        client, _ = aiohttp_client(served, key)
        async with client:
            await client.check("chat", units=2)

    run(main)
    (request,) = fake.requests
    sent = dict(request.headers)
    assert request.path == "/api/v1/tools/check"
    assert json.loads(request.content) == {"tool": "chat", "units": 2}
    # The fake keeps no key, but accepted this one: it is the key the client was given.
    assert sent["authorization"] == "Bearer [redacted]"
    assert request.status == 200
    assert sent["content-type"] == "application/json"
    assert sent["accept"] == "application/json"
    assert sent["user-agent"].startswith("amaimedia-python/")
    assert sent["content-length"] == str(len(request.content))
    assert "aiohttp" not in json.dumps(sent).lower()


def test_a_streamed_body_goes_out_whole_with_its_length(fake: FakeAmaiServer, served: str) -> None:
    fake.fail_next("check", status=200, body=QUOTE)

    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"tool": '
        yield b'"chat"}'

    async def main() -> httpx.Response:
        async with httpx.AsyncClient(transport=AiohttpTransport()) as http:
            return await http.post(served + "/api/v1/tools/check", content=chunks())

    assert run(main).json() == QUOTE
    (request,) = fake.requests
    assert request.content == b'{"tool": "chat"}'
    assert {name for name, _ in request.headers} >= {"content-length"}
    assert "transfer-encoding" not in {name for name, _ in request.headers}


def test_the_answer_is_decoded_by_httpx(fake: FakeAmaiServer, served: str) -> None:
    body = gzip.compress(json.dumps(QUOTE).encode())
    fake.fail_next("check", status=200, body=body, headers={"content-encoding": "gzip"})

    async def main() -> httpx.Response:
        async with httpx.AsyncClient(transport=AiohttpTransport()) as http:
            return await http.post(served + "/api/v1/tools/check", content=b"{}")

    response = run(main)
    assert response.json() == QUOTE
    assert response.headers["content-encoding"] == "gzip"
    assert response.http_version == "HTTP/1.1"
    assert response.reason_phrase == "OK"


def test_an_empty_request_body_is_sent_without_one(fake: FakeAmaiServer, served: str) -> None:
    fake.fail_next("check", status=200, body=QUOTE)

    async def main() -> int:
        async with httpx.AsyncClient(transport=AiohttpTransport()) as http:
            return (await http.post(served + "/api/v1/tools/check")).status_code

    assert run(main) == 200
    (request,) = fake.requests
    assert request.content == b""


# --- the pool ---------------------------------------------------------------------------------


def test_a_busy_pool_makes_requests_wait_their_turn(fake: FakeAmaiServer, served: str) -> None:
    fake.fail_next("check", delay=0.1)

    async def main() -> list[int]:
        async with httpx.AsyncClient(transport=AiohttpTransport(max_connections=1)) as http:
            url = served + "/api/v1/tools/check"
            answers = await asyncio.gather(*(http.post(url, content=b"{}") for _ in range(3)))
        return [answer.status_code for answer in answers]

    assert run(main) == [401, 401, 401]  # no key: answered, one at a time


def test_no_free_connection_in_time_is_a_pool_timeout(fake: FakeAmaiServer, served: str) -> None:
    fake.fail_next("check", delay=0.5)
    timeout = httpx.Timeout(5.0, pool=0.05)

    async def main() -> None:
        transport = AiohttpTransport(max_connections=1)
        async with httpx.AsyncClient(transport=transport, timeout=timeout) as http:
            url = served + "/api/v1/tools/check"
            slow = asyncio.ensure_future(http.post(url, content=b"{}"))
            await asyncio.sleep(0.1)  # the slow request holds the only connection
            with pytest.raises(httpx.PoolTimeout, match="all 1 are busy"):
                await http.post(url, content=b"{}")
            assert (await slow).status_code == 401

    run(main)


def test_cancelled_queued_requests_leave_no_slot_taken(fake: FakeAmaiServer, served: str) -> None:
    fake.fail_next("check", delay=0.2)

    async def main() -> None:
        transport = AiohttpTransport(max_connections=1)
        async with httpx.AsyncClient(transport=transport, timeout=5) as http:
            url = served + "/api/v1/tools/check"
            slow = asyncio.ensure_future(http.post(url, content=b"{}"))
            await asyncio.sleep(0.05)
            queued = [asyncio.ensure_future(http.post(url, content=b"{}")) for _ in range(5)]
            await asyncio.sleep(0.05)
            for request in queued:
                request.cancel()
            await asyncio.gather(*queued, return_exceptions=True)
            assert (await slow).status_code == 401
            assert (await http.post(url, content=b"{}")).status_code == 401
            assert slots(transport).in_use == 0

    run(main)


def test_a_closed_transport_refuses_to_send() -> None:
    async def main() -> None:
        transport = AiohttpTransport()
        await transport.aclose()
        await transport.aclose()  # closing twice is harmless
        with pytest.raises(RuntimeError, match="closed"):
            await transport.handle_async_request(httpx.Request("GET", "http://127.0.0.1:9/"))

    run(main)


# --- how aiohttp's exceptions are mapped -----------------------------------------------------
# A refused connection (ClientConnectorError) is covered on a real socket above.

REQUEST = httpx.Request("POST", "http://127.0.0.1:9/api/v1/tools/check")
REQUEST_INFO = aiohttp.RequestInfo(
    yarl.URL(str(REQUEST.url)), "POST", multidict.CIMultiDictProxy(multidict.CIMultiDict())
)


@pytest.mark.parametrize(
    ("raised", "expected"),
    [
        (aiohttp.ConnectionTimeoutError("connecting"), httpx.ConnectTimeout),
        (aiohttp.SocketTimeoutError("reading"), httpx.ReadTimeout),
        (asyncio.TimeoutError(), httpx.ReadTimeout),
        (aiohttp.ServerDisconnectedError(), httpx.RemoteProtocolError),
        (aiohttp.ClientPayloadError("incomplete body"), httpx.RemoteProtocolError),
        (
            aiohttp.ClientResponseError(REQUEST_INFO, (), message="bad status line"),
            httpx.RemoteProtocolError,
        ),
        (aiohttp.ClientOSError(104, "reset by peer"), httpx.ReadError),
        (aiohttp.ClientConnectionResetError("closing transport"), httpx.ReadError),
        (aiohttp.InvalidURL("ftp://x"), httpx.UnsupportedProtocol),
        (aiohttp.NonHttpUrlClientError("ftp://x"), httpx.UnsupportedProtocol),
        (aiohttp.ClientError(), httpx.TransportError),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, BaseException) else value.__name__,
)
def test_aiohttp_errors_become_httpx_errors(
    raised: BaseException, expected: type[httpx.TransportError]
) -> None:
    mapped = httpx_error(raised, REQUEST)
    assert type(mapped) is expected
    assert mapped.request is REQUEST
    assert str(mapped)  # never empty: the type's name at least
