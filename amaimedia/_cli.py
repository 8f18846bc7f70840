"""The `amaimedia` command: quote and charge from a shell, or run the offline fake API.

```
amaimedia check chat --units 1
amaimedia spend dub --units 2.5 --reference job-42
amaimedia fake-server --port 8787 --balance 10000
```

The key comes from `AMAI_API_KEY`, or from standard input with `--api-key-stdin`; never
from an option, whose value would be kept in the shell history and shown by `ps`. Only
the public client is used here, so the command behaves exactly like a program would.
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import logging
import os
import shlex
import signal
import sys
from collections.abc import Iterator, Sequence
from enum import IntEnum
from time import sleep
from types import FrameType
from typing import Final

from amaimedia import (
    AmaiClient,
    AmaiError,
    APIConnectionError,
    APIResponseValidationError,
    AuthenticationError,
    Charge,
    ForbiddenError,
    InsufficientCreditsError,
    Quote,
    RateLimitError,
    ServerError,
    __version__,
)

__all__ = ["ExitCode", "main"]

_PROG: Final = "amaimedia"
_ENV_API_KEY: Final = "AMAI_API_KEY"
_ENV_BASE_URL: Final = "AMAI_BASE_URL"
_REDACTED: Final = "[API key]"
_KNOWN_TOOLS: Final = "chat, image, voice_clone, dub, music, sfx, speech2text, translate"
# How often fake-server wakes to see whether a signal asked it to stop.
_POLL_SECONDS: Final = 0.2


class ExitCode(IntEnum):
    """The exit status of `amaimedia`: one per class of failure, so scripts can branch."""

    OK = 0
    """Success. For `check`: the balance covers the cost."""
    ERROR = 1
    """Any other failure: a 5xx, an unexpected answer, or a port already in use."""
    USAGE = 2
    """Bad arguments or settings, such as `--units 0`; nothing was sent."""
    AUTH = 3
    """No API key, or the server refused it (401 `auth_required`)."""
    INSUFFICIENT_CREDITS = 4
    """402 `insufficient_credits`, or a `check` whose quote is not allowed."""
    FORBIDDEN = 5
    """403 `forbidden`: suspended account, blocked region."""
    RATE_LIMITED = 6
    """429 `rate_limited`, after the retries."""
    CONNECTION = 7
    """No usable answer: connection refused or reset, or a timeout, after the retries."""
    INTERRUPTED = 130
    """Interrupted with Ctrl-C before an answer arrived."""


_MEANINGS: Final = {
    ExitCode.OK: "ok (check: the balance covers the cost)",
    ExitCode.ERROR: "other error: 5xx, unexpected answer, port in use",
    ExitCode.USAGE: "bad arguments or settings (such as --units 0); nothing was sent",
    ExitCode.AUTH: f"no API key, or the key was refused (401); see {_ENV_API_KEY}",
    ExitCode.INSUFFICIENT_CREDITS: "insufficient credits (402), or check: not allowed",
    ExitCode.FORBIDDEN: "forbidden (403): suspended account or blocked region",
    ExitCode.RATE_LIMITED: "rate limited (429), after the retries",
    ExitCode.CONNECTION: "no answer: connection refused or reset, or timeout",
    ExitCode.INTERRUPTED: "interrupted (Ctrl-C)",
}

# Most specific first: the first class that matches decides the exit status.
_EXIT_BY_ERROR: Final[tuple[tuple[type[AmaiError], ExitCode], ...]] = (
    (AuthenticationError, ExitCode.AUTH),
    (InsufficientCreditsError, ExitCode.INSUFFICIENT_CREDITS),
    (ForbiddenError, ExitCode.FORBIDDEN),
    (RateLimitError, ExitCode.RATE_LIMITED),
    (APIConnectionError, ExitCode.CONNECTION),
)
# After these, a spend may have charged without the answer arriving.
_UNCLEAR_OUTCOME: Final = (APIConnectionError, ServerError, APIResponseValidationError)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the `amaimedia` command.

    Args:
        argv: The arguments, without the program name. Defaults to `sys.argv[1:]`.

    Returns:
        The exit status, one of `ExitCode`; `--help` lists them.
    """
    parser = _build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        # argparse exits on --help, --version and usage errors; a caller that runs the
        # command in-process gets the status back instead.
        return int(exc.code or 0)
    with _debug_logging(args.verbose):
        if args.command == "fake-server":
            return _fake_server(args)
        return _call_api(args)


def _build_parser() -> argparse.ArgumentParser:
    exit_codes = "exit codes:\n" + "\n".join(
        f"  {code.value:>3}  {meaning}" for code, meaning in _MEANINGS.items()
    )
    environment = (
        "environment:\n"
        f"  {_ENV_API_KEY}   the API key (or pass it on stdin with --api-key-stdin)\n"
        f"  {_ENV_BASE_URL}  the API's root URL (default https://api.amaimedia.com)"
    )
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(
        prog=_PROG,
        description="Quote and charge AMAImedia tool costs, or run the offline fake API.",
        epilog=f"{environment}\n\n{exit_codes}",
        formatter_class=formatter,
    )
    parser.add_argument("--version", action="version", version=f"{_PROG} {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    verbose = argparse.ArgumentParser(add_help=False)
    verbose.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="log the SDK's requests and retries to stderr (never the key)",
    )
    api = argparse.ArgumentParser(add_help=False, parents=[verbose])
    api.add_argument(
        "tool", metavar="TOOL", help=f"the tool: {_KNOWN_TOOLS} (others are sent as-is)"
    )
    api.add_argument(
        "--units",
        type=_number,
        default=1,
        metavar="N",
        help="amount of work, a positive number (a dub unit is a minute); default 1",
    )
    api.add_argument("--json", action="store_true", help="print the answer as one JSON line")
    api.add_argument(
        "--api-key-stdin",
        action="store_true",
        help=f"read the key from one line of stdin instead of {_ENV_API_KEY}",
    )
    api.add_argument(
        "--base-url", metavar="URL", help=f"the API's root URL (default: ${_ENV_BASE_URL})"
    )
    api.add_argument(
        "--timeout", type=float, default=30.0, metavar="SECONDS", help="per attempt; default 30"
    )
    api.add_argument(
        "--max-retries",
        type=int,
        default=2,
        metavar="N",
        help="retries of 408, 429, 5xx and connection errors; default 2",
    )
    check = commands.add_parser(
        "check",
        parents=[api],
        help="quote what work would cost; never charges",
        description="Quote what UNITS of TOOL would cost against the balance. Never charges.",
        epilog=f"{environment}\n\n{exit_codes}",
        formatter_class=formatter,
    )
    check.set_defaults(reference=None)
    spend = commands.add_parser(
        "spend",
        parents=[api],
        help="charge for work that was done; idempotent by --reference",
        description=(
            "Charge for UNITS of TOOL after the work succeeded. The same TOOL and REF "
            "never charge twice; without --reference one is generated and printed."
        ),
        epilog=f"{environment}\n\n{exit_codes}",
        formatter_class=formatter,
    )
    spend.add_argument(
        "--reference", metavar="REF", help="idempotency key, such as a job id; default: generated"
    )
    fake = commands.add_parser(
        "fake-server",
        parents=[verbose],
        help="run the offline fake API on 127.0.0.1 for tests and demos",
        description=(
            "Run the offline fake of the API on 127.0.0.1 (never another interface) until "
            "Ctrl-C or SIGTERM. Prints its URL and a throwaway test key."
        ),
    )
    fake.add_argument(
        "--port", type=_port, default=0, help="the port; 0 (default) picks a free one"
    )
    fake.add_argument(
        "--balance",
        type=_balance,
        default=10_000,
        metavar="TOKENS",
        help="the test key's balance; default 10000",
    )
    return parser


def _number(text: str) -> int | float:
    """`"3"` is sent as the int 3, `"2.5"` as a float; range checks are the SDK's."""
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None


def _port(text: str) -> int:
    port = _whole(text)
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"a port is 0 to 65535, got {port}")
    return port


def _balance(text: str) -> int:
    balance = _whole(text)
    if balance < 0:
        raise argparse.ArgumentTypeError(f"a balance is 0 or more tokens, got {balance}")
    return balance


def _whole(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None


@contextlib.contextmanager
def _debug_logging(enabled: bool) -> Iterator[None]:
    """With `--verbose`, the `amaimedia` logger's DEBUG lines go to stderr, for this run."""
    if not enabled:
        yield
        return
    logger = logging.getLogger(_PROG)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(name)s: %(levelname)s: %(message)s"))
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


class _Console:
    """Writes the command's output with the key blanked out.

    The SDK never puts the key in a message; this guards against a server that echoes
    it back in an error message or an extra field.
    """

    def __init__(self, key: str) -> None:
        self._key = key

    def out(self, text: str) -> None:
        print(text.replace(self._key, _REDACTED), flush=True)

    def err(self, text: str, *, label: str = "error") -> None:
        print(f"{_PROG}: {label}: {text}".replace(self._key, _REDACTED), file=sys.stderr)


def _call_api(args: argparse.Namespace) -> int:
    if args.api_key_stdin:
        key = _read_key()
        missing = "no API key: --api-key-stdin read an empty line"
    else:
        key = os.environ.get(_ENV_API_KEY, "")
        missing = f"no API key: set {_ENV_API_KEY}, or pipe the key to --api-key-stdin"
    if not key:
        print(f"{_PROG}: error: {missing}", file=sys.stderr)
        return ExitCode.AUTH
    console = _Console(key)
    try:
        # Without --api-key-stdin the client reads AMAI_API_KEY itself, so that its
        # messages about a malformed key name the variable.
        with AmaiClient(
            key if args.api_key_stdin else None,
            base_url=args.base_url,
            timeout=args.timeout,
            max_retries=args.max_retries,
        ) as client:
            if args.command == "check":
                quote = client.check(args.tool, args.units)
            else:
                charge = client.spend(args.tool, args.units, reference=args.reference)
    except ValueError as exc:
        # The SDK's own check of an argument or setting, before anything was sent. Not
        # TypeError: argparse already gave every argument its type, so one would be a bug.
        console.err(str(exc))
        return ExitCode.USAGE
    except AmaiError as exc:
        return _report(console, args, exc)
    except KeyboardInterrupt:
        console.err("interrupted")
        return ExitCode.INTERRUPTED
    if args.command == "check":
        return _show_quote(console, args, quote)
    return _show_charge(console, args, charge)


def _read_key() -> str:
    if sys.stdin.isatty():
        # Typed at a terminal: not echoed, so it stays off the screen and out of recordings.
        return getpass.getpass(f"{_ENV_API_KEY}: ").strip()
    return sys.stdin.readline().strip()


def _show_quote(console: _Console, args: argparse.Namespace, quote: Quote) -> int:
    if args.json:
        console.out(quote.model_dump_json())
    else:
        verdict = "allowed" if quote.allowed else "NOT allowed (the balance does not cover it)"
        console.out(
            f"{args.tool} x{args.units}: {verdict}, costs {quote.cost_tokens} tokens, "
            f"balance after {quote.balance_after}"
        )
    return ExitCode.OK if quote.allowed else ExitCode.INSUFFICIENT_CREDITS


def _show_charge(console: _Console, args: argparse.Namespace, charge: Charge) -> int:
    if args.json:
        console.out(charge.model_dump_json())
    else:
        console.out(
            f"{args.tool} x{args.units}: charged {charge.charged} tokens, "
            f"balance after {charge.balance_after}, reference {charge.reference}"
        )
    return ExitCode.OK


def _report(console: _Console, args: argparse.Namespace, exc: AmaiError) -> int:
    console.err(str(exc))
    if isinstance(exc, AuthenticationError):
        source = "the key read from stdin" if args.api_key_stdin else _ENV_API_KEY
        console.err(
            f"check {source}; a revoked key must be replaced at amaimedia.com/account",
            label="hint",
        )
    elif exc.reference is not None and isinstance(exc, _UNCLEAR_OUTCOME):
        console.err(
            "the spend may have been charged; repeat it with "
            f"--reference {shlex.quote(exc.reference)}, which never charges twice",
            label="hint",
        )
    for error_class, code in _EXIT_BY_ERROR:
        if isinstance(exc, error_class):
            return code
    return ExitCode.ERROR


def _fake_server(args: argparse.Namespace) -> int:
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
                reason = exc.strerror or str(exc)
                print(
                    f"{_PROG}: error: cannot listen on 127.0.0.1:{args.port}: {reason}",
                    file=sys.stderr,
                )
                return ExitCode.ERROR
            # Flushed line by line: a script reading through a pipe gets them at once.
            for line in (
                f"Fake AMAImedia API (offline, for tests) listening on {base_url}",
                f"Offline test key, valid only while this server runs: {key}",
                f"Balance: {args.balance} tokens. To use it from another shell:",
                f"export {_ENV_BASE_URL}={base_url} {_ENV_API_KEY}={key}",
                "Stop with Ctrl-C or SIGTERM.",
            ):
                print(line, flush=True)
            while not stopping:
                sleep(_POLL_SECONDS)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    print(f"{_PROG}: fake server stopped", file=sys.stderr)
    return ExitCode.OK
