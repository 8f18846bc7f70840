"""Tracebacks that never show a secret, even with their frames' local variables.

httpcore keeps a request's raw headers, the `Authorization` header among them, in the
local variables of the frames that write them to the socket (the h11 event, the bytes to
send), and a proxy's `Proxy-Authorization` header in those that open a tunnel. A failure
raised while those frames run, such as a write that timed out on a stalled connection, a
connection reset in the middle of a request or a proxy that refused the tunnel, carries
them in its traceback; anything that shows tracebacks with their locals (error trackers
do so by default, `traceback` with `capture_locals=True`) would show the secret. Before a
transport failure leaves the SDK's transports (for the proxy's credentials) or is wrapped
in the SDK's own exception (for the API key), the frames that hold one are cut out of its
tracebacks; the rest of each traceback stays, so the failure still shows where it began.
"""

from __future__ import annotations

import sys
from collections.abc import Collection
from types import FrameType, TracebackType
from typing import Final

__all__ = ["forget_frames_holding"]

# httpx and httpcore chain two or three exceptions; this bounds a cycle or a long chain.
_MAX_CHAINED: Final = 16


def forget_frames_holding(exc: BaseException, secrets: Collection[str], what: str) -> int:
    """Cut every frame whose locals show one of `secrets` out of the tracebacks of a failure.

    The exceptions chained to `exc` (`__cause__` and `__context__`) lose theirs too.
    A note on each exception that lost frames says so (Python 3.11 and later).

    Args:
        exc: A failure of a transport, about to reach the caller.
        secrets: The texts that must not show; empty ones are ignored.
        what: What they are, for the note: "the API key", "the proxy's credentials".

    Returns:
        How many frames were cut.
    """
    looked_for = tuple(secret for secret in secrets if secret)
    if not looked_for:
        return 0
    cut = 0
    seen: set[int] = set()
    pending: list[BaseException] = [exc]
    while pending and len(seen) < _MAX_CHAINED:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        cut += _cut_frames(current, looked_for, what)
        pending.extend(e for e in (current.__cause__, current.__context__) if e is not None)
    return cut


def _cut_frames(exc: BaseException, secrets: tuple[str, ...], what: str) -> int:
    cut = 0
    kept: TracebackType | None = None
    entry = exc.__traceback__
    while entry is not None:
        following = entry.tb_next
        if _holds(entry.tb_frame, secrets):
            cut += 1
            if kept is None:
                exc.__traceback__ = following
            else:
                kept.tb_next = following
        else:
            kept = entry
        entry = following
    if cut:
        _note(
            exc,
            f"amaimedia: {cut} frame(s) whose local variables held {what} are left out "
            "of this traceback",
        )
    return cut


def _note(exc: BaseException, note: str) -> None:
    # Python 3.10 has no notes; the matrix's 3.10 leg runs the other branch.
    if sys.version_info >= (3, 11):  # pragma: no branch
        exc.add_note(note)


def _holds(frame: FrameType, secrets: tuple[str, ...]) -> bool:
    for value in frame.f_locals.values():
        try:
            shown = value if isinstance(value, str) else repr(value)
        except Exception:
            return True  # what cannot be shown here could still show the key elsewhere
        if any(secret in shown for secret in secrets):
            return True
    return False
