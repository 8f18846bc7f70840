"""The API key: validated once, kept out of every repr, str and log line."""

from __future__ import annotations

from typing import Final, final

__all__ = ["ApiKey"]

KEY_PREFIX: Final = "amai_live_"
# Below this length the last four characters would give away too much of the secret.
_MIN_LENGTH_FOR_HINT: Final = 16


@final
class ApiKey:
    """An API key that only reveals itself on request.

    Its `repr` and `str` show at most the `amai_live_` prefix and the last four
    characters, so a client, a config object or a traceback can be printed safely.
    Validation errors describe the problem without quoting the value.
    """

    __slots__ = ("_secret",)

    def __init__(self, secret: object, *, source: str = "api_key") -> None:
        # `source` names where the key came from ("api_key", or "the api_key from
        # AMAI_API_KEY"), so the error points at the right place without quoting the key.
        # Error trackers show the locals of every frame of a traceback: the key refused
        # here must not be one of them, so it is deleted before raising.
        if not isinstance(secret, str):
            kind = type(secret).__name__
            del secret
            raise TypeError(f"{source} must be a str, got {kind}")
        refusal = _refusal(secret, source)
        if refusal is not None:
            del secret
            raise refusal
        self._secret = secret

    def reveal(self) -> str:
        """Return the secret itself, for the `Authorization` header and nothing else."""
        return self._secret

    @property
    def hint(self) -> str:
        """A recognisable, safe form of the key: `amai_live_…1a2b`."""
        secret = getattr(self, "_secret", "")
        if len(secret) < _MIN_LENGTH_FOR_HINT:
            return "…"
        prefix = KEY_PREFIX if secret.startswith(KEY_PREFIX) else ""
        return f"{prefix}…{secret[-4:]}"

    def __repr__(self) -> str:
        if not hasattr(self, "_secret"):
            # Refused by __init__: a traceback that shows its locals shows this one too.
            return "ApiKey(<not set>)"
        return f"ApiKey({self.hint!r})"

    __str__ = __repr__

    def __reduce__(self) -> str | tuple[object, ...]:
        # Pickling would write the secret to wherever the pickle goes (a cache, a queue).
        raise TypeError("an API key cannot be pickled; pass it to each process instead")


def _refusal(secret: str, source: str) -> ValueError | None:
    """Why `secret` cannot be an API key, as the error to raise; `None` if it can."""
    if not secret:
        return ValueError(f"{source} is empty")
    if any(c.isspace() for c in secret):
        return ValueError(
            f"{source} contains whitespace; copy the key again, without spaces or newlines"
        )
    if not secret.isascii() or not secret.isprintable():
        return ValueError(f"{source} contains characters that cannot appear in an API key")
    return None
