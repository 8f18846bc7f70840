"""The `amaimedia` command: quote, charge and replay from a shell, or run the offline fake.

```
amaimedia check chat --units 1
amaimedia spend dub --units 2.5 --reference job-42
amaimedia replay --journal /var/lib/app/spends.sqlite3
amaimedia fake-server --port 8787 --balance 10000
```

The key comes from `AMAI_API_KEY`, or from standard input with `--api-key-stdin`; never
from an option, whose value would be kept in the shell history and shown by `ps`. Requests
go through the public client only, so the command behaves exactly like a program would;
defaults and names (timeouts, variables) come from `amaimedia._constants`, their one source.

- `_parser.py`: the arguments and the help text.
- `_exit_codes.py`: one exit status per class of failure.
- `_console.py`: output with the key blanked out, and `--verbose`.
- `_api.py`: `check` and `spend`; `_replay.py`: `replay`; `_fake_server.py`: `fake-server`.
"""

from __future__ import annotations

from collections.abc import Sequence

from ._api import call_api
from ._console import debug_logging
from ._exit_codes import ExitCode
from ._fake_server import fake_server
from ._parser import build_parser
from ._replay import replay

__all__ = ["ExitCode", "main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the `amaimedia` command.

    Args:
        argv: The arguments, without the program name. Defaults to `sys.argv[1:]`.

    Returns:
        The exit status, one of `ExitCode`; `--help` lists them.
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        # argparse exits on --help, --version and usage errors; a caller that runs the
        # command in-process gets the status back instead.
        return int(exc.code or 0)
    with debug_logging(args.verbose):
        if args.command == "fake-server":
            return fake_server(args)
        if args.command == "replay":
            return replay(args)
        return call_api(args)
