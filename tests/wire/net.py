"""Loopback network doubles for the deployment tests: a CONNECT proxy and a TLS front.

Not collected (no `test_` prefix). Both are real servers on 127.0.0.1, one thread per
connection, bounded in connections, header size and idle time, and both free their port
and join every thread they started when their `with` block ends:

- `ConnectProxy`: an HTTP proxy that records each request line (and `Proxy-Authorization`)
  and then relays `CONNECT host:port` tunnels byte for byte, or forwards a plain
  absolute-form request (`POST http://127.0.0.1:…/… HTTP/1.1`), so that a test sees both
  that the proxy was used and that the call went through. It only ever connects to the
  loopback: any other target gets `403`.
- `TLSFront`: a TLS-terminating server whose certificate (for `localhost` and
  `127.0.0.1`) a private `trustme` CA signs, relaying the plaintext to a
  `FakeAmaiServer().serve()` URL. It counts the handshakes it was offered, which is how a
  test counts a client's attempts at a certificate it will refuse.
- `PrivateCA`: that CA as a PEM file (`SSL_CERT_FILE`, `verify=`) and as a directory of
  hashed names (`SSL_CERT_DIR`), the hash computed here as OpenSSL's `c_rehash` does, so
  that no `openssl` binary is needed.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import re
import select
import socket
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Final
from urllib.parse import urlsplit

import trustme
from cryptography import x509

__all__ = ["ConnectProxy", "PrivateCA", "ProxyRequest", "TLSFront", "subject_hash"]

_HOST: Final = "127.0.0.1"
_LOOPBACK_NAMES: Final = frozenset({"127.0.0.1", "localhost", "::1"})
_MAX_HEAD: Final = 64 * 1024
_MAX_BODY: Final = 1 << 20
_CHUNK: Final = 64 * 1024
_JOIN_TIMEOUT: Final = 5.0
# OpenSSL's isspace(), not Python's: only these count when a name is made canonical.
_ASCII_SPACE: Final = re.compile("[ \t\n\v\f\r]+")


# --- the private CA ---------------------------------------------------------------------


def subject_hash(name: x509.Name) -> str:
    """OpenSSL's `X509_NAME_hash` of `name`: the file name stem `c_rehash` gives a CA.

    SHA-1 of the name's canonical encoding (each RDN as a DER `SET`, its string values as
    lower-cased UTF8Strings with whitespace trimmed and collapsed, the outer `SEQUENCE`
    left out), the first four bytes read little-endian.
    """
    canonical = b"".join(
        _der(0x31, b"".join(_canonical_attribute(attribute) for attribute in rdn))
        for rdn in name.rdns
    )
    digest = hashlib.sha1(canonical).digest()
    return f"{int.from_bytes(digest[:4], 'little'):08x}"


def _canonical_attribute(attribute: x509.NameAttribute[str | bytes]) -> bytes:
    value = attribute.value
    text = value.decode("utf-8") if isinstance(value, bytes) else value
    folded = "".join(char.lower() if char.isascii() else char for char in text)
    collapsed = _ASCII_SPACE.sub(" ", folded).strip(" ")
    oid = _der(0x06, _oid_body(attribute.oid.dotted_string))
    return _der(0x30, oid + _der(0x0C, collapsed.encode("utf-8")))


def _oid_body(dotted: str) -> bytes:
    arcs = [int(part) for part in dotted.split(".")]
    body = bytearray([arcs[0] * 40 + arcs[1]])
    for arc in arcs[2:]:
        chunk = [arc & 0x7F]
        arc >>= 7
        while arc:
            chunk.append(0x80 | (arc & 0x7F))
            arc >>= 7
        body.extend(reversed(chunk))
    return bytes(body)


def _der(tag: int, body: bytes) -> bytes:
    length = len(body)
    if length < 0x80:
        return bytes([tag, length]) + body
    encoded = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(encoded)]) + encoded + body


@dataclass(frozen=True)
class PrivateCA:
    """A private CA, as a TLS-inspecting corporate network has one.

    Attributes:
        ca: The `trustme` CA, to issue server certificates.
        pem: Its certificate as a PEM file: for `SSL_CERT_FILE` or `verify=`.
        directory: A directory holding only that certificate under its hashed name
            (`<hash>.0`): for `SSL_CERT_DIR` or `verify=<directory>`.
    """

    ca: trustme.CA
    pem: Path
    directory: Path

    @classmethod
    def create(cls, where: Path) -> PrivateCA:
        """A fresh CA, its files written under `where`."""
        ca = trustme.CA()
        pem = where / "private-ca.pem"
        ca.cert_pem.write_to_path(str(pem))
        directory = where / "private-ca.d"
        directory.mkdir()
        certificate = x509.load_pem_x509_certificate(ca.cert_pem.bytes())
        (directory / f"{subject_hash(certificate.subject)}.0").write_bytes(ca.cert_pem.bytes())
        return cls(ca, pem, directory)


# --- threads and sockets shared by both servers -----------------------------------------


class _LoopbackServer:
    """A listening socket on 127.0.0.1 with one thread per connection, all joined on exit."""

    def __init__(self, *, max_connections: int, timeout: float) -> None:
        self._timeout = timeout
        self._slots = threading.BoundedSemaphore(max_connections)
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []
        self._stopping = threading.Event()
        self._listener: socket.socket | None = None
        self._wake_reader, self._wake_writer = socket.socketpair()
        self.port = 0

    def __enter__(self) -> _LoopbackServer:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            listener.bind((_HOST, 0))
            listener.listen(64)
        except OSError:
            listener.close()
            self._wake_reader.close()
            self._wake_writer.close()
            raise
        self._listener = listener
        self.port = listener.getsockname()[1]
        self._start(self._accept_loop, "accept")
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._stopping.set()
        self._wake_writer.send(b"\0")
        with self._lock:
            sockets = list(self._sockets)
        for sock in sockets:
            with contextlib.suppress(OSError):
                # The plain socket's shutdown, also for a TLS socket: it unblocks a
                # thread in recv without touching the TLS state another thread uses.
                socket.socket.shutdown(sock, socket.SHUT_RDWR)
        with self._lock:
            threads = list(self._threads)
        for thread in threads:
            thread.join(_JOIN_TIMEOUT)
        if self._listener is not None:
            self._listener.close()
        self._wake_reader.close()
        self._wake_writer.close()
        alive = [thread.name for thread in threads if thread.is_alive()]
        assert not alive, f"threads still running after {_JOIN_TIMEOUT} s: {alive}"

    def _start(self, target: Callable[[], None], name: str) -> None:
        thread = threading.Thread(target=target, name=f"{type(self).__name__}-{name}")
        thread.daemon = True
        with self._lock:
            self._threads.append(thread)
        thread.start()

    def _track(self, sock: socket.socket) -> None:
        sock.settimeout(self._timeout)
        with self._lock:
            self._sockets.add(sock)

    def _forget(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.discard(sock)
        sock.close()

    def _accept_loop(self) -> None:
        assert self._listener is not None
        while not self._stopping.is_set():
            select.select([self._listener, self._wake_reader], [], [])
            if self._stopping.is_set():
                return
            try:
                connection, _ = self._listener.accept()
            except OSError:
                continue
            if not self._slots.acquire(blocking=False):
                connection.close()  # bounded: one connection too many is refused
                continue
            self._track(connection)
            self._start(functools.partial(self._serve_and_release, connection), "connection")

    def _serve_and_release(self, connection: socket.socket) -> None:
        try:
            self._serve(connection)
        except (OSError, ValueError):
            pass  # a client that went away mid-exchange: the test sees it on its side
        finally:
            self._forget(connection)
            self._slots.release()

    def _serve(self, connection: socket.socket) -> None:
        raise NotImplementedError

    def _connect_upstream(self, host: str, port: int) -> socket.socket:
        upstream = socket.create_connection((host, port), timeout=self._timeout)
        self._track(upstream)
        return upstream


def _pipe(source: socket.socket, target: socket.socket) -> None:
    """Copy `source` to `target` until `source` ends, then end `target`'s sending side."""
    try:
        while True:
            data = source.recv(_CHUNK)
            if not data:
                break
            target.sendall(data)
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            target.shutdown(socket.SHUT_WR)


# --- the proxy --------------------------------------------------------------------------


@dataclass(frozen=True)
class ProxyRequest:
    """One request the proxy received, before it answered.

    Attributes:
        line: The request line, such as `"CONNECT localhost:4443 HTTP/1.1"`.
        proxy_authorization: The `Proxy-Authorization` header, or `None`.
    """

    line: str
    proxy_authorization: str | None

    @property
    def method(self) -> str:
        return self.line.split(" ", 1)[0]

    @property
    def target(self) -> str:
        parts = self.line.split(" ")
        return parts[1] if len(parts) > 1 else ""


class ConnectProxy(_LoopbackServer):
    """An HTTP proxy on 127.0.0.1 that records what it was asked, then does it.

    ```python
    with ConnectProxy() as proxy:
        monkeypatch.setenv("HTTPS_PROXY", proxy.url)
        ...
    assert proxy.connect_targets() == ["localhost:4443"]
    ```

    Args:
        max_connections: Connections served at once; one more is closed unanswered.
        timeout: Seconds any socket may sit idle before the proxy gives up on it.
    """

    def __init__(self, *, max_connections: int = 32, timeout: float = 5.0) -> None:
        super().__init__(max_connections=max_connections, timeout=timeout)
        self._requests: list[ProxyRequest] = []

    def __enter__(self) -> ConnectProxy:
        super().__enter__()
        return self

    @property
    def url(self) -> str:
        """`http://127.0.0.1:<port>`."""
        return f"http://{_HOST}:{self.port}"

    def url_with(self, user: str, password: str) -> str:
        """The proxy's URL with credentials in it (given already percent-encoded)."""
        return f"http://{user}:{password}@{_HOST}:{self.port}"

    @property
    def requests(self) -> list[ProxyRequest]:
        """Every request received, oldest first (a copy)."""
        with self._lock:
            return list(self._requests)

    def connect_targets(self) -> list[str]:
        """The `host:port` of every `CONNECT`, oldest first."""
        return [request.target for request in self.requests if request.method == "CONNECT"]

    def _serve(self, connection: socket.socket) -> None:
        read = _read_head(connection)
        if read is None:
            return
        head, rest = read
        lines = head.decode("latin-1").split("\r\n")
        headers = _headers(lines[1:])
        request = ProxyRequest(lines[0], headers.get("proxy-authorization"))
        with self._lock:
            self._requests.append(request)
        parts = lines[0].split(" ")
        if len(parts) != 3:
            _answer(connection, 400, "Bad Request")
        elif parts[0] == "CONNECT":
            self._tunnel(connection, parts[1], rest)
        elif parts[1].startswith("http://"):
            self._forward(connection, parts[0], parts[1], lines[1:], headers, rest)
        else:
            _answer(connection, 400, "Bad Request")

    def _tunnel(self, connection: socket.socket, target: str, rest: bytes) -> None:
        host, _, port = target.rpartition(":")
        host = host.strip("[]")
        if host not in _LOOPBACK_NAMES or not port.isdigit():
            _answer(connection, 403, "Forbidden")  # loopback only, never the network
            return
        try:
            upstream = self._connect_upstream(host, int(port))
        except OSError:
            _answer(connection, 502, "Bad Gateway")
            return
        try:
            connection.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
            if rest:
                upstream.sendall(rest)
            back = threading.Thread(target=_pipe, args=(upstream, connection), daemon=True)
            back.start()
            _pipe(connection, upstream)
            back.join(self._timeout + 1)
        finally:
            self._forget(upstream)

    def _forward(
        self,
        connection: socket.socket,
        method: str,
        target: str,
        lines: list[str],
        headers: dict[str, str],
        rest: bytes,
    ) -> None:
        url = urlsplit(target)
        if url.hostname not in _LOOPBACK_NAMES or url.port is None:
            _answer(connection, 403, "Forbidden")
            return
        length = headers.get("content-length", "0")
        if not length.isdigit() or int(length) > _MAX_BODY:
            _answer(connection, 400, "Bad Request")
            return
        body = rest
        while len(body) < int(length):
            chunk = connection.recv(_CHUNK)
            if not chunk:
                return
            body += chunk
        kept = [
            line
            for line in lines
            if line
            and line.split(":", 1)[0].strip().lower()
            not in ("proxy-authorization", "proxy-connection", "connection")
        ]
        path = url.path or "/"
        if url.query:
            path += "?" + url.query
        head = "\r\n".join([f"{method} {path} HTTP/1.1", *kept, "Connection: close", "", ""])
        try:
            upstream = self._connect_upstream(url.hostname, url.port)
        except OSError:
            _answer(connection, 502, "Bad Gateway")
            return
        try:
            upstream.sendall(head.encode("latin-1") + body[: int(length)])
            _pipe(upstream, connection)
        finally:
            self._forget(upstream)


def _read_head(connection: socket.socket) -> tuple[bytes, bytes] | None:
    """The request head up to its blank line, and whatever bytes came after it."""
    data = b""
    while b"\r\n\r\n" not in data:
        if len(data) > _MAX_HEAD:
            _answer(connection, 431, "Request Header Fields Too Large")
            return None
        chunk = connection.recv(_CHUNK)
        if not chunk:
            return None
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    return head, rest


def _headers(lines: list[str]) -> dict[str, str]:
    found: dict[str, str] = {}
    for line in lines:
        name, colon, value = line.partition(":")
        if colon:
            found[name.strip().lower()] = value.strip()
    return found


def _answer(connection: socket.socket, status: int, reason: str) -> None:
    with contextlib.suppress(OSError):
        head = f"HTTP/1.1 {status} {reason}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
        connection.sendall(head.encode())


# --- the TLS front ----------------------------------------------------------------------


class TLSFront(_LoopbackServer):
    """TLS on 127.0.0.1 in front of a plain-http server, with a private CA's certificate.

    ```python
    with fake.serve() as plain, TLSFront(plain, private_ca) as front:
        client = AmaiClient(key, base_url=front.url, verify=str(private_ca.pem))
    ```

    Args:
        backend: The plain `http://127.0.0.1:<port>` URL to relay to.
        authority: The CA that signs the front's certificate.
        max_connections: Connections served at once; one more is closed unanswered.
        timeout: Seconds any socket may sit idle (or a handshake may take).
    """

    def __init__(
        self,
        backend: str,
        authority: PrivateCA,
        *,
        max_connections: int = 32,
        timeout: float = 5.0,
    ) -> None:
        super().__init__(max_connections=max_connections, timeout=timeout)
        parsed = urlsplit(backend)
        assert parsed.scheme == "http", backend
        assert parsed.hostname in _LOOPBACK_NAMES, backend
        assert parsed.port is not None, backend
        self._backend = (parsed.hostname, parsed.port)
        self._context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._context.set_alpn_protocols(["http/1.1"])
        authority.ca.issue_cert("localhost", "127.0.0.1").configure_cert(self._context)
        self._handshakes = 0
        self._unsettled = 0
        self._settled = threading.Condition(self._lock)
        self._failures: list[str] = []

    def __enter__(self) -> TLSFront:
        super().__enter__()
        return self

    @property
    def url(self) -> str:
        """`https://localhost:<port>`: the name the certificate is for."""
        return f"https://localhost:{self.port}"

    @property
    def ip_url(self) -> str:
        """`https://127.0.0.1:<port>`: the certificate is for this address as well."""
        return f"https://{_HOST}:{self.port}"

    @property
    def handshakes(self) -> int:
        """How many TLS handshakes were begun, whether or not they completed."""
        with self._lock:
            return self._handshakes

    @property
    def failed_handshakes(self) -> list[str]:
        """Why each failed handshake failed, as the server side saw it.

        A client that refuses the certificate raises as soon as it has sent its alert,
        before the front has read it: this waits (up to the timeout) until every
        handshake begun has ended one way or the other.
        """
        with self._settled:
            self._settled.wait_for(lambda: self._unsettled == 0, self._timeout)
            return list(self._failures)

    def _serve(self, connection: socket.socket) -> None:
        with self._lock:
            self._handshakes += 1
            self._unsettled += 1
        try:
            # wrap_socket takes the accepted socket's file over (and its timeout); the
            # TLS socket is tracked in its place, and closed here on every path.
            tls = self._context.wrap_socket(
                connection, server_side=True, do_handshake_on_connect=False
            )
            self._track(tls)
        except OSError as exc:
            self._settle(f"{type(exc).__name__}: {exc}")
            return
        try:
            try:
                tls.do_handshake()
            except OSError as exc:  # ssl.SSLError among them
                self._settle(f"{type(exc).__name__}: {exc}")
                return
            self._settle(None)
            backend = self._connect_upstream(*self._backend)
            try:
                self._relay(tls, backend)
            finally:
                self._forget(backend)
        finally:
            self._forget(tls)

    def _settle(self, failure: str | None) -> None:
        with self._settled:
            self._unsettled -= 1
            if failure is not None:
                self._failures.append(failure)
            self._settled.notify_all()

    def _relay(self, tls: ssl.SSLSocket, backend: socket.socket) -> None:
        # One thread reads and writes both sides: an SSL object must not be used from
        # two threads at once, as a thread per direction would.
        while not self._stopping.is_set():
            if tls.pending():
                ready: list[socket.socket] = [tls]
            else:
                ready, _, _ = select.select([tls, backend], [], [], self._timeout)
                if not ready:
                    return  # idle for the whole timeout: a kept-alive connection, done
            for sock in ready:
                source, target = (tls, backend) if sock is tls else (backend, tls)
                data = source.recv(_CHUNK)
                if not data:
                    return
                target.sendall(data)
