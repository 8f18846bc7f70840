"""Test doubles: a scriptable in-process API, and a raw loopback HTTP server.

`FakeAPI` answers like the documented API over `httpx.MockTransport` and records every
request. `LoopbackServer` is a real socket on 127.0.0.1 for what only shows on a wire:
dropped connections, slow answers, and the logs of httpx's real transport.
"""

from __future__ import annotations

import json
import socket
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx

KEY = "amai_live_test_0123456789abcdefWXYZ"

QUOTE = {"ok": True, "allowed": True, "cost_tokens": 5, "balance_after": 9995}
CHARGE = {"ok": True, "charged": 5, "balance_after": 9990}

Reply = httpx.Response | BaseException | Callable[[httpx.Request], httpx.Response]


@dataclass
class FakeAPI:
    """An in-process stand-in for the API, for `httpx.MockTransport`.

    Replies queued with `queue(endpoint, ...)` are used first, in order; then `check`
    answers `QUOTE` and `spend` answers `CHARGE`. A queued exception is raised as the
    transport's failure (`httpx.ConnectError(...)`, `httpx.ReadTimeout(...)`).
    """

    requests: list[httpx.Request] = field(default_factory=list)
    _queues: dict[str, deque[Reply]] = field(default_factory=dict)

    def queue(self, endpoint: str, *replies: Reply) -> None:
        assert endpoint in ("check", "spend")
        self._queues.setdefault(endpoint, deque()).extend(replies)

    def bodies(self, endpoint: str | None = None) -> list[Any]:
        """The JSON bodies sent, optionally only those to one endpoint."""
        return [
            json.loads(r.content)
            for r in self.requests
            if endpoint is None or r.url.path.endswith("/" + endpoint)
        ]

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        endpoint = request.url.path.rsplit("/", 1)[-1]
        queued = self._queues.get(endpoint)
        if queued:
            reply = queued.popleft()
            if isinstance(reply, BaseException):
                raise reply
            if isinstance(reply, httpx.Response):
                return reply
            return reply(request)
        if endpoint == "check":
            return httpx.Response(200, json=QUOTE)
        if endpoint == "spend":
            return httpx.Response(200, json=CHARGE)
        return httpx.Response(404, json={"ok": False, "error": "not_found"})


def error(status: int, error: str | None = None, **fields: Any) -> httpx.Response:
    """A JSON error answer shaped like the API's: `{"ok": false, "error": ...}`."""
    headers = fields.pop("headers", None)
    body: dict[str, Any] = {"ok": False, **fields}
    if error is not None:
        body["error"] = error
    return httpx.Response(status, json=body, headers=headers)


@dataclass
class Action:
    """What the loopback server does with one request."""

    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    drop: bool = False  # close the connection without answering


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # The default backlog of 5 stalls tests that open dozens of connections at once.
    request_queue_size = 128

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that timed out and left makes the late answer fail with a broken pipe:
        # that is the test working, not an error worth a traceback.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class LoopbackServer:
    """A real HTTP/1.1 server on 127.0.0.1 that plays a queue of `Action`s.

    With the queue empty it answers like the API. Each request's path, headers and body
    are recorded in `requests`.
    """

    def __init__(self) -> None:
        self.actions: deque[Action] = deque()
        self.requests: list[tuple[str, dict[str, str], bytes]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Without this, a kept-alive connection waits ~40 ms on every answer.
            disable_nagle_algorithm = True

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                body = self.rfile.read(length)
                outer.requests.append((self.path, dict(self.headers), body))
                action = outer.actions.popleft() if outer.actions else outer.default(self.path)
                if action.delay:
                    time.sleep(action.delay)
                if action.drop:
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                self.send_response(action.status)
                for name, value in action.headers.items():
                    self.send_header(name, value)
                self.send_header("content-length", str(len(action.body)))
                self.end_headers()
                self.wfile.write(action.body)

        self._server = _Server(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
        )

    @staticmethod
    def default(path: str) -> Action:
        body = QUOTE if path.endswith("/check") else CHARGE
        return Action(body=json.dumps(body).encode(), headers={"content-type": "application/json"})

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> LoopbackServer:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
