"""Client configuration: where each setting comes from, and what makes it valid.

Every setting is checked here, once, when a client is built or copied with
`with_options`, so that a bad setting fails before any request and not halfway
through a job.
"""

from __future__ import annotations

import ipaddress
import math
import os
import platform
import sys
from dataclasses import dataclass, field
from functools import cache

import httpx

from ._auth import ApiKey
from ._constants import (
    ACCEPTED_ENCODINGS,
    CHECK_PATH,
    DEFAULT_BASE_URL,
    ENV_API_KEY,
    ENV_BASE_URL,
    SPEND_PATH,
)
from ._exceptions import AmaiError
from ._types import TimeoutTypes, VerifyTypes
from ._version import __version__

__all__ = [
    "ClientConfig",
    "TransportOptions",
    "check_runtime",
    "is_loopback",
    "resolve_api_key",
    "resolve_base_url",
    "resolve_max_retries",
    "resolve_max_retry_after",
    "resolve_timeout",
    "resolve_total_timeout",
    "user_agent",
]


@dataclass(frozen=True)
class ClientConfig:
    """The validated settings of one client. Immutable: `with_options` builds a new one."""

    api_key: ApiKey
    base_url: httpx.URL
    timeout: httpx.Timeout
    max_retries: int
    max_retry_after: float
    total_timeout: float | None = None
    check_url: httpx.URL = field(init=False, repr=False)
    spend_url: httpx.URL = field(init=False, repr=False)
    # Built once per configuration, not per request; holds the bearer token, so it stays
    # out of the repr even though httpx would mask it.
    headers: httpx.Headers = field(init=False, repr=False)

    def __post_init__(self) -> None:
        root = str(self.base_url).rstrip("/")
        object.__setattr__(self, "check_url", httpx.URL(root + CHECK_PATH))
        object.__setattr__(self, "spend_url", httpx.URL(root + SPEND_PATH))
        headers = httpx.Headers(
            {
                "Accept": "application/json",
                # Only the codings the SDK decodes within its bounds (see _answer.py),
                # whatever httpx would ask for with brotli or zstandard installed.
                "Accept-Encoding": ", ".join(ACCEPTED_ENCODINGS),
                "Content-Type": "application/json",
                "User-Agent": user_agent(),
                "Authorization": f"Bearer {self.api_key.reveal()}",
            }
        )
        object.__setattr__(self, "headers", headers)

    @classmethod
    def create(
        cls,
        *,
        api_key: str | None,
        base_url: str | httpx.URL | None,
        timeout: TimeoutTypes,
        max_retries: int,
        max_retry_after: float,
        total_timeout: float | None,
    ) -> ClientConfig:
        """Validate every setting, filling the unset ones from the environment."""
        try:
            key = resolve_api_key(api_key)
        finally:
            # From here on the key is only the redacting ApiKey: a bad setting below
            # raises through this frame, whose locals error trackers show.
            del api_key
        return cls(
            api_key=key,
            base_url=resolve_base_url(base_url),
            timeout=resolve_timeout(timeout),
            max_retries=resolve_max_retries(max_retries),
            max_retry_after=resolve_max_retry_after(max_retry_after),
            total_timeout=resolve_total_timeout(total_timeout),
        )


@dataclass(frozen=True)
class TransportOptions:
    """What a client was given for its own pool; checked by the transport that uses it.

    Attributes:
        verify: The certificates to trust (see `_transports/_tls.py`).
        proxy: A proxy for every request, instead of the environment's.
        trust_env: Whether the proxy and certificate variables count.
    """

    verify: VerifyTypes = True
    proxy: str | httpx.URL | None = None
    trust_env: bool = True

    @property
    def given(self) -> bool:
        """Whether any option differs from its default."""
        return self.verify is not True or self.proxy is not None or self.trust_env is not True


def resolve_api_key(api_key: str | None) -> ApiKey:
    """The key given, else `AMAI_API_KEY`; an `AmaiError` that says how to set one if neither."""
    # A key refused here must not stay in this frame's locals, which error trackers show
    # (and whose names, such as `from_env`, their scrubbing does not recognise).
    if api_key is not None:
        try:
            return ApiKey(api_key)
        except BaseException:
            del api_key
            raise
    from_env = os.environ.get(ENV_API_KEY)
    if not from_env:
        raise AmaiError(
            f"No API key: pass api_key=... to the client or set the {ENV_API_KEY} "
            "environment variable. Create a key at amaimedia.com/account under API keys."
        )
    try:
        return ApiKey(from_env, source=f"the api_key from {ENV_API_KEY}")
    except BaseException:
        del from_env
        raise


def resolve_base_url(base_url: str | httpx.URL | None) -> httpx.URL:
    """The URL given, else `AMAI_BASE_URL`, else production; plain http only on loopback."""
    source = "base_url"
    if base_url is None:
        from_env = os.environ.get(ENV_BASE_URL)
        if from_env:
            base_url, source = from_env, f"the base_url from {ENV_BASE_URL}"
        else:
            base_url = DEFAULT_BASE_URL
    if not isinstance(base_url, str | httpx.URL):
        raise TypeError(f"base_url must be a str or httpx.URL, got {type(base_url).__name__}")
    try:
        url = httpx.URL(base_url)
    except httpx.InvalidURL as exc:
        raise ValueError(f"{source} is not a valid URL: {exc}") from None
    # Checked first, and never quoted: the URL would carry a password into the message.
    if url.userinfo:
        raise ValueError(f"{source} must not contain credentials; pass the key as api_key")
    if url.scheme not in ("http", "https") or not url.host:
        raise ValueError(
            f"{source} must be an absolute http(s) URL such as {DEFAULT_BASE_URL!r}, "
            f"got {str(url)!r}"
        )
    if url.query or url.fragment:
        raise ValueError(f"{source} must not have a query string or fragment")
    if url.scheme == "http" and not is_loopback(url.host):
        raise ValueError(
            f"{source} {str(url)!r} uses plain http, which would send the API key in clear; "
            "use https (plain http is allowed only for localhost and 127.0.0.0/8 or [::1])"
        )
    return url


def is_loopback(host: str) -> bool:
    """Whether `host` names this machine: `localhost`, `127.0.0.0/8` or `::1`."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def resolve_timeout(timeout: TimeoutTypes) -> httpx.Timeout:
    """Seconds, an `httpx.Timeout`, or `None` for none at all.

    httpx accepts `httpx.Timeout(-1)` and fails on the first request with a `ValueError`
    that names no setting; each limit is checked here instead.
    """
    if isinstance(timeout, httpx.Timeout):
        for phase, limit in timeout.as_dict().items():
            _check_phase(phase, limit)
        return timeout
    if timeout is None:
        return httpx.Timeout(None)
    if isinstance(timeout, bool) or not isinstance(timeout, int | float):
        raise TypeError(
            f"timeout must be a number of seconds, an httpx.Timeout or None, "
            f"got {type(timeout).__name__}"
        )
    seconds = _as_float("timeout", timeout)
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
    return httpx.Timeout(seconds)


def _check_phase(phase: str, limit: object) -> None:
    """One limit of an `httpx.Timeout`: `None`, or a positive, finite number of seconds."""
    if limit is None:
        return
    where = f"timeout: the {phase} limit of the httpx.Timeout"
    if isinstance(limit, bool) or not isinstance(limit, int | float):
        raise TypeError(f"{where} must be a number of seconds or None, got {type(limit).__name__}")
    if not math.isfinite(_as_float("timeout", limit)) or limit <= 0:
        raise ValueError(f"{where} must be a positive number of seconds or None, got {limit!r}")


def resolve_max_retries(max_retries: int) -> int:
    """A whole number of retries, zero or more."""
    if isinstance(max_retries, bool) or not isinstance(max_retries, int):
        raise TypeError(f"max_retries must be an int, got {type(max_retries).__name__}")
    if max_retries < 0:
        raise ValueError(f"max_retries must be 0 or more, got {max_retries}")
    return max_retries


def resolve_max_retry_after(max_retry_after: float) -> float:
    """The longest `Retry-After` the client will wait for, in seconds: finite, 0 or more.

    Infinity would make every `Retry-After` one to wait for, `1e308` seconds included.
    """
    if isinstance(max_retry_after, bool) or not isinstance(max_retry_after, int | float):
        raise TypeError(
            f"max_retry_after must be a number of seconds, got {type(max_retry_after).__name__}"
        )
    seconds = _as_float("max_retry_after", max_retry_after)
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(
            "max_retry_after must be a finite number of seconds, 0 or more, "
            f"got {max_retry_after!r}"
        )
    return seconds


def resolve_total_timeout(total_timeout: float | None) -> float | None:
    """Seconds for a whole call, retries and waits included, or `None` for no limit."""
    if total_timeout is None:
        return None
    if isinstance(total_timeout, bool) or not isinstance(total_timeout, int | float):
        raise TypeError(
            "total_timeout must be a number of seconds or None, "
            f"got {type(total_timeout).__name__}"
        )
    seconds = _as_float("total_timeout", total_timeout)
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(
            f"total_timeout must be a positive number of seconds or None, got {total_timeout!r}"
        )
    return seconds


def _as_float(name: str, value: float) -> float:
    """`value` as a float; an int beyond its range is a `ValueError` naming `name`."""
    try:
        return float(value)
    except OverflowError:
        raise ValueError(
            f"{name} is beyond the range of a float: an int of {int(value).bit_length()} bits"
        ) from None


def check_runtime(dangerously_allow_browser: bool) -> None:
    """Refuse to run in a browser, where the key would be exposed to every visitor."""
    in_browser = sys.platform == "emscripten" or "pyodide" in sys.modules
    if in_browser and not dangerously_allow_browser:
        raise AmaiError(
            "This looks like a browser runtime (Pyodide): the API key would be visible to "
            "anyone who opens the page. Call the API from a server instead, or pass "
            "dangerously_allow_browser=True if the key is the user's own."
        )


@cache
def user_agent() -> str:
    """`amaimedia-python/<version> (Python <version>; <OS>)`, computed once per process."""
    python = platform.python_version()
    return f"amaimedia-python/{__version__} (Python {python}; {platform.system() or 'unknown'})"
