"""Open a spend journal in a fresh process and replay it, reporting what it did.

Usage: python replay.py JOURNAL [--wait | --list]

The key and the server come from `AMAI_API_KEY` and `AMAI_BASE_URL`. Prints `ready`
once the client is built (and, with `--wait`, replays only after a line on stdin), then
one JSON line: the references pending before the replay, those it charged, and those
still pending after it. With `--list` it only lists, and replays nothing.
"""

from __future__ import annotations

import argparse
import json
import sys

from amaimedia import AmaiClient


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("journal")
    parser.add_argument("--wait", action="store_true", help="replay after a line on stdin")
    parser.add_argument("--list", action="store_true", help="list the pending spends only")
    args = parser.parse_args()
    with AmaiClient(spend_journal=args.journal) as client:
        print("ready", flush=True)
        if args.wait:
            sys.stdin.readline()
        before = [spend.reference for spend in client.pending_spends()]
        charges = [] if args.list else [c.reference for c in client.replay_pending()]
        after = [spend.reference for spend in client.pending_spends()]
    print(json.dumps({"before": before, "charged": charges, "after": after}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
