"""`amaimedia check` and `amaimedia spend`: one call of the public client each.

Also what `replay` shares with them: where the key comes from, and how an error is told.
"""

from __future__ import annotations

import argparse
import getpass
import os
import shlex
import sys
from typing import Final

from amaimedia import (
    AmaiClient,
    AmaiError,
    APIConnectionError,
    APIResponseValidationError,
    AuthenticationError,
    Charge,
    Quote,
    ServerError,
)
from amaimedia._constants import ENV_API_KEY

from ._console import Console, fail
from ._exit_codes import ExitCode, exit_code_for, is_tls_failure

__all__ = ["call_api", "hint_refused_key", "read_api_key", "report_error"]

# After these, a spend may have charged without the answer arriving.
_UNCLEAR_OUTCOME: Final = (APIConnectionError, ServerError, APIResponseValidationError)


def call_api(args: argparse.Namespace) -> int:
    """Run `check` or `spend` as the arguments say, and print the outcome."""
    key = read_api_key(args)
    if key is None:
        return ExitCode.AUTH
    console = Console(key)
    try:
        # Without --api-key-stdin the client reads AMAI_API_KEY itself, so that its
        # messages about a malformed key name the variable. The SDK's log lines (-v)
        # quote what the server said, which may be the key echoed back.
        with (
            console.key_kept_out_of_logs(),
            AmaiClient(
                key if args.api_key_stdin else None,
                base_url=args.base_url,
                timeout=args.timeout,
                max_retries=args.max_retries,
            ) as client,
        ):
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
        return report_error(console, args, exc)
    except KeyboardInterrupt:
        console.err("interrupted")
        return ExitCode.INTERRUPTED
    if args.command == "check":
        return _show_quote(console, args, quote)
    return _show_charge(console, args, charge)


def read_api_key(args: argparse.Namespace) -> str | None:
    """The key, from stdin with `--api-key-stdin`, else from `AMAI_API_KEY`.

    Returns:
        The key, or `None` when there is none; the error line is printed then.
    """
    if args.api_key_stdin:
        key = _read_key()
        missing = "no API key: --api-key-stdin read an empty line"
    else:
        key = os.environ.get(ENV_API_KEY, "")
        missing = f"no API key: set {ENV_API_KEY}, or pipe the key to --api-key-stdin"
    if not key:
        fail(missing)
        return None
    return key


def _read_key() -> str:
    if sys.stdin.isatty():
        # Typed at a terminal: not echoed, so it stays off the screen and out of recordings.
        return getpass.getpass(f"{ENV_API_KEY}: ").strip()
    return sys.stdin.readline().strip()


def _show_quote(console: Console, args: argparse.Namespace, quote: Quote) -> int:
    if args.json:
        console.out(quote.model_dump_json())
    else:
        verdict = "allowed" if quote.allowed else "NOT allowed (the balance does not cover it)"
        console.out(
            f"{args.tool} x{args.units}: {verdict}, costs {quote.cost_tokens} tokens, "
            f"balance after {quote.balance_after}"
        )
    return ExitCode.OK if quote.allowed else ExitCode.INSUFFICIENT_CREDITS


def _show_charge(console: Console, args: argparse.Namespace, charge: Charge) -> int:
    if args.json:
        console.out(charge.model_dump_json())
    else:
        console.out(
            f"{args.tool} x{args.units}: charged {charge.charged} tokens, "
            f"balance after {charge.balance_after}, reference {charge.reference}"
        )
    return ExitCode.OK


def report_error(console: Console, args: argparse.Namespace, exc: AmaiError) -> int:
    """Print `exc` and the hint that goes with it; return its exit status."""
    console.err(str(exc))
    if isinstance(exc, AuthenticationError):
        hint_refused_key(console, args)
    elif is_tls_failure(exc):
        console.err(
            "the server's certificate is not trusted: if your network signs TLS with its "
            "own CA, set SSL_CERT_FILE to that CA's certificate (PEM); nothing was sent",
            label="hint",
        )
    elif exc.reference is not None and isinstance(exc, _UNCLEAR_OUTCOME):
        console.err(
            "the spend may have been charged; repeat it with "
            f"--reference {shlex.quote(exc.reference)}, which never charges twice",
            label="hint",
        )
    return exit_code_for(exc)


def hint_refused_key(console: Console, args: argparse.Namespace) -> None:
    """The hint after a 401: which key to check, and where to replace a revoked one."""
    source = "the key read from stdin" if args.api_key_stdin else ENV_API_KEY
    console.err(
        f"check {source}; a revoked key must be replaced at amaimedia.com/account",
        label="hint",
    )
