"""`printable()`: text from the server, made safe to put in a message or a log line.

`str(error)` is one log line, and the command prints it to a terminal. A server (or a
proxy, or anything else on the path) that puts a newline in its message would inject a
fake log line; one that sends terminal escapes (`ESC ]0;…BEL` sets the window title,
`ESC [2J` clears the screen, `0x9b` is the same in the 8-bit form) would drive the
terminal of whoever reads it. So every string from the server that the SDK shows goes
through `printable()` first; the attributes that hold what the server sent (an error's
`body`, `error`, `request_id`) keep it as it was, but for the request's own key, which
`_response.py` blanks wherever a server echoed it.
"""

from __future__ import annotations

import re
from typing import Final

__all__ = ["printable"]

# C0 and C1 control characters and DEL; the line and paragraph separators, which some
# log viewers break lines at; and the bidirectional controls, which reorder what a reader
# sees ("Trojan Source").
_UNPRINTABLE: Final = re.compile(
    "[\x00-\x1f\x7f-\x9f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069]"
)
_SHORT: Final = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}


def printable(text: str) -> str:
    r"""`text` with each control character written as its escape, as `repr()` writes it.

    A newline becomes `\n` and ESC `\x1b` (a backslash, then the letters): the same text,
    visibly, on one line. Everything else, non-ASCII letters included, is kept.
    """
    if _UNPRINTABLE.search(text) is None:
        return text
    return _UNPRINTABLE.sub(_escape, text)


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    short = _SHORT.get(char)
    if short is not None:
        return short
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"
