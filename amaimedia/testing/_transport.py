"""In-process access to the fake: `httpx.MockTransport`s that call the fake's handler."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable

import httpx

from ._app import Outcome

__all__ = ["Dispatch", "async_transport", "sync_transport"]

Dispatch = Callable[[str, str, Iterable[tuple[str, str]], bytes], Outcome]
"""`(method, target, headers, body) -> Outcome`: the fake's handler, under its lock."""


def sync_transport(dispatch: Dispatch) -> httpx.MockTransport:
    """A transport for `httpx.Client` whose every request goes to `dispatch`."""

    def handler(request: httpx.Request) -> httpx.Response:
        outcome = _dispatch(dispatch, request, request.read())
        if outcome.delay:
            time.sleep(outcome.delay)
        return _response(outcome, request)

    return httpx.MockTransport(handler)


def async_transport(dispatch: Dispatch) -> httpx.MockTransport:
    """A transport for `httpx.AsyncClient`: delays wait with `asyncio.sleep`."""

    async def handler(request: httpx.Request) -> httpx.Response:
        outcome = _dispatch(dispatch, request, await request.aread())
        if outcome.delay:
            await asyncio.sleep(outcome.delay)
        return _response(outcome, request)

    return httpx.MockTransport(handler)


def _dispatch(dispatch: Dispatch, request: httpx.Request, body: bytes) -> Outcome:
    target = request.url.raw_path.decode("ascii")
    return dispatch(request.method, target, request.headers.multi_items(), body)


def _response(outcome: Outcome, request: httpx.Request) -> httpx.Response:
    if outcome.reply is None:
        # What httpx raises when a real server closes the connection without answering.
        raise httpx.RemoteProtocolError(
            "Server disconnected without sending a response.", request=request
        )
    reply = outcome.reply
    return httpx.Response(reply.status, headers=list(reply.headers), content=reply.body)
