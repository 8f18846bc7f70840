"""A WSGI app with a module-level client, for `gunicorn --preload`.

The client is built, and makes its first call, when this module is imported: with
`--preload` that happens in gunicorn's master, which then forks the workers, as it does
for any app that makes its client at import time. The key and the server come from
`AMAI_API_KEY` and `AMAI_BASE_URL`.

`GET /?units=N` answers with JSON: the `cost_tokens` of a quote for N units of chat (or
the `error` that the check raised), the `pid` of the worker, and the `sdk` it imported.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from typing import TYPE_CHECKING
from urllib.parse import parse_qs

import amaimedia

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

client = amaimedia.AmaiClient(max_retries=0, timeout=10.0)
client.check("chat")


def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    units = int(parse_qs(environ.get("QUERY_STRING", ""))["units"][0])
    answer: dict[str, object] = {"pid": os.getpid(), "sdk": amaimedia.__file__}
    try:
        answer["cost_tokens"] = client.check("chat", units).cost_tokens
    except amaimedia.AmaiError as exc:
        answer["error"] = f"{type(exc).__name__}: {exc}"
    body = json.dumps(answer).encode()
    start_response(
        "200 OK", [("content-type", "application/json"), ("content-length", str(len(body)))]
    )
    return [body]
