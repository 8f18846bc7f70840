"""Test doubles: a scriptable in-process API.

`FakeAPI` answers like the documented API over `httpx.MockTransport` and records every
request. What only shows on a wire runs against `amaimedia.testing.FakeAmaiServer` served
on loopback (the `loopback` fixture).
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
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
