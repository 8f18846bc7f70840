"""The command's arguments: `check`, `spend`, `replay` and `fake-server`, and their help."""

from __future__ import annotations

import argparse
import math
import os
from typing import Any, Final, NoReturn, get_args

from amaimedia import ToolName, __version__
from amaimedia._constants import (
    DEFAULT_BASE_URL,
    DEFAULT_MAX_RETRIES,
    DEFAULT_TIMEOUT,
    ENV_API_KEY,
    ENV_BASE_URL,
)

from ._console import PROG, blank_keys
from ._exit_codes import ExitCode

__all__ = ["DEFAULT_INTERVAL", "DEFAULT_REPLAY_MAX_AGE", "build_parser"]

_FORMATTER = argparse.RawDescriptionHelpFormatter

# replay: the entries older than this are stale, not sent (7 days, as replay_pending()).
DEFAULT_REPLAY_MAX_AGE: Final = 7 * 86400
# replay --watch: the seconds waited after one round before the next.
DEFAULT_INTERVAL: Final = 30.0
_DAYS: Final = DEFAULT_REPLAY_MAX_AGE // 86400


class _Parser(argparse.ArgumentParser):
    """An `ArgumentParser` whose usage errors never echo an API key typed as an argument.

    argparse quotes the argument it refuses (`unrecognized arguments: amai_live_…`), and
    a key passed as one (`--api-key KEY`, which is not an option) would be printed on
    stderr, to a terminal, a CI log or a recording. Its commands' parsers are of this
    class too (argparse makes them of their parent's).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # No abbreviations: `--api-key`, which is no option, would otherwise mean
        # `--api-key-stdin` and wait for a key on stdin, and a later option sharing a
        # prefix would change what an old script's flag means.
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        """Print the usage and the error, without the key, and exit with status 2."""
        blanked = blank_keys(message, os.environ.get(ENV_API_KEY))
        if blanked != message:
            blanked += (
                f" (a key is never an argument, which the shell history and ps keep: set "
                f"{ENV_API_KEY}, or pipe it to --api-key-stdin)"
            )
        super().error(blanked)


def build_parser() -> argparse.ArgumentParser:
    """The parser of `amaimedia` and its four commands."""
    epilog = f"{_environment()}\n\n{_exit_codes()}"
    parser = _Parser(
        prog=PROG,
        description=(
            "Quote and charge AMAImedia tool costs, replay the spends a journal kept, "
            "or run the offline fake API."
        ),
        epilog=epilog,
        formatter_class=_FORMATTER,
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    verbose = _Parser(add_help=False)
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
    replay = commands.add_parser(
        "replay",
        parents=[verbose],
        help="send again the spends a journal holds as pending; for cron or a sidecar",
        description=(
            "Send again every spend of the key that the spend journal holds as pending\n"
            "(a metered block whose spend failed, or a process that died before sending\n"
            "it). Each keeps its reference, so none is charged twice. Entries older than\n"
            f"--max-age ({_DAYS} days) are stale: reported, not sent, since the API may have\n"
            "forgotten their references and would charge them again. With --watch, a\n"
            "round every --interval seconds until SIGINT or SIGTERM."
        ),
        epilog=epilog,
        formatter_class=_FORMATTER,
    )
    _replay_arguments(replay)
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


def _api_arguments(verbose: _Parser) -> _Parser:
    """What `check` and `spend` share: the tool, the units, and the client's settings."""
    api = _Parser(add_help=False, parents=[verbose])
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
    _client_arguments(api)
    return api


def _replay_arguments(replay: argparse.ArgumentParser) -> None:
    """`replay`: the journal, the age rules, `--watch`, and the client's settings."""
    replay.add_argument(
        "--journal",
        required=True,
        metavar="URL_OR_PATH",
        help="the spend journal: an SQLite file, or a postgresql:// URL",
    )
    replay.add_argument(
        "--watch",
        action="store_true",
        help="keep replaying, every --interval seconds, until SIGINT or SIGTERM (exit 0)",
    )
    replay.add_argument(
        "--interval",
        type=_positive_seconds,
        metavar="SECONDS",
        help=f"with --watch: the wait between rounds; default {DEFAULT_INTERVAL:g}",
    )
    replay.add_argument(
        "--older-than",
        type=_seconds,
        default=0.0,
        metavar="SECONDS",
        help="skip entries younger than this: a block may still be running; default 0",
    )
    replay.add_argument(
        "--max-age",
        type=_max_age,
        default=DEFAULT_REPLAY_MAX_AGE,
        metavar="SECONDS",
        help=(
            f"entries older than this are stale, not sent; default {DEFAULT_REPLAY_MAX_AGE} "
            f"({_DAYS} days); 'none' sends all, however old (the API may charge them again)"
        ),
    )
    replay.add_argument(
        "--json", action="store_true", help="print one JSON object per round, on one line"
    )
    replay.add_argument(
        "--previous-key-stdin",
        action="store_true",
        help=(
            "after a key rotation: read earlier keys of the same account from stdin, one per "
            "line (after the key, with --api-key-stdin), and adopt and send their pending "
            "entries with the current key; the keys are never printed"
        ),
    )
    replay.add_argument(
        "--adopt-unauthenticated",
        action="store_true",
        help=(
            "also send the entries amaimedia 0.1 wrote, which carry no authentication code "
            "(refused otherwise): only if nobody else could write the journal"
        ),
    )
    _client_arguments(replay)


def _client_arguments(parser: argparse.ArgumentParser) -> None:
    """What every command that calls the API takes: the key's source, and the client's."""
    parser.add_argument(
        "--api-key-stdin",
        action="store_true",
        help=f"read the key from one line of stdin instead of {ENV_API_KEY}",
    )
    parser.add_argument(
        "--base-url", metavar="URL", help=f"the API's root URL (default: ${ENV_BASE_URL})"
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT,
        metavar="SECONDS",
        help=f"per attempt; default {DEFAULT_TIMEOUT:g}",
    )
    parser.add_argument(
        "--max-retries",
        type=int,
        default=DEFAULT_MAX_RETRIES,
        metavar="N",
        help=f"retries of 408, 429, 5xx and connection errors; default {DEFAULT_MAX_RETRIES}",
    )


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


def _seconds(text: str) -> float:
    """A duration: a finite number of seconds, 0 or more."""
    try:
        seconds = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not math.isfinite(seconds) or seconds < 0:
        raise argparse.ArgumentTypeError(f"seconds are a finite number, 0 or more; got {text}")
    return seconds


def _positive_seconds(text: str) -> float:
    seconds = _seconds(text)
    if seconds == 0:
        raise argparse.ArgumentTypeError("the interval must be more than 0 seconds")
    return seconds


def _max_age(text: str) -> float | None:
    """Seconds, or `none` for no limit (which an infinite number must not mean by accident)."""
    if text.strip().lower() == "none":
        return None
    try:
        return _seconds(text)
    except argparse.ArgumentTypeError as exc:
        raise argparse.ArgumentTypeError(f"{exc}; 'none' sends entries however old") from None


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
