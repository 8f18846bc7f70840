"""`FakeAmaiServer.serve()`: the fake over a real loopback socket.

The API's answers are covered, both ways in, by the table in test_server.py; this
file covers what belongs to the socket: binding, freeing the port, keep-alive, bodies
that cannot be read, and stopping while connections are open.
"""

from __future__ import annotations

import http.client
import json
import re
import socket
import struct
import threading
import time
from typing import Any

import httpx
import pytest

from amaimedia import AmaiClient, APITimeoutError
from amaimedia.testing import FakeAmaiServer
from amaimedia.testing._http import _Server

CHECK = "/api/v1/tools/check"
CHAT = json.dumps({"tool": "chat", "units": 1})


def port_of(base_url: str) -> int:
    return int(base_url.rsplit(":", 1)[1])


def connection(base_url: str) -> http.client.HTTPConnection:
    return http.client.HTTPConnection("127.0.0.1", port_of(base_url), timeout=5)


def test_serves_on_loopback_and_frees_the_port() -> None:
    fake = FakeAmaiServer()
    key = fake.create_key()
    with fake.serve() as base_url:
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", base_url)
        with AmaiClient(api_key=key, base_url=base_url) as client:
            assert client.check("chat").cost_tokens == 5

    with pytest.raises(httpx.ConnectError):
        httpx.post(base_url + CHECK, content=CHAT)
    # The port can be taken again at once, here by another fake.
    with FakeAmaiServer().serve(port=port_of(base_url)) as again:
        assert again == base_url


def test_the_port_is_freed_when_the_block_raises() -> None:
    fake = FakeAmaiServer()
    with pytest.raises(RuntimeError, match="boom"), fake.serve() as base_url:
        raise RuntimeError("boom")
    with pytest.raises(httpx.ConnectError):
        httpx.post(base_url + CHECK, content=CHAT)
    with fake.serve(port=port_of(base_url)) as again:
        assert again == base_url


def test_a_port_in_use_raises_os_error_on_entering() -> None:
    fake = FakeAmaiServer()
    with fake.serve() as base_url:
        taken = fake.serve(port=port_of(base_url))  # nothing is bound before entering
        with pytest.raises(OSError, match="in use"), taken:
            pass


@pytest.mark.parametrize(
    ("port", "error"),
    [
        ("8080", TypeError),
        (True, TypeError),
        (8080.0, TypeError),
        (-1, ValueError),
        (65536, ValueError),
    ],
)
def test_invalid_ports_are_refused(port: Any, error: type[Exception]) -> None:
    with pytest.raises(error, match="port must be"):
        FakeAmaiServer().serve(port=port)


def test_one_ledger_both_ways_in() -> None:
    fake = FakeAmaiServer()
    key = fake.create_key(balance=100)
    with fake.client(key) as in_process, fake.serve() as base_url:
        in_process.spend("image", reference="job-1")
        with AmaiClient(api_key=key, base_url=base_url) as over_http:
            assert over_http.check("image").balance_after == 60
            # The reference spent in process is a replay over HTTP.
            assert over_http.spend("image", reference="job-1").balance_after == 80
    assert fake.balance(key) == 80
    assert len(fake.spends) == 1


def test_two_servers_at_once_share_the_ledger() -> None:
    fake = FakeAmaiServer()
    key = fake.create_key(balance=100)
    with fake.serve() as first, fake.serve() as second:
        assert first != second
        for base_url in (first, second):
            with AmaiClient(api_key=key, base_url=base_url) as client:
                client.spend("sfx")
    assert fake.balance(key) == 80


def test_connections_are_kept_alive() -> None:
    fake = FakeAmaiServer()
    with fake.serve() as base_url:
        conn = connection(base_url)
        statuses = []
        sockets = []
        for _ in range(3):
            conn.request("POST", CHECK, body=CHAT)
            response = conn.getresponse()
            response.read()
            statuses.append(response.status)
            sockets.append(conn.sock)
            assert response.getheader("connection") is None
        conn.close()
    assert statuses == [401, 401, 401]
    assert sockets[0] is not None
    assert sockets[0] is sockets[1] is sockets[2]  # one connection, never reopened


def test_connection_close_is_honoured() -> None:
    fake = FakeAmaiServer()
    with fake.serve() as base_url:
        conn = connection(base_url)
        conn.request("POST", CHECK, body=CHAT, headers={"Connection": "close"})
        response = conn.getresponse()
        assert response.getheader("connection") == "close"
        assert json.loads(response.read()) == {"ok": False, "error": "auth_required"}
        conn.close()


def test_head_gets_the_headers_alone() -> None:
    fake = FakeAmaiServer()
    with fake.serve() as base_url:
        conn = connection(base_url)
        conn.request("HEAD", CHECK)
        response = conn.getresponse()
        assert (response.status, response.read()) == (405, b"")
        assert response.getheader("allow") == "POST"
        conn.close()


@pytest.mark.parametrize(
    ("headers", "status", "error"),
    [
        ({"Transfer-Encoding": "chunked"}, 411, "length_required"),
        ({"Content-Length": "ten"}, 400, "invalid_request"),
        ({"Content-Length": "-5"}, 400, "invalid_request"),
        ({"Content-Length": str(2 * 1024 * 1024)}, 413, "payload_too_large"),
    ],
)
def test_bodies_that_cannot_be_read_are_refused(
    headers: dict[str, str], status: int, error: str
) -> None:
    fake = FakeAmaiServer()
    with fake.serve() as base_url:
        conn = connection(base_url)
        conn.putrequest("POST", CHECK)
        for name, value in headers.items():
            conn.putheader(name, value)
        conn.endheaders()
        response = conn.getresponse()
        body = json.loads(response.read())
        conn.close()
    assert response.status == status
    assert body["error"] == error
    assert body["message"]
    assert response.getheader("connection") == "close"
    assert response.getheader("x-request-id", "").startswith("req_fake_")
    assert fake.requests == []  # refused before the fake saw it


def test_a_request_without_content_length_has_an_empty_body() -> None:
    fake = FakeAmaiServer()
    key = fake.create_key()
    with fake.serve() as base_url:
        conn = connection(base_url)
        conn.putrequest("POST", CHECK)
        conn.putheader("Authorization", f"Bearer {key}")
        conn.endheaders()
        response = conn.getresponse()
        body = json.loads(response.read())
        conn.close()
    assert (response.status, body["message"]) == (400, "the body is not valid JSON")


def test_leaving_ends_kept_alive_connections() -> None:
    fake = FakeAmaiServer()
    with httpx.Client(timeout=5) as http:
        with fake.serve() as base_url:
            assert http.post(base_url + CHECK, content=CHAT).status_code == 401
        # The pooled connection was ended by the server, and nothing listens any more.
        with pytest.raises(httpx.TransportError):
            http.post(base_url + CHECK, content=CHAT)


def wait_for_requests(fake: FakeAmaiServer, count: int) -> None:
    deadline = time.monotonic() + 10
    while len(fake.requests) < count:
        assert time.monotonic() < deadline, "the request never reached the fake"
        time.sleep(0.005)


def test_leaving_cuts_an_answer_that_waits_out_a_delay() -> None:
    fake = FakeAmaiServer()
    fake.fail_next("check", delay=600)
    errors: list[BaseException] = []

    with fake.serve() as base_url:

        def send() -> None:
            try:
                httpx.post(base_url + CHECK, content=CHAT, timeout=60)
            except httpx.HTTPError as exc:
                errors.append(exc)

        thread = threading.Thread(target=send)
        thread.start()
        wait_for_requests(fake, 1)
    thread.join()

    # Leaving did not wait the 600 s: it cut the connection instead of answering.
    [error] = errors
    assert isinstance(error, httpx.RemoteProtocolError)


def test_a_late_answer_to_a_client_that_left_is_no_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    fake = FakeAmaiServer()
    key = fake.create_key()
    fake.fail_next("spend", delay=0.3)
    with fake.serve() as base_url:
        impatient = AmaiClient(api_key=key, base_url=base_url, timeout=0.05, max_retries=0)
        with impatient, pytest.raises(APITimeoutError):
            impatient.spend("chat", reference="job-1")
        time.sleep(0.4)  # let the late answer meet the closed connection
        with AmaiClient(api_key=key, base_url=base_url) as client:
            # The request was processed on arrival: the retry is a replay.
            assert client.spend("chat", reference="job-1").balance_after == 9995
    assert len(fake.spends) == 1
    assert capsys.readouterr().err == ""


def test_a_client_that_resets_mid_request_is_no_error(capsys: pytest.CaptureFixture[str]) -> None:
    fake = FakeAmaiServer()
    with fake.serve() as base_url:
        raw = socket.create_connection(("127.0.0.1", port_of(base_url)))
        raw.sendall(b"POST /api/v1/tools/check HTTP/1.1\r\nContent-Length: 50\r\n\r\n{")
        # Linger 0: close with a reset, while the server waits for the rest of the body.
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        raw.close()
        with AmaiClient(api_key=fake.create_key(), base_url=base_url) as client:
            assert client.check("chat").allowed is True
    assert capsys.readouterr().err == ""


def test_a_failed_accept_is_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    real_get_request = _Server.get_request
    failures = [OSError("the client left before it was accepted")]

    def flaky_get_request(self: _Server) -> Any:
        if failures:
            raise failures.pop()
        return real_get_request(self)

    monkeypatch.setattr(_Server, "get_request", flaky_get_request)
    fake = FakeAmaiServer()
    with fake.serve() as base_url:
        # The connection stays in the backlog, and is accepted on the next round.
        assert httpx.post(base_url + CHECK, content=CHAT, timeout=5).status_code == 401
    assert failures == []
