"""Defaults and fixed names: every tunable number of the SDK is defined here."""

from __future__ import annotations

from datetime import timedelta
from typing import Final

DEFAULT_BASE_URL: Final = "https://api.amaimedia.com"
CHECK_PATH: Final = "/api/v1/tools/check"
SPEND_PATH: Final = "/api/v1/tools/spend"

DEFAULT_TIMEOUT: Final = 30.0
DEFAULT_MAX_RETRIES: Final = 2
# The documented rate-limit windows are 60 s, so a longer Retry-After means "not soon".
DEFAULT_MAX_RETRY_AFTER: Final = 60.0
# A Retry-After longer than a day is no wait a server means (`Retry-After: 1e308` cannot
# even be slept): it is taken for a broken header, as if there were none.
MAX_RETRY_AFTER_HEADER: Final = 86_400.0

# Exponential backoff with jitter between retries when the server gives no Retry-After.
INITIAL_RETRY_DELAY: Final = 0.5
MAX_RETRY_DELAY: Final = 8.0

ENV_API_KEY: Final = "AMAI_API_KEY"
ENV_BASE_URL: Final = "AMAI_BASE_URL"
ENV_LOG: Final = "AMAI_LOG"

LOGGER_NAME: Final = "amaimedia"

# How old a journal's entry may be for a replay to send it: the API does not say how long
# it remembers a reference (see _journal/_replay.py).
DEFAULT_MAX_AGE: Final = timedelta(days=7)

# The most of an answer's body the SDK reads, and the most it decodes that body to: the
# API's answers are under 200 bytes, and a few bytes of "gzip, gzip" can expand to gigabytes.
MAX_ANSWER_BYTES: Final = 1 << 20
# The content codings the SDK asks for (Accept-Encoding) and decodes, one at most.
ACCEPTED_ENCODINGS: Final = ("gzip", "deflate")

# The server does not publish a limit; this one catches mistakes (a whole document passed
# as a reference) with a clear error instead of an opaque 400.
MAX_REFERENCE_LENGTH: Final = 255
