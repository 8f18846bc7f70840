"""Which proxy a request goes through: the environment's, or one given, as httpx decides.

With `trust_env` (the default) the SDK reads `HTTP_PROXY`, `HTTPS_PROXY`, `ALL_PROXY` and
`NO_PROXY` (either case) once, when a client is built, and applies them by httpx's rules
to every pool it creates, whatever sends the bytes (httpx or aiohttp):

- `HTTPS_PROXY` for `https://` URLs, `HTTP_PROXY` for `http://`, `ALL_PROXY` for both, a
  value without a scheme meaning `http://`;
- `NO_PROXY` lists hosts reached directly: `example.com` (and its subdomains),
  `.example.com` (subdomains only), an IP address, `localhost`, a `scheme://host[:port]`,
  or `*` for every host;
- the most specific rule wins: one with a port, then the longer host, then the longer
  scheme.

An explicit `proxy=` takes every request, as it does in httpx. One rule is the SDK's own:
a plain `http://` request is never sent through a proxy. The SDK allows plain http only to
the loopback, and a proxy would carry the API key off the machine in clear text; an
`https://` request to the loopback still honours the proxy, encrypted end to end.
"""

from __future__ import annotations

import base64
import ipaddress
import re
from dataclasses import dataclass
from typing import Final

import httpx

__all__ = ["ProxyRoutes", "proxy_credentials", "proxy_url"]

_PROXY_SCHEMES: Final = ("http", "https", "socks5", "socks5h")
_VARIABLES: Final = {"http": "HTTP_PROXY", "https": "HTTPS_PROXY", "all": "ALL_PROXY"}
# A host name as httpx leaves it after IDNA: dot-separated labels of letters, digits and
# hyphens (or underscores, which some internal names have).
_HOST_NAME: Final = re.compile(
    r"^(?!-)[a-z0-9_-]{1,63}(?<!-)(\.(?!-)[a-z0-9_-]{1,63}(?<!-))*\.?$", re.I
)


@dataclass(frozen=True)
class _Rule:
    """One route: the URLs it matches, and the proxy they take (`None`: direct)."""

    scheme: str  # "" for every scheme
    host: str  # "" for every host
    host_pattern: re.Pattern[str] | None
    port: int | None
    proxy: httpx.URL | None

    @property
    def priority(self) -> tuple[int, int, int]:
        return (0 if self.port is not None else 1, -len(self.host), -len(self.scheme))

    def matches(self, url: httpx.URL) -> bool:
        if self.scheme and self.scheme != url.scheme:
            return False
        if self.host_pattern is not None and not self.host_pattern.match(url.host):
            return False
        return self.port is None or self.port == url.port


def _rule(pattern: str, proxy: httpx.URL | None) -> _Rule:
    """A rule from a pattern such as `all://*example.com` or `https://`."""
    url = httpx.URL(pattern)
    host = "" if url.host == "*" else url.host
    if not host:
        host_pattern = None
    elif host.startswith("*."):
        host_pattern = re.compile(f"^.+\\.{re.escape(host[2:])}$")
    elif host.startswith("*"):
        host_pattern = re.compile(f"^(.+\\.)?{re.escape(host[1:])}$")
    else:
        host_pattern = re.compile(f"^{re.escape(host)}$")
    scheme = "" if url.scheme == "all" else url.scheme
    return _Rule(scheme, host, host_pattern, url.port, proxy)


def proxy_url(value: str | httpx.URL, source: str) -> httpx.URL:
    """A proxy URL, checked; `source` names where it came from in the error.

    Neither the value nor a parser's account of it is ever quoted in an error: it may
    carry the proxy's password, and a password with an unescaped `/` or `@` would come
    out, in part, as the "port" or "host" a parser complains about.

    Raises:
        ValueError: It is not an absolute URL with a valid host, or its scheme is not one
            a proxy can have.
    """
    text = str(value)
    if "://" not in text:
        text = "http://" + text
    unusable = f"{source} is not a usable proxy URL"
    url = _parse(text)
    if url is None:
        raise ValueError(
            f"{unusable}: it does not parse (a password's special characters, such as "
            "'/', '@' or '#', must be percent-encoded)"
        )
    scheme, host = url
    if scheme not in _PROXY_SCHEMES:
        raise ValueError(
            f"{unusable}: its scheme {scheme!r} is not one of {', '.join(_PROXY_SCHEMES)}"
        )
    if not host:
        raise ValueError(f"{unusable}: it names no host")
    if not _valid_host(host):
        raise ValueError(f"{unusable}: its host is not a valid host name or IP address")
    return httpx.URL(text)


def proxy_credentials(proxy: httpx.URL | None) -> tuple[str, ...]:
    """The forms a proxy's credentials take on their way to the proxy.

    As written in its URL, decoded, and as the token of the `Proxy-Authorization: Basic`
    header made from them; empty when the proxy has none.
    """
    if proxy is None or not proxy.userinfo:
        return ()
    token = base64.b64encode(f"{proxy.username}:{proxy.password}".encode()).decode("ascii")
    return (proxy.userinfo.decode("ascii"), proxy.password, token)


def _parse(text: str) -> tuple[str, str] | None:
    """The scheme and host of a URL, or `None` if it does not parse.

    `None` rather than the parser's exception: the caller's error must not chain one
    whose message may quote part of a password.
    """
    try:
        url = httpx.URL(text)
        return url.scheme, url.host  # the host is decoded (IDNA) only when read
    except (httpx.InvalidURL, UnicodeError, ValueError):
        return None


def _valid_host(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return _HOST_NAME.match(host) is not None
    return True


@dataclass(frozen=True)
class ProxyRoutes:
    """The routes of one pool, fixed when its client was built."""

    rules: tuple[_Rule, ...] = ()

    @classmethod
    def explicit(cls, proxy: str | httpx.URL) -> ProxyRoutes:
        """Every request through `proxy` (but plain http, which goes direct)."""
        return cls((_rule("all://", proxy_url(proxy, "proxy")),))

    @classmethod
    def from_environment(cls) -> ProxyRoutes:
        """The routes the proxy variables describe; none when they are unset.

        The variables are read as the standard library reads them (and httpx with it):
        lower case wins over upper case, and in a CGI script (`REQUEST_METHOD` set)
        `HTTP_PROXY`, which a request header can set, is ignored.

        Raises:
            ValueError: A proxy variable holds a value that is not a proxy URL.
        """
        import urllib.request  # not at import: only a client building its own pool reads it

        found = urllib.request.getproxies()
        rules: dict[str, httpx.URL | None] = {}
        for scheme in ("http", "https", "all"):
            if found.get(scheme):
                rules[f"{scheme}://"] = proxy_url(found[scheme], _VARIABLES[scheme])
        for entry in (host.strip() for host in found.get("no", "").split(",")):
            if entry == "*":
                return cls()
            if entry:
                rules[_no_proxy_pattern(entry)] = None
        ordered = sorted((_rule(p, proxy) for p, proxy in rules.items()), key=_priority)
        return cls(tuple(ordered))

    def proxy_for(self, url: httpx.URL) -> httpx.URL | None:
        """The proxy for a request to `url`, or `None` to connect directly."""
        if url.scheme == "http":
            return None
        for rule in self.rules:
            if rule.matches(url):
                return rule.proxy
        return None


def _priority(rule: _Rule) -> tuple[int, int, int]:
    return rule.priority


def _no_proxy_pattern(entry: str) -> str:
    if "://" in entry:
        return entry
    address = entry.split("/")[0]
    try:
        parsed = ipaddress.ip_address(address.strip("[]"))
    except ValueError:
        parsed = None
    if isinstance(parsed, ipaddress.IPv4Address):
        return f"all://{entry}"
    if isinstance(parsed, ipaddress.IPv6Address):
        return f"all://[{entry.strip('[]')}]"
    if entry.lower() == "localhost":
        return f"all://{entry}"
    return f"all://*{entry}"
