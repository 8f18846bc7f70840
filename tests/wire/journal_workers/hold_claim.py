"""Claim one entry of a spend journal, say so, and hold it until killed.

Usage: python hold_claim.py JOURNAL ENTRY_ID

Prints `claimed` once the claim is held (or `refused`, and exits 1). Gives up after a
minute, so that a test that dies never leaves it behind for long.
"""

from __future__ import annotations

import sys
import threading

from amaimedia._journal._sqlite import SQLiteSpendJournal as SpendJournal


def main() -> int:
    journal, entry = sys.argv[1], int(sys.argv[2])
    if not SpendJournal(journal).claim(entry):
        print("refused", flush=True)
        return 1
    print("claimed", flush=True)
    threading.Event().wait(60)
    return 0


if __name__ == "__main__":
    sys.exit(main())
