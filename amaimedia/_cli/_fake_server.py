"""`amaimedia fake-server`: the offline fake of the API on 127.0.0.1, until a signal."""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
from time import sleep
from types import FrameType
from typing import Final

from amaimedia._constants import ENV_API_KEY, ENV_BASE_URL

from ._console import PROG, fail
from ._exit_codes import ExitCode

__all__ = ["fake_server"]

# How often the server wakes to see whether a signal asked it to stop.
_POLL_SECONDS: Final = 0.2


def fake_server(args: argparse.Namespace) -> int:
    """Serve the fake until SIGINT or SIGTERM; print its URL and a test key first."""
    # Imported here, so that check and spend never load the fake.
    from amaimedia.testing import FakeAmaiServer

    fake = FakeAmaiServer()
    key = fake.create_key(balance=args.balance)
    stopping = False

    def request_stop(signum: int, frame: FrameType | None) -> None:
        # Only a flag: a handler that took a lock (threading.Event.set) could deadlock
        # on one the main thread held when the signal arrived.
        nonlocal stopping
        stopping = True

    stop_signals = (signal.SIGINT, signal.SIGTERM)
    previous = {signum: signal.signal(signum, request_stop) for signum in stop_signals}
    try:
        with contextlib.ExitStack() as stack:
            try:
                base_url = stack.enter_context(fake.serve(port=args.port))
            except OSError as exc:
                fail(f"cannot listen on 127.0.0.1:{args.port}: {exc.strerror or exc}")
                return ExitCode.ERROR
            # Flushed line by line: a script reading through a pipe gets them at once.
            for line in (
                f"Fake AMAImedia API (offline, for tests) listening on {base_url}",
                f"Offline test key, valid only while this server runs: {key}",
                f"Balance: {args.balance} tokens. To use it from another shell:",
                f"export {ENV_BASE_URL}={base_url} {ENV_API_KEY}={key}",
                "Stop with Ctrl-C or SIGTERM.",
            ):
                print(line, flush=True)
            while not stopping:
                sleep(_POLL_SECONDS)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    print(f"{PROG}: fake server stopped", file=sys.stderr)
    return ExitCode.OK
