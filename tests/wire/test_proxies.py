"""Proxies and certificates as a deployment meets them, over real loopback sockets.

Every pool the SDK creates (the sync client's, the async client's, and the aiohttp
transport's) must honour `HTTP(S)_PROXY`, `ALL_PROXY`, `NO_PROXY`, `SSL_CERT_FILE` and
`SSL_CERT_DIR` as httpx does, and `proxy=`, `verify=` and `trust_env=False` when given; a
certificate that cannot be verified must fail at once, not after backoff; and plain
`http://` (only ever to the loopback) must never go through a proxy. One test body runs
against each of the three ways to send (`sender`).

The network is `tests/wire/net.py`: a recording CONNECT proxy and a TLS front, signed by
a private CA, before a `FakeAmaiServer().serve()`. Nothing is mocked at the socket level,
nothing leaves 127.0.0.1, and every socket has a timeout of a few seconds. Waits between
retries are recorded in `sender.sleeps`, never slept.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import inspect
import logging
import os
import socket
import ssl
import sys
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import httpx
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from amaimedia import AmaiClient, APIConnectionError, AsyncAmaiClient
from amaimedia.testing import FakeAmaiServer
from tests.wire.net import ConnectProxy, PrivateCA, TLSFront

TIMEOUT = 5.0  # seconds per attempt; loopback answers in milliseconds
BALANCE = 1_000
CHAT_PRICE = 5  # FakeAmaiServer.DEFAULT_PRICES["chat"]
KEY = "amai_live_test_0123456789abcdefWXYZ"  # for clients that never send
PROXY_USER = "deploy-user"
PROXY_PASSWORD = "pr0xy-s3cret-Pa55"

SENDERS = ("sync", "async", "aiohttp")
_MACHINE_VARIABLES = ("SSL_CERT_FILE", "SSL_CERT_DIR", "REQUEST_METHOD")
_PROXY_VARIABLES = {"http_proxy", "https_proxy", "all_proxy", "no_proxy"}


# On Python 3.10, asyncio leaves the transport of a failed TLS handshake unclosed (its
# sslproto was rewritten in 3.11), so each certificate aiohttp refuses leaves one to warn
# when collected. That leak is the interpreter's; on 3.11 and later a leak still fails.
if sys.version_info < (3, 11):
    pytestmark = pytest.mark.filterwarnings(
        "ignore:unclosed transport <asyncio.sslproto:ResourceWarning"
    )


@pytest.fixture(autouse=True)
def _no_machine_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only what a test sets counts: no proxy or certificate variable of the machine's."""
    for name in list(os.environ):
        if name.lower() in _PROXY_VARIABLES or name in _MACHINE_VARIABLES:
            monkeypatch.delenv(name)


# --- the ways to send -------------------------------------------------------------------


class Sender:
    """Builds clients of one kind, runs their calls, and closes them all at the end.

    `run()` returns a sync call's result, and runs an async one on the sender's own event
    loop (one loop for all the calls, as an application has). Waits between retries are
    recorded in `sleeps` instead of slept.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.sleeps: list[float] = []
        self._loop = None if kind == "sync" else asyncio.new_event_loop()
        self._clients: list[AmaiClient | AsyncAmaiClient] = []

    def client(self, key: str, base_url: str, **options: Any) -> Any:
        options.setdefault("timeout", TIMEOUT)
        options.setdefault("max_retries", 2)
        client: AmaiClient | AsyncAmaiClient
        if self.kind == "sync":
            client = AmaiClient(key, base_url=base_url, **options)
            client._sleep = self.sleeps.append
        else:
            if self.kind == "aiohttp":
                options["transport"] = "aiohttp"
            client = AsyncAmaiClient(key, base_url=base_url, **options)

            async def sleep(seconds: float) -> None:
                self.sleeps.append(seconds)

            client._sleep = sleep
        self._clients.append(client)
        return client

    def run(self, value: Any) -> Any:
        if inspect.isawaitable(value):
            assert self._loop is not None
            return self._loop.run_until_complete(value)
        return value

    def close(self) -> None:
        for client in self._clients:
            if isinstance(client, AsyncAmaiClient):
                self.run(client.aclose())
            else:
                client.close()
        if self._loop is not None:
            self._loop.close()


@pytest.fixture(params=SENDERS)
def sender(request: pytest.FixtureRequest) -> Iterator[Sender]:
    made = Sender(request.param)
    yield made
    made.close()


# --- the network ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def private_ca(tmp_path_factory: pytest.TempPathFactory) -> PrivateCA:
    return PrivateCA.create(tmp_path_factory.mktemp("private-ca"))


@pytest.fixture(scope="module")
def other_ca(tmp_path_factory: pytest.TempPathFactory) -> PrivateCA:
    """A CA that signed nothing here: trusting it alone refuses the front's certificate."""
    return PrivateCA.create(tmp_path_factory.mktemp("other-ca"))


@pytest.fixture
def fake() -> FakeAmaiServer:
    return FakeAmaiServer()


@pytest.fixture
def key(fake: FakeAmaiServer) -> str:
    return fake.create_key(balance=BALANCE)


@pytest.fixture
def plain(fake: FakeAmaiServer) -> Iterator[str]:
    """The fake over plain http: `http://127.0.0.1:<port>`."""
    with fake.serve() as base_url:
        yield base_url


@pytest.fixture
def front(plain: str, private_ca: PrivateCA) -> Iterator[TLSFront]:
    with TLSFront(plain, private_ca, timeout=TIMEOUT) as server:
        yield server


@pytest.fixture
def proxy() -> Iterator[ConnectProxy]:
    with ConnectProxy(timeout=TIMEOUT) as server:
        yield server


def closed_port() -> int:
    """A loopback port where nothing listens (free a moment ago)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def causes(exc: BaseException) -> list[BaseException]:
    """`exc` and what it was raised from, nearest first."""
    found: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in found:
        found.append(current)
        current = current.__cause__ or current.__context__
    return found


def frame_locals(exc: BaseException) -> str:
    """The locals of every frame in `exc`'s tracebacks, its chain's included, as an error
    tracker would show them; except this file's frames, whose locals hold the secrets."""
    shown = []
    for failure in causes(exc):
        for frame in traceback.StackSummary.extract(
            traceback.walk_tb(failure.__traceback__), capture_locals=True
        ):
            if frame.filename != __file__:
                shown.append(f"{frame.filename}:{frame.lineno} {frame.name} {frame.locals}")
    assert shown, "the failure must have frames to look at"
    return "\n".join(shown)


def assert_check_and_spend(
    sender: Sender, client: Any, fake: FakeAmaiServer, key: str, reference: str = "deploy-1"
) -> None:
    """`check` and `spend` both answered, and the fake charged exactly once."""
    quote = sender.run(client.check("chat"))
    assert quote.allowed
    assert quote.cost_tokens == CHAT_PRICE
    charge = sender.run(client.spend("chat", reference=reference))
    assert charge.charged == CHAT_PRICE
    assert [spend.reference for spend in fake.spends] == [reference]
    assert fake.balance(key) == BALANCE - CHAT_PRICE
    assert sender.sleeps == []


def assert_only_tunnels_to(proxy: ConnectProxy, target: str) -> None:
    """The proxy was used, and only for `CONNECT target` (a kept-alive tunnel or more)."""
    assert proxy.requests, "the proxy saw no request at all"
    assert {request.line for request in proxy.requests} == {f"CONNECT {target} HTTP/1.1"}


# --- 1. the environment -----------------------------------------------------------------


@pytest.mark.parametrize("variable", ["HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"])
def test_a_proxy_variable_tunnels_https_through_the_proxy(
    sender: Sender,
    variable: str,
    monkeypatch: pytest.MonkeyPatch,
    fake: FakeAmaiServer,
    key: str,
    front: TLSFront,
    proxy: ConnectProxy,
    private_ca: PrivateCA,
) -> None:
    monkeypatch.setenv(variable, proxy.url)
    monkeypatch.setenv("SSL_CERT_FILE", str(private_ca.pem))
    client = sender.client(key, front.url)

    assert_check_and_spend(sender, client, fake, key)
    assert_only_tunnels_to(proxy, f"localhost:{front.port}")


def test_a_proxy_variable_without_a_scheme_means_http(
    sender: Sender,
    monkeypatch: pytest.MonkeyPatch,
    fake: FakeAmaiServer,
    key: str,
    front: TLSFront,
    proxy: ConnectProxy,
    private_ca: PrivateCA,
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", f"127.0.0.1:{proxy.port}")
    monkeypatch.setenv("SSL_CERT_FILE", str(private_ca.pem))
    client = sender.client(key, front.url)

    assert_check_and_spend(sender, client, fake, key)
    assert_only_tunnels_to(proxy, f"localhost:{front.port}")


@pytest.mark.parametrize(
    "no_proxy",
    ["localhost", "example.com, localhost", "localhost:{port}", ".example.com,LOCALHOST", "*"],
)
@pytest.mark.parametrize("variable", ["NO_PROXY", "no_proxy"])
def test_no_proxy_naming_the_host_connects_directly(
    sender: Sender,
    variable: str,
    no_proxy: str,
    monkeypatch: pytest.MonkeyPatch,
    fake: FakeAmaiServer,
    key: str,
    front: TLSFront,
    proxy: ConnectProxy,
    private_ca: PrivateCA,
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", proxy.url)
    monkeypatch.setenv(variable, no_proxy.format(port=front.port))
    monkeypatch.setenv("SSL_CERT_FILE", str(private_ca.pem))
    client = sender.client(key, front.url)

    assert_check_and_spend(sender, client, fake, key)
    assert proxy.requests == []
    assert front.handshakes >= 1


@pytest.mark.parametrize(
    "no_proxy",
    [
        "example.com",
        "127.0.0.1",  # NO_PROXY matches the URL's host as written, never what it resolves to
        "localhost:1",
        "www.localhost",
        ".localhost",  # subdomains only
    ],
)
def test_no_proxy_naming_other_hosts_keeps_the_proxy(
    sender: Sender,
    no_proxy: str,
    monkeypatch: pytest.MonkeyPatch,
    fake: FakeAmaiServer,
    key: str,
    front: TLSFront,
    proxy: ConnectProxy,
    private_ca: PrivateCA,
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", proxy.url)
    monkeypatch.setenv("NO_PROXY", no_proxy)
    monkeypatch.setenv("SSL_CERT_FILE", str(private_ca.pem))
    client = sender.client(key, front.url)

    assert_check_and_spend(sender, client, fake, key)
    assert_only_tunnels_to(proxy, f"localhost:{front.port}")


def test_trust_env_false_ignores_the_proxy_and_certificate_variables(
    sender: Sender,
    monkeypatch: pytest.MonkeyPatch,
    fake: FakeAmaiServer,
    key: str,
    front: TLSFront,
    proxy: ConnectProxy,
    private_ca: PrivateCA,
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", proxy.url)
    monkeypatch.setenv("ALL_PROXY", proxy.url)
    monkeypatch.setenv("SSL_CERT_FILE", str(private_ca.pem))
    monkeypatch.setenv("SSL_CERT_DIR", str(private_ca.directory))

    # Certifi's bundle alone, and no proxy: the private CA's certificate is refused.
    refusing = sender.client(key, front.url, trust_env=False)
    with pytest.raises(APIConnectionError) as info:
        sender.run(refusing.check("chat"))
    assert info.value.retryable is False
    assert front.handshakes == 1
    assert proxy.requests == []

    trusting = sender.client(key, front.url, trust_env=False, verify=str(private_ca.pem))
    assert_check_and_spend(sender, trusting, fake, key)
    assert proxy.requests == []


# --- 2. the explicit options ------------------------------------------------------------


def test_the_proxy_option_tunnels_https_without_any_variable(
    sender: Sender,
    fake: FakeAmaiServer,
    key: str,
    front: TLSFront,
    proxy: ConnectProxy,
    private_ca: PrivateCA,
) -> None:
    client = sender.client(key, front.url, proxy=proxy.url, verify=str(private_ca.pem))

    assert_check_and_spend(sender, client, fake, key)
    assert_only_tunnels_to(proxy, f"localhost:{front.port}")


def test_the_proxy_option_replaces_the_proxy_variables_no_proxy_included(
    sender: Sender,
    monkeypatch: pytest.MonkeyPatch,
    fake: FakeAmaiServer,
    key: str,
    front: TLSFront,
    proxy: ConnectProxy,
    private_ca: PrivateCA,
) -> None:
    # As in httpx: proxy= takes every request, and the variables are not read at all.
    monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{closed_port()}")
    monkeypatch.setenv("NO_PROXY", "localhost")
    monkeypatch.setenv("SSL_CERT_FILE", str(private_ca.pem))
    client = sender.client(key, front.url, proxy=httpx.URL(proxy.url))

    assert_check_and_spend(sender, client, fake, key)
    assert_only_tunnels_to(proxy, f"localhost:{front.port}")


VERIFY_FORMS: dict[str, Callable[[PrivateCA], Any]] = {
    "a CA file, str": lambda ca: str(ca.pem),
    "a CA file, Path": lambda ca: ca.pem,
    "a CA directory": lambda ca: str(ca.directory),
    "an SSLContext": lambda ca: ssl.create_default_context(cafile=str(ca.pem)),
}


@pytest.mark.parametrize("form", list(VERIFY_FORMS))
def test_the_verify_option_trusts_a_private_ca_over_ssl_cert_file(
    sender: Sender,
    form: str,
    monkeypatch: pytest.MonkeyPatch,
    fake: FakeAmaiServer,
    key: str,
    front: TLSFront,
    private_ca: PrivateCA,
    other_ca: PrivateCA,
) -> None:
    # verify= wins over the variables, which name a CA that signed nothing here.
    monkeypatch.setenv("SSL_CERT_FILE", str(other_ca.pem))
    monkeypatch.setenv("SSL_CERT_DIR", str(other_ca.directory))
    client = sender.client(key, front.url, verify=VERIFY_FORMS[form](private_ca))

    assert_check_and_spend(sender, client, fake, key)
    assert front.failed_handshakes == []


def test_ssl_cert_dir_trusts_a_directory_of_hashed_certificates(
    sender: Sender,
    monkeypatch: pytest.MonkeyPatch,
    fake: FakeAmaiServer,
    key: str,
    front: TLSFront,
    private_ca: PrivateCA,
) -> None:
    monkeypatch.setenv("SSL_CERT_DIR", str(private_ca.directory))
    client = sender.client(key, front.url)

    assert_check_and_spend(sender, client, fake, key)


@pytest.mark.parametrize(
    ("cert_file", "cert_dir", "trusted"),
    [("private", "other", True), ("other", "private", False)],
    ids=["SSL_CERT_FILE right", "SSL_CERT_FILE wrong"],
)
def test_ssl_cert_file_wins_over_ssl_cert_dir(
    sender: Sender,
    cert_file: str,
    cert_dir: str,
    trusted: bool,
    monkeypatch: pytest.MonkeyPatch,
    fake: FakeAmaiServer,
    key: str,
    front: TLSFront,
    private_ca: PrivateCA,
    other_ca: PrivateCA,
) -> None:
    authorities = {"private": private_ca, "other": other_ca}
    monkeypatch.setenv("SSL_CERT_FILE", str(authorities[cert_file].pem))
    monkeypatch.setenv("SSL_CERT_DIR", str(authorities[cert_dir].directory))
    client = sender.client(key, front.url)

    if trusted:
        assert_check_and_spend(sender, client, fake, key)
    else:
        with pytest.raises(APIConnectionError, match="SSL_CERT_FILE"):
            sender.run(client.check("chat"))


def test_verify_false_connects_to_any_certificate_and_says_so(
    sender: Sender,
    caplog: pytest.LogCaptureFixture,
    fake: FakeAmaiServer,
    key: str,
    front: TLSFront,
) -> None:
    caplog.set_level(logging.WARNING, logger="amaimedia")
    client = sender.client(key, front.url, verify=False)

    assert_check_and_spend(sender, client, fake, key)
    assert any("verify=False" in record.getMessage() for record in caplog.records)


# --- 3. proxy credentials ---------------------------------------------------------------


@pytest.mark.parametrize("given_as", ["HTTPS_PROXY", "proxy="])
def test_proxy_credentials_reach_the_proxy_and_nothing_else(
    sender: Sender,
    given_as: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    fake: FakeAmaiServer,
    key: str,
    front: TLSFront,
    proxy: ConnectProxy,
    private_ca: PrivateCA,
) -> None:
    for name in ("amaimedia", "httpx", "httpcore"):
        caplog.set_level(logging.DEBUG, logger=name)
    url = proxy.url_with(PROXY_USER, PROXY_PASSWORD)
    monkeypatch.setenv("SSL_CERT_FILE", str(private_ca.pem))
    options: dict[str, Any] = {}
    if given_as == "proxy=":
        options["proxy"] = url
    else:
        monkeypatch.setenv("HTTPS_PROXY", url)

    client = sender.client(key, front.url, **options)
    assert_check_and_spend(sender, client, fake, key)
    # And a call that fails through the same proxy, retried once: its error and the log
    # line of its retry must not carry the credentials either.
    failing = sender.client(key, f"https://localhost:{closed_port()}", max_retries=1, **options)
    with pytest.raises(APIConnectionError) as info:
        sender.run(failing.check("chat"))

    token = base64.b64encode(f"{PROXY_USER}:{PROXY_PASSWORD}".encode()).decode()
    assert proxy.requests
    assert {request.proxy_authorization for request in proxy.requests} == {f"Basic {token}"}
    assert any("Retrying" in record.getMessage() for record in caplog.records)
    # The proxy's credentials are for the proxy: the API never sees them, even redacted.
    recorded = fake.requests
    assert recorded
    assert all("proxy-authorization" not in dict(record.headers) for record in recorded)
    seen = [
        caplog.text,
        *(record.getMessage() for record in caplog.records),
        *(f"{exc}\n{exc!r}" for exc in causes(info.value)),
        frame_locals(info.value),
        repr(client),
        repr(failing),
        repr(fake),
        *(f"{record!r} {record.headers!r} {record.content!r}" for record in recorded),
    ]
    for secret in (PROXY_PASSWORD, token, key):
        leaks = [text for text in seen if secret in text]
        assert not leaks, f"{secret[:6]}… appears in: {leaks}"


def test_an_unreachable_proxy_is_a_connection_error_without_its_credentials(
    sender: Sender, key: str, front: TLSFront, private_ca: PrivateCA
) -> None:
    url = f"http://{PROXY_USER}:{PROXY_PASSWORD}@127.0.0.1:{closed_port()}"
    client = sender.client(key, front.url, proxy=url, verify=str(private_ca.pem))

    with pytest.raises(APIConnectionError) as info:
        sender.run(client.check("chat"))
    assert info.value.retryable  # a proxy that is down may be back on the next attempt
    assert all(PROXY_PASSWORD not in f"{exc}{exc!r}" for exc in causes(info.value))
    assert front.handshakes == 0


def test_the_credentials_looked_for_in_tracebacks_are_each_form_they_take() -> None:
    from amaimedia._transports._proxies import proxy_credentials

    encoded = httpx.URL("http://ops%40corp:p%3Ass%2Fw0rd@proxy.test:3128")
    token = base64.b64encode(b"ops@corp:p:ss/w0rd").decode()
    assert proxy_credentials(encoded) == ("ops%40corp:p%3Ass%2Fw0rd", "p:ss/w0rd", token)
    assert proxy_credentials(httpx.URL("http://proxy.test:3128")) == ()
    assert proxy_credentials(None) == ()


# --- 4. a certificate no retry can fix --------------------------------------------------


@pytest.mark.parametrize("route", ["direct", "through HTTPS_PROXY"])
def test_an_untrusted_certificate_fails_at_once_and_says_what_to_do(
    sender: Sender,
    route: str,
    monkeypatch: pytest.MonkeyPatch,
    fake: FakeAmaiServer,
    key: str,
    front: TLSFront,
    proxy: ConnectProxy,
) -> None:
    if route != "direct":
        monkeypatch.setenv("HTTPS_PROXY", proxy.url)
    client = sender.client(key, front.url, max_retries=2)

    with pytest.raises(APIConnectionError) as info:
        sender.run(client.check("chat"))
    error = info.value
    assert front.handshakes == 1  # one attempt, no retry
    assert sender.sleeps == []  # no backoff
    assert len(front.failed_handshakes) == 1
    assert "SSL_CERT_FILE" in str(error)
    assert "verify=" in str(error)
    assert error.retryable is False
    assert any(isinstance(cause, ssl.SSLCertVerificationError) for cause in causes(error))

    with pytest.raises(APIConnectionError) as spent:
        sender.run(client.spend("chat", reference="job-tls"))
    assert spent.value.retryable is False
    assert spent.value.reference == "job-tls"
    assert front.handshakes == 2
    assert sender.sleeps == []
    assert fake.requests == []
    assert fake.spends == []
    if route != "direct":
        assert proxy.connect_targets() == [f"localhost:{front.port}"] * 2
    else:
        assert proxy.requests == []


def test_the_command_exits_8_with_a_hint_on_an_untrusted_certificate(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    fake: FakeAmaiServer,
    key: str,
    front: TLSFront,
) -> None:
    from amaimedia._cli import main

    monkeypatch.setenv("AMAI_API_KEY", key)
    monkeypatch.setenv("AMAI_BASE_URL", front.url)
    code = main(["check", "chat", "--max-retries", "2", "--timeout", str(TIMEOUT)])
    captured = capsys.readouterr()

    assert code == 8
    assert "TLS" in captured.err
    hints = [line for line in captured.err.splitlines() if line.startswith("amaimedia: hint:")]
    assert any("SSL_CERT_FILE" in line for line in hints), captured.err
    assert key not in captured.out + captured.err
    assert front.handshakes == 1
    assert fake.requests == []


def test_the_command_trusts_ssl_cert_file(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    fake: FakeAmaiServer,
    key: str,
    front: TLSFront,
    private_ca: PrivateCA,
) -> None:
    from amaimedia._cli import main

    monkeypatch.setenv("AMAI_API_KEY", key)
    monkeypatch.setenv("AMAI_BASE_URL", front.url)
    monkeypatch.setenv("SSL_CERT_FILE", str(private_ca.pem))
    code = main(["spend", "chat", "--reference", "cli-1", "--timeout", str(TIMEOUT)])
    captured = capsys.readouterr()

    assert code == 0, captured.err
    assert [spend.reference for spend in fake.spends] == ["cli-1"]


# --- 5. plain http to the loopback ------------------------------------------------------


@pytest.mark.parametrize("variable", ["HTTP_PROXY", "http_proxy", "ALL_PROXY"])
def test_plain_http_to_the_loopback_never_goes_through_a_proxy_variable(
    sender: Sender,
    variable: str,
    monkeypatch: pytest.MonkeyPatch,
    fake: FakeAmaiServer,
    key: str,
    plain: str,
    proxy: ConnectProxy,
) -> None:
    monkeypatch.setenv(variable, proxy.url)
    monkeypatch.setenv("HTTPS_PROXY", proxy.url)
    client = sender.client(key, plain)

    assert_check_and_spend(sender, client, fake, key)
    assert proxy.requests == []


def test_plain_http_to_the_loopback_never_goes_through_the_proxy_option(
    sender: Sender, fake: FakeAmaiServer, key: str, plain: str, proxy: ConnectProxy
) -> None:
    client = sender.client(key, plain, proxy=proxy.url)

    assert_check_and_spend(sender, client, fake, key)
    assert proxy.requests == []


def test_https_to_the_loopback_address_still_honours_https_proxy(
    sender: Sender,
    monkeypatch: pytest.MonkeyPatch,
    fake: FakeAmaiServer,
    key: str,
    front: TLSFront,
    proxy: ConnectProxy,
    private_ca: PrivateCA,
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", proxy.url)
    monkeypatch.setenv("SSL_CERT_FILE", str(private_ca.pem))
    client = sender.client(key, front.ip_url)

    assert_check_and_spend(sender, client, fake, key)
    assert_only_tunnels_to(proxy, f"127.0.0.1:{front.port}")


# --- 6. a malformed proxy setting -------------------------------------------------------

_SECRET = "s3cret-in-the-proxy-url"

MALFORMED_PROXIES = [
    pytest.param(
        "HTTPS_PROXY",
        f"http://user:{_SECRET}@[bad",
        id="unclosed IPv6 bracket",
    ),
    pytest.param("ALL_PROXY", f"ftp://user:{_SECRET}@x", id="a scheme no proxy has"),
    pytest.param("all_proxy", f"socks4://user:{_SECRET}@proxy.test", id="socks4, lower case"),
    pytest.param("HTTP_PROXY", f"http://user:{_SECRET}@proxy.test:port", id="a port not a number"),
    pytest.param("https_proxy", f"http://user:{_SECRET}@1.2.3.400:3128", id="a bad IPv4 address"),
    pytest.param("HTTPS_PROXY", f"http://user:{_SECRET}@", id="no host"),
    pytest.param(
        "HTTPS_PROXY",
        f"http://user:{_SECRET}/tail@proxy.test:3128",
        id="an unescaped slash in the password",
    ),
    pytest.param(
        "HTTPS_PROXY",
        f"http://user:{_SECRET}@xn--a:3128",
        id="an invalid IDNA host",
    ),
]


@pytest.mark.parametrize(("variable", "value"), MALFORMED_PROXIES)
def test_a_malformed_proxy_variable_fails_at_construction_without_quoting_it(
    sender: Sender, variable: str, value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(variable, value)

    with pytest.raises(ValueError, match=variable.upper()) as info:
        sender.client(KEY, "https://api.example.invalid")
    message = str(info.value)
    assert _SECRET not in message
    assert all(_SECRET not in f"{exc}{exc!r}" for exc in causes(info.value))


def test_a_malformed_proxy_option_fails_at_construction_without_quoting_it(
    sender: Sender,
) -> None:
    with pytest.raises(ValueError, match="proxy") as info:
        sender.client(
            KEY,
            "https://api.example.invalid",
            proxy=f"ftp://user:{_SECRET}@proxy.test",
        )
    assert all(_SECRET not in f"{exc}{exc!r}" for exc in causes(info.value))


# --- 7. the proxy rule is httpx's -------------------------------------------------------

_PROXY_NAMES = ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")
_NO_PROXY_HOSTS = (
    "example.com",
    ".example.com",
    "www.example.com",
    "ample.com",
    "api.test",
    "localhost",
    "LocalHost",
    "127.0.0.1",
    "10.0.0.1",
    "10.0.0.0/8",
    "::1",
)
_URL_HOSTS = (
    "example.com",
    "www.example.com",
    "a.www.example.com",
    "wwwexample.com",
    "ample.com",
    "api.test",
    "www.api.test",
    "localhost",
    "127.0.0.1",
    "10.0.0.1",
    "10.1.2.3",
    "[::1]",
    "other.test",
)


def _proxy_value(name: str) -> st.SearchStrategy[str]:
    # Each variable's proxy has a host of its own, so that a route names its source.
    host = f"{name.lower().replace('_', '-')}{'-upper' if name.isupper() else ''}.proxy.test"
    return st.builds(
        lambda scheme, port: f"{scheme}{host}{port}",
        st.sampled_from(["http://", "https://", ""]),
        st.sampled_from(["", ":3128"]),
    )


_no_proxy_entry = st.one_of(
    st.sampled_from(_NO_PROXY_HOSTS),
    st.builds(
        lambda host, port: f"{host}:{port}",
        st.sampled_from([host for host in _NO_PROXY_HOSTS if ":" not in host]),
        st.sampled_from([443, 8443]),
    ),
    st.builds(
        lambda scheme, host: f"{scheme}://{host}",
        st.sampled_from(["http", "https", "all"]),
        st.sampled_from(["example.com", "api.test", "localhost", "10.0.0.1"]),
    ),
    st.just("*"),
)


@st.composite
def environments(draw: st.DrawFn) -> dict[str, str]:
    found: dict[str, str] = {}
    for name in _PROXY_NAMES:
        if draw(st.booleans()):
            found[name] = draw(_proxy_value(name))
    for name in ("NO_PROXY", "no_proxy"):
        if draw(st.integers(0, 2)) == 0:
            entries = draw(st.lists(_no_proxy_entry, max_size=4))
            found[name] = draw(st.sampled_from([",", ", ", " , "])).join(entries)
    if draw(st.integers(0, 9)) == 0:
        found["REQUEST_METHOD"] = "GET"  # a CGI script: HTTP_PROXY is a request header
    return found


def urls(scheme: str) -> st.SearchStrategy[httpx.URL]:
    return st.builds(
        lambda host, port: httpx.URL(f"{scheme}://{host}{port}/api/v1/tools/check"),
        st.sampled_from(_URL_HOSTS),
        st.sampled_from(["", ":443", ":8443", ":80"]),
    )


@functools.lru_cache(maxsize=1)
def _context() -> ssl.SSLContext:
    # One context for every httpx client below: the route does not depend on it, and
    # building one per client and proxy would make most of the property's run time.
    return ssl.create_default_context()


def httpx_choice(url: httpx.URL) -> tuple[str, str, int | None] | None:
    """The proxy httpx itself sends `url` through in this environment, or `None`."""
    with httpx.Client(trust_env=True, verify=_context()) as http:
        transport = http._transport_for_url(url)
        if transport is http._transport:
            return None
        proxy_url = transport._pool._proxy_url  # type: ignore[attr-defined]
        return (proxy_url.scheme.decode(), proxy_url.host.decode(), proxy_url.port)


@settings(max_examples=200, derandomize=True, deadline=None)
@given(environment=environments(), url=urls("https"))
def test_the_proxy_for_an_https_url_is_the_one_httpx_picks(
    environment: dict[str, str], url: httpx.URL
) -> None:
    from amaimedia._transports._proxies import ProxyRoutes

    with mock.patch.dict(os.environ, environment):
        expected = httpx_choice(url)
        chosen = ProxyRoutes.from_environment().proxy_for(url)
    event("httpx: direct" if expected is None else f"httpx: through {expected[1]}")
    assert (None if chosen is None else (chosen.scheme, chosen.host, chosen.port)) == expected


@settings(max_examples=100, derandomize=True, deadline=None)
@given(environment=environments(), url=urls("http"))
def test_a_plain_http_url_never_has_a_proxy(environment: dict[str, str], url: httpx.URL) -> None:
    from amaimedia._transports._proxies import ProxyRoutes

    with mock.patch.dict(os.environ, environment):
        assert ProxyRoutes.from_environment().proxy_for(url) is None
    assert ProxyRoutes.explicit("http://proxy.test:3128").proxy_for(url) is None
    https = url.copy_with(scheme="https")
    assert ProxyRoutes.explicit("http://proxy.test:3128").proxy_for(https) == httpx.URL(
        "http://proxy.test:3128"
    )


# --- 4. TLS secrets ---------------------------------------------------------------------


@pytest.fixture
def no_cached_contexts() -> Iterator[None]:
    """No certificate context cached before the test, nor kept after it.

    Python's ssl module reads `SSLKEYLOGFILE` when a context is made: one cached before the
    test set it would write nowhere, and one made during the test must not write to its
    file from a later test's pool.
    """
    from amaimedia._transports import _tls

    _tls._context.cache_clear()
    yield
    _tls._context.cache_clear()


@pytest.mark.usefixtures("no_cached_contexts")
@pytest.mark.parametrize("trust_env", [False, True], ids=["trust_env=False", "trust_env=True"])
def test_tls_secrets_reach_sslkeylogfile_only_with_trust_env(
    sender: Sender,
    fake: FakeAmaiServer,
    key: str,
    private_ca: PrivateCA,
    front: TLSFront,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    trust_env: bool,
) -> None:
    # Set once the front's own context exists, so that only the client's could write.
    keylog = tmp_path / "tls-secrets.log"
    monkeypatch.setenv("SSLKEYLOGFILE", str(keylog))
    client = sender.client(key, front.url, trust_env=trust_env, verify=str(private_ca.pem))

    sender.run(client.check("chat"))

    # Python writes a comment line when it opens the file: the secrets are the other lines.
    written = keylog.read_text() if keylog.exists() else ""
    secrets = [line for line in written.splitlines() if not line.startswith("#")]
    if trust_env:
        # As Python's ssl module does for any context made with create_default_context().
        assert any(line.startswith("CLIENT_TRAFFIC_SECRET_0 ") for line in secrets), written
    else:
        assert secrets == []
