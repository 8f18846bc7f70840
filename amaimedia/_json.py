"""JSON decoding that refuses deep nesting before `json.loads` recurses into it.

`json.loads` descends one C call per level of nesting and, on Python 3.10 and 3.11, those
calls share the interpreter's recursion limit with Python frames. A document nested a
hundred thousand levels deep (a tampered journal row, a hostile server body) therefore
decodes with almost no stack left, and anything Python runs in that moment, such as the
finalizers a garbage collection calls, fails with `RecursionError` and is reported as an
unraisable exception far from the cause. The SDK's own documents are two levels deep, so
such text is refused here, without recursion, before the decoder sees it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from itertools import accumulate
from typing import Any

__all__ = ["MAX_DEPTH", "loads", "too_deep"]

MAX_DEPTH = 200
"""How many levels of arrays and objects a decoded document may nest (pydantic's own JSON
parser stops at about the same depth)."""

# A JSON string (escapes included) or one bracket. Strings are matched whole so that the
# brackets inside them are not counted; a string left unterminated is invalid JSON anyway.
_STRING_OR_BRACKET = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]', re.DOTALL)
_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}


def loads(
    text: str | bytes,
    *,
    max_depth: int = MAX_DEPTH,
    parse_constant: Callable[[str], Any] | None = None,
) -> Any:
    """`json.loads(text)`, refusing a document nested deeper than `max_depth` first.

    Args:
        text: The document, as text or as UTF-8 bytes.
        max_depth: The deepest nesting of arrays and objects accepted.
        parse_constant: As for `json.loads` (called for `NaN`, `Infinity`, `-Infinity`).

    Returns:
        The decoded document.

    Raises:
        ValueError: The document is nested deeper than `max_depth` (the message says so)
            or is not JSON (`json.JSONDecodeError`, a `ValueError`).
    """
    if too_deep(text, max_depth):
        raise ValueError(f"JSON nested deeper than {max_depth} levels is not decoded")
    return json.loads(text, parse_constant=parse_constant)


def too_deep(text: str | bytes, max_depth: int = MAX_DEPTH) -> bool:
    """Whether the arrays and objects of `text` nest deeper than `max_depth`.

    Text with no more brackets than that is answered by two counts. Other text is scanned,
    without recursion, up to the first bracket past the limit; brackets inside JSON strings
    do not count. For text that is not JSON the answer is only an estimate, which is all a
    refusal needs: `json.loads` rejects such text anyway.
    """
    if isinstance(text, str):
        if text.count("[") + text.count("{") <= max_depth:
            return False
    elif text.count(b"[") + text.count(b"{") <= max_depth:
        return False
    else:
        text = bytes(text).decode("utf-8", errors="replace")
    tokens = (match[0] for match in _STRING_OR_BRACKET.finditer(text))
    return any(depth > max_depth for depth in accumulate(_STEP.get(token, 0) for token in tokens))
