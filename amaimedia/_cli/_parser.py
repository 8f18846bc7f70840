"""The command's arguments: `check`, `spend` and `fake-server`, and their help text."""

from __future__ import annotations

import argparse
from typing import get_args

from amaimedia import ToolName, __version__
from amaimedia._constants import (
    DEFAULT_BASE_URL,
    DEFAULT_MAX_RETRIES,
    DEFAULT_TIMEOUT,
    ENV_API_KEY,
    ENV_BASE_URL,
)

from ._console import PROG
from ._exit_codes import ExitCode

__all__ = ["build_parser"]

_FORMATTER = argparse.RawDescriptionHelpFormatter


def build_parser() -> argparse.ArgumentParser:
    """The parser of `amaimedia` and its three commands."""
    epilog = f"{_environment()}\n\n{_exit_codes()}"
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Quote and charge AMAImedia tool costs, or run the offline fake API.",
        epilog=epilog,
        formatter_class=_FORMATTER,
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    verbose = argparse.ArgumentParser(add_help=False)
    verbose.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="log the SDK's requests and retries to stderr (never the key)",
    )
    api = _api_arguments(verbose)
    check = commands.add_parser(
        "check",
        parents=[api],
        help="quote what work would cost; never charges",
        description="Quote what UNITS of TOOL would cost against the balance. Never charges.",
        epilog=epilog,
        formatter_class=_FORMATTER,
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
        epilog=epilog,
        formatter_class=_FORMATTER,
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


def _api_arguments(verbose: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """What `check` and `spend` share: the tool, the units, and the client's settings."""
    api = argparse.ArgumentParser(add_help=False, parents=[verbose])
    tools = ", ".join(get_args(ToolName))
    api.add_argument("tool", metavar="TOOL", help=f"the tool: {tools} (others are sent as-is)")
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
        help=f"read the key from one line of stdin instead of {ENV_API_KEY}",
    )
    api.add_argument(
        "--base-url", metavar="URL", help=f"the API's root URL (default: ${ENV_BASE_URL})"
    )
    api.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT,
        metavar="SECONDS",
        help=f"per attempt; default {DEFAULT_TIMEOUT:g}",
    )
    api.add_argument(
        "--max-retries",
        type=int,
        default=DEFAULT_MAX_RETRIES,
        metavar="N",
        help=f"retries of 408, 429, 5xx and connection errors; default {DEFAULT_MAX_RETRIES}",
    )
    return api


def _environment() -> str:
    return (
        "environment:\n"
        f"  {ENV_API_KEY}   the API key (or pass it on stdin with --api-key-stdin)\n"
        f"  {ENV_BASE_URL}  the API's root URL (default {DEFAULT_BASE_URL})"
    )


def _exit_codes() -> str:
    return "exit codes:\n" + "\n".join(f"  {code.value:>3}  {code.meaning}" for code in ExitCode)


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
