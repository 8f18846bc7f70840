"""The loopback server the benchmark measures against: uvicorn with a bare ASGI app.

It answers every POST to `.../check` with a fixed quote and every other POST with a fixed
charge, as fast as a Python server can, so that the client side is what is measured.
Run by `run.py` in a subprocess; it prints its port on the first line of stdout.

    python benchmarks/server.py [--port N]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import socket
from collections.abc import Awaitable, Callable
from typing import Any

# A balance no run can spend, as in run.py: admission would refuse blocks once a second of
# them had charged more than a balance quoted again and again.
BALANCE = 10**15
QUOTE = json.dumps(
    {"ok": True, "allowed": True, "cost_tokens": 5, "balance_after": BALANCE}
).encode()
CHARGE = json.dumps({"ok": True, "charged": 5, "balance_after": BALANCE - 5}).encode()

Message = dict[str, Any]


def _start(body: bytes) -> Message:
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]
    return {"type": "http.response.start", "status": 200, "headers": headers}


# Built once: the app does nothing per request but read the body and send these.
_CHECK = (_start(QUOTE), {"type": "http.response.body", "body": QUOTE})
_SPEND = (_start(CHARGE), {"type": "http.response.body", "body": CHARGE})


async def app(
    scope: Message,
    receive: Callable[[], Awaitable[Message]],
    send: Callable[[Message], Awaitable[None]],
) -> None:
    """A bare ASGI app: no framework, no routing beyond the last path segment."""
    more = True
    while more:
        more = (await receive()).get("more_body", False)
    start, body = _CHECK if scope["path"].endswith("/check") else _SPEND
    await send(start)
    await send(body)


def http_protocol() -> str:
    """`httptools` when installed (uvicorn's fast parser), else `h11`."""
    return "httptools" if importlib.util.find_spec("httptools") else "h11"


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    port = parser.parse_args().port
    # IPPROTO_TCP given explicitly: asyncio turns Nagle off only on sockets that say so,
    # and Nagle with delayed ACKs would hold every answer back ~40 ms.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    print(sock.getsockname()[1], http_protocol(), flush=True)
    config = uvicorn.Config(
        app,
        http=http_protocol(),
        lifespan="off",
        log_level="warning",
        access_log=False,
        backlog=256,
    )
    uvicorn.Server(config).run(sockets=[sock])


if __name__ == "__main__":
    main()
