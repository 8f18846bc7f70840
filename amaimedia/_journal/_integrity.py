"""Row authentication and scope derivation: what the API key lets a journal prove.

Anyone who can write a journal (a file in a shared directory, a role with `UPDATE` on the
table) could otherwise choose what the key is charged: rewrite a pending `chat x1` into
`dub x240`, or flip a row the server already charged back to pending. So every row carries
an authentication code (`mac`), an HMAC-SHA256 over what a replay would act on:

    scope, tool, units (as stored), reference, created_at (to the microsecond), state
    (and, for a done row, the tokens charged)

A row whose code does not match is refused: never sent, reported, logged. The code needs
a key only the holder of the API key can derive, so a row cannot be forged or changed
without it; the scope and the entry's identity (its `(scope, tool, reference)`, unique in
the journal) are covered, so a row cannot be moved to another account or swapped with
another; `state` is covered, so a done row flipped back to pending no longer matches.

What the code does not cover: `attempts`, `last_error` and `error_code` (the history of
failures, shown to people, never acted upon) and the database's own `id`. And it cannot
tell a row from an older version of itself: someone who saved a pending row can put it
back after it was marked done. Such a replay sends the same tool, units and reference
again, which the server answers without charging twice, and `created_at` being covered,
the age rule still keeps it from being sent after the server may have forgotten the
reference. Deleting rows cannot be detected either; it only ever loses a charge, never
adds one.

The scope: `HMAC(scope key, salt, base URL)`, where the salt is 16 random bytes made with
the journal. It names one key's entries in one journal, and nothing else: it differs from
one journal (and machine) to the next, so it is no fingerprint of the key that could be
matched across journals, and it reveals nothing of the key. Version 1 of the layout stored
`sha256(base_url + key)[:32]`, the same everywhere; `JournalKeys.legacy_scope` finds those
rows, which are never sent until adopted explicitly (see `replay_pending()`).

Both keys are derived from the API key with HKDF-SHA256 (RFC 5869) and a fixed label; the
API key itself is not kept, and nothing derived from it leaves memory but the scope and
the codes.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Final, final

if TYPE_CHECKING:
    import httpx

    from amaimedia._auth import ApiKey
    from amaimedia._types import Units

    from ._protocol import PendingSpend

__all__ = ["JournalKeys", "created_at_of", "encode_units", "new_salt"]

# The HKDF salt: a fixed label that keeps these keys apart from any other use of the key.
_EXTRACT_LABEL: Final = b"amaimedia spend journal"
_ROW_LABEL: Final = b"row authentication v2"
_SCOPE_LABEL: Final = b"scope v2"
# What a row's code says it is, before its fields.
_ROW_DOMAIN: Final = b"amaimedia.spend/2"
_SCOPE_LENGTH: Final = 32
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MICROSECOND: Final = timedelta(microseconds=1)
SALT_BYTES: Final = 16


def new_salt() -> str:
    """A journal's random salt, made once with the journal (hex).

    From `os.urandom`, as `secrets` does, without importing a module by a name that an
    application's own `secrets.py` on `sys.path` would shadow.
    """
    return os.urandom(SALT_BYTES).hex()


def encode_units(units: Units) -> str:
    """Units as a backend stores them: JSON, the text a row's code covers."""
    return json.dumps(units)


def created_at_of(moment: datetime) -> int:
    """A timestamp as a row's code covers it: whole microseconds since 1970 (UTC).

    Raises:
        ValueError: `moment` is naive.
    """
    if moment.tzinfo is None:
        raise ValueError("a journal timestamp must be aware")
    return (moment - _EPOCH) // _MICROSECOND


@final
class JournalKeys:
    """What one API key (and base URL) gives a journal: scopes and row codes, not the key.

    Args:
        api_key: The key; only keys derived from it are kept.
        base_url: The API the entries are spent on.
    """

    __slots__ = ("_root", "_row_key", "_scope_key", "legacy_scope")

    def __init__(self, api_key: ApiKey, base_url: httpx.URL) -> None:
        root = str(base_url).rstrip("/")
        secret = api_key.reveal().encode()
        pseudo_random = hmac.digest(_EXTRACT_LABEL, secret, "sha256")
        self._row_key = _expand(pseudo_random, _ROW_LABEL)
        self._scope_key = _expand(pseudo_random, _SCOPE_LABEL)
        self._root = root.encode()
        # Layout 1's scope: how the rows an older SDK wrote under this key are found.
        self.legacy_scope = hashlib.sha256(f"{root}\n".encode() + secret).hexdigest()[:32]
        del secret

    def __repr__(self) -> str:
        return "JournalKeys(...)"

    def __reduce__(self) -> str | tuple[object, ...]:
        # Whoever has these can write rows the journal trusts: they stay in this process.
        raise TypeError("journal keys cannot be pickled")

    def scope(self, salt: str) -> str:
        """This key's scope in the journal whose salt is `salt`."""
        message = _fields(b"scope", salt.encode(), self._root)
        return hmac.new(self._scope_key, message, "sha256").hexdigest()[:_SCOPE_LENGTH]

    def seal(self, scope: str, spend: PendingSpend, state: str, charged: int | None = None) -> str:
        """The code of a row holding `spend` in `scope`, in `state`."""
        return hmac.new(self._row_key, _row(scope, spend, state, charged), "sha256").hexdigest()

    def verify(self, mac: str, scope: str, spend: PendingSpend) -> bool:
        """Whether `mac` is this key's code of `spend`, pending, in `scope`."""
        return hmac.compare_digest(mac.encode(), self.seal(scope, spend, "pending").encode())


def _expand(pseudo_random: bytes, label: bytes) -> bytes:
    """HKDF-Expand (RFC 5869) of one SHA-256 block: 32 bytes for `label`."""
    return hmac.digest(pseudo_random, label + b"\x01", "sha256")


def _row(scope: str, spend: PendingSpend, state: str, charged: int | None) -> bytes:
    parts = [
        _ROW_DOMAIN,
        scope.encode(),
        spend.tool.encode(),
        encode_units(spend.units).encode(),
        spend.reference.encode(),
        str(created_at_of(spend.created_at)).encode(),
        state.encode(),
    ]
    if charged is not None:
        parts.append(str(int(charged)).encode())
    return _fields(*parts)


def _fields(*parts: bytes) -> bytes:
    """Fields, each prefixed by its length: no two lists of fields encode alike."""
    return b"".join(len(part).to_bytes(4, "big") + part for part in parts)
