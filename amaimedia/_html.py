"""Small HTML tables for notebooks: what `_repr_html_` of results, meters and errors returns.

Jupyter shows an object's `_repr_html_()` instead of its `repr()` when a cell ends with
it. The table is plain markup: every value is escaped, there is no script, and no colour
or font is set, so it reads the same in light and dark themes.
"""

from __future__ import annotations

import html
import json
from collections.abc import Iterable
from typing import Final

__all__ = ["html_table"]

# A value longer than this (an HTML error page from the edge, say) is cut: the table is a
# summary, and the whole value is still on the object.
MAX_VALUE_LENGTH: Final = 500

_CELL: Final = '<{tag} style="text-align: left">{text}</{tag}>'


def html_table(caption: str, rows: Iterable[tuple[str, object]]) -> str:
    """An HTML table of `(name, value)` rows under `caption`, every string escaped.

    Args:
        caption: The table's caption, the class name of what it shows.
        rows: The names and values, one row each, in order.

    Returns:
        The markup, one line per row.
    """
    lines = [f"<table>\n<caption>{html.escape(caption)}</caption>"]
    for name, value in rows:
        header = _CELL.format(tag="th", text=html.escape(name))
        cell = _CELL.format(tag="td", text=html.escape(_text(value)))
        lines.append(f"<tr>{header}{cell}</tr>")
    lines.append("</table>")
    return "\n".join(lines)


def _text(value: object) -> str:
    if value is None:
        text = "—"
    elif isinstance(value, str):
        text = value
    elif isinstance(value, dict | list):
        # An error body as the server sent it: JSON reads better than a Python repr.
        text = json.dumps(value, ensure_ascii=False, default=str)
    else:
        text = str(value)
    if len(text) > MAX_VALUE_LENGTH:
        text = text[: MAX_VALUE_LENGTH - 1] + "…"
    return text
