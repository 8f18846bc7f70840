"""Which certificates the SDK's pools trust: `verify=`, else the environment, else certifi.

As httpx decides, for every pool the SDK creates, whatever sends the bytes:

- `verify=True` (the default): with `trust_env`, the CA bundle in `SSL_CERT_FILE`, else the
  directory in `SSL_CERT_DIR`; otherwise certifi's bundle, which httpx depends on;
- `verify="/path/to/ca.pem"` (a file or a directory of hashed certificates), or an
  `ssl.SSLContext` of your own, used as it is;
- `verify=False`: no verification at all, with a warning logged, since anyone on the path
  could then read the API key; an `ssl.SSLContext` that checks no certificate
  (`verify_mode=CERT_NONE`) or no host name (`check_hostname=False`) gets the same warning.

A pool passed in as `http_client` is the caller's, and so is its `verify`: the SDK does
not look inside it, and logs nothing about it.

The paths are checked when the client is built, so that a typo fails at start-up; the
certificates are loaded, which takes tens of milliseconds, when the first connection
needs them, off the event loop for the async pools.
"""

from __future__ import annotations

import functools
import os
import ssl

from amaimedia._logging import logger
from amaimedia._types import VerifyTypes

from ._fork import ForkSafeLock

__all__ = ["TLSSettings"]


class TLSSettings:
    """Where one pool's trusted certificates come from, checked; the context made once.

    Build it with `create()`.

    Args:
        context: An `ssl.SSLContext` given as it is, or `None` to build one.
        verify: `False` to verify nothing.
        cafile: A CA bundle to trust instead of certifi's.
        capath: A directory of CA certificates to trust instead of certifi's.
        source: What chose the certificates, for error messages (`SSL_CERT_FILE`).
        keylog: Whether a context the SDK builds keeps the `SSLKEYLOGFILE` that Python's
            `ssl` module reads from the environment: only with `trust_env`.
    """

    __slots__ = (
        "_built",
        "_lock",
        "cafile",
        "capath",
        "context",
        "keylog",
        "source",
        "verify",
    )

    def __init__(
        self,
        *,
        context: ssl.SSLContext | None = None,
        verify: bool = True,
        cafile: str | None = None,
        capath: str | None = None,
        source: str = "certifi",
        keylog: bool = True,
    ) -> None:
        self.context = context
        self.keylog = keylog
        self.verify = verify
        self.cafile = cafile
        self.capath = capath
        self.source = source
        self._built = context
        self._lock = ForkSafeLock()

    def __repr__(self) -> str:
        return f"TLSSettings(source={self.source!r})"

    @classmethod
    def create(cls, verify: VerifyTypes, *, trust_env: bool) -> TLSSettings:
        """Check `verify` (and, with `trust_env`, `SSL_CERT_FILE`/`SSL_CERT_DIR`).

        Raises:
            TypeError: `verify` is of another type.
            ValueError: A CA path does not exist.
        """
        if isinstance(verify, ssl.SSLContext):
            _warn_if_unchecked(verify)
            return cls(context=verify, source="verify (an ssl.SSLContext)")
        if isinstance(verify, bool):
            if not verify:
                logger.warning(
                    "verify=False: TLS certificates are not checked, so anyone on the "
                    "network path can read the API key; use it only against a test server"
                )
                return cls(verify=False, source="verify=False", keylog=trust_env)
            if trust_env and os.environ.get("SSL_CERT_FILE"):
                return cls._from_path(os.environ["SSL_CERT_FILE"], "SSL_CERT_FILE", dir_ok=False)
            if trust_env and os.environ.get("SSL_CERT_DIR"):
                return cls._from_path(os.environ["SSL_CERT_DIR"], "SSL_CERT_DIR", file_ok=False)
            return cls(keylog=trust_env)
        if isinstance(verify, str | os.PathLike):
            return cls._from_path(os.fspath(verify), "verify", keylog=trust_env)
        raise TypeError(
            "verify must be True, False, a CA file or directory, or an ssl.SSLContext; "
            f"got {type(verify).__name__}"
        )

    @classmethod
    def _from_path(
        cls,
        path: str,
        source: str,
        *,
        file_ok: bool = True,
        dir_ok: bool = True,
        keylog: bool = True,
    ) -> TLSSettings:
        expanded = os.path.expanduser(path)
        if file_ok and os.path.isfile(expanded):
            return cls(cafile=expanded, source=f"{source} ({path})", keylog=keylog)
        if dir_ok and os.path.isdir(expanded):
            return cls(capath=expanded, source=f"{source} ({path})", keylog=keylog)
        kind = "file" if not dir_ok else "directory" if not file_ok else "file or directory"
        raise ValueError(f"{source} names no CA {kind}: {path!r} does not exist")

    def ssl_context(self) -> ssl.SSLContext:
        """The context for this pool's connections, built on first use, then shared.

        Raises:
            ValueError: The CA file or directory holds no usable certificate.
        """
        with self._lock:
            if self._built is None:
                # Keyed on the file's change time too: a CA bundle rotated on disk is read
                # afresh by the next client, as httpx reads it for each of its own.
                changed = _changed(self.cafile or self.capath)
                self._built = _context(
                    self.verify, self.cafile, self.capath, self.source, changed, self.keylog
                )
            return self._built

    @property
    def loaded(self) -> bool:
        """Whether `ssl_context()` returns at once: the certificates are loaded."""
        return self._built is not None


def _warn_if_unchecked(context: ssl.SSLContext) -> None:
    """Log, as for `verify=False`, a context that lets any certificate or host through."""
    if context.verify_mode == ssl.CERT_NONE:
        what = "checks no certificate (verify_mode=CERT_NONE)"
    elif not context.check_hostname:
        what = "checks no host name (check_hostname=False), so any valid certificate passes"
    else:
        return
    logger.warning(
        "verify is an ssl.SSLContext that %s: anyone on the network path can read the API "
        "key; use it only against a test server",
        what,
    )


def _changed(path: str | None) -> int:
    """When `path` last changed, in nanoseconds (0 for none, or one that is gone)."""
    if path is None:
        return 0
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return 0


@functools.lru_cache(maxsize=16)
def _context(
    verify: bool, cafile: str | None, capath: str | None, source: str, changed: int, keylog: bool
) -> ssl.SSLContext:
    """A context for these certificates (as of `changed`), loaded once, shared by every pool.

    Without `keylog`, it writes no TLS secrets to `SSLKEYLOGFILE`: Python's `ssl` module
    reads that variable whatever the caller's `trust_env`, and a file of session secrets
    decrypts a capture of the traffic, the key in it.
    """
    context = _loaded_context(verify, cafile, capath, source)
    if not keylog and getattr(context, "keylog_filename", None) is not None:
        context.keylog_filename = None  # type: ignore[assignment]
    return context


def _loaded_context(
    verify: bool, cafile: str | None, capath: str | None, source: str
) -> ssl.SSLContext:
    if not verify:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    if cafile is None and capath is None:
        import certifi  # a dependency of httpx: the bundle httpx trusts

        return ssl.create_default_context(cafile=certifi.where())
    try:
        return ssl.create_default_context(cafile=cafile, capath=capath)
    except (ssl.SSLError, OSError) as exc:  # OSError: it was removed since it was checked
        raise ValueError(f"{source} holds no usable CA certificate: {exc}") from None
