"""The API's answers for in-process tests, and a respx router that gives them.

`api_router()` (the `api` fixture) is a `respx.Router` with two named routes, `"check"` and
`"spend"`, that answer `QUOTE` and `CHARGE`. `queue(route, ...)` puts replies in front of
that default: each request to the route uses up the next one. What was sent is read from
respx's own records, `router.calls` or `route.calls` (`call.request`); `bodies()` parses
their JSON.

```python
queue(api["spend"], error(503), httpx.ConnectError("refused"))  # then CHARGE
client = harness.client(api)
...
assert bodies(api["spend"].calls)[0]["reference"] == "job-1"
```
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

import httpx
import respx
from respx.models import Call

KEY = "amai_live_test_0123456789abcdefWXYZ"

QUOTE = {"ok": True, "allowed": True, "cost_tokens": 5, "balance_after": 9995}
CHARGE = {"ok": True, "charged": 5, "balance_after": 9990}

# The paths under any base URL, even one with a path prefix of its own.
CHECK_PATH = r"/api/v1/tools/check$"
SPEND_PATH = r"/api/v1/tools/spend$"

Reply = httpx.Response | BaseException | Callable[[httpx.Request], httpx.Response]
"""An answer to queue: a response, an exception the transport raises (`httpx.ConnectError`,
`httpx.ReadTimeout`, or an interrupt), or a callable that answers the request."""


def error(status: int, error: str | None = None, **fields: Any) -> httpx.Response:
    """A JSON error answer shaped like the API's: `{"ok": false, "error": ...}`."""
    headers = fields.pop("headers", None)
    body: dict[str, Any] = {"ok": False, **fields}
    if error is not None:
        body["error"] = error
    return httpx.Response(status, json=body, headers=headers)


class Replies:
    """A route's side effect: the replies queued for it, in order, then its default answer.

    respx reads a side effect that returns `None` as "no match", and a list of them as an
    error once used up; this one always answers. It is always true, too: respx takes a
    false side effect for none.
    """

    def __init__(self, default: httpx.Response) -> None:
        self.default = default
        self._queued: deque[Reply] = deque()

    def extend(self, replies: Iterable[Reply]) -> None:
        self._queued.extend(replies)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        try:
            reply = self._queued.popleft()  # atomic: threads may share one route
        except IndexError:
            return self.default  # respx answers each request with a copy
        if isinstance(reply, BaseException):
            # respx records the call and re-raises an Exception as the transport's
            # failure; an interrupt (KeyboardInterrupt, CancelledError) passes unrecorded.
            raise reply
        if isinstance(reply, httpx.Response):
            return reply
        return reply(request)


def api_router() -> respx.Router:
    """A router answering like the API: `QUOTE` at `check`, `CHARGE` at `spend`.

    Any other request fails the test (respx's `AllMockedAssertionError`).
    """
    router = respx.Router(assert_all_called=False)
    for name, path, answer in (("check", CHECK_PATH, QUOTE), ("spend", SPEND_PATH, CHARGE)):
        router.post(path__regex=path, name=name).mock(
            side_effect=Replies(httpx.Response(200, json=answer))
        )
    return router


def queue(route: respx.Route, *replies: Reply) -> None:
    """Answer the next requests to `route` with `replies`, in order, then as before."""
    side_effect = route.side_effect
    assert isinstance(side_effect, Replies), "queue() needs a route of api_router()"
    side_effect.extend(replies)


def bodies(calls: Iterable[Call]) -> list[Any]:
    """The JSON bodies sent, in order: `bodies(api.calls)`, `bodies(api["spend"].calls)`."""
    return [json.loads(call.request.content) for call in calls]


def requests(calls: Iterable[Call]) -> list[httpx.Request]:
    """The requests sent, in order."""
    return [call.request for call in calls]
