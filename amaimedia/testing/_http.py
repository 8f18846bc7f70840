"""The fake over real HTTP on the loopback interface, with the standard library only.

One thread per connection (`ThreadingHTTPServer`), HTTP/1.1 with keep-alive, bound to
127.0.0.1 alone. Every request goes to the same handler as the in-process transports;
this module only reads requests off the socket and writes answers (or cuts) back. The
one exception is a body that cannot be read safely (chunked, no valid Content-Length, or
over 1 MiB): it is refused here, with a JSON error, and never reaches the fake's records.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import socketserver
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Final

from ._app import Reply, json_reply
from ._transport import Dispatch

__all__ = ["serve"]

_HOST: Final = "127.0.0.1"
# A test body is a few dozen bytes; anything near this size is a mistake, refused unread.
_MAX_BODY: Final = 1 << 20


@contextlib.contextmanager
def serve(dispatch: Dispatch, port: int) -> Iterator[str]:
    """Serve `dispatch` on `127.0.0.1:port` (0 for a free port) until the block ends.

    Yields:
        The base URL, such as `http://127.0.0.1:54321`.

    Raises:
        OSError: The port cannot be bound (it is in use, or privileged).
    """
    server = _Server(port, dispatch)
    thread = threading.Thread(target=server.accept_loop, name="amaimedia-fake-server", daemon=True)
    thread.start()
    try:
        yield f"http://{_HOST}:{server.server_address[1]}"
    finally:
        server.stop()
        thread.join()
        server.close()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # The default backlog of 5 stalls tests that open dozens of connections at once.
    request_queue_size = 128

    def __init__(self, port: int, dispatch: Dispatch) -> None:
        self.dispatch = dispatch
        self.stopping = threading.Event()
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__((_HOST, port), _Handler)
        # Wakes the accept loop at once on stop; serve_forever would poll instead, and
        # make every `with fake.serve()` block last up to a poll interval longer.
        self._wake_reader, self._wake_writer = socket.socketpair()

    def server_bind(self) -> None:
        # HTTPServer.server_bind asks DNS for the host's full name, which can stall for
        # seconds on a machine without a resolver, and is not needed here.
        socketserver.TCPServer.server_bind(self)
        self.server_name = _HOST
        self.server_port = self.server_address[1]

    def accept_loop(self) -> None:
        """Accept connections, each served by its own thread, until `stop()`."""
        with selectors.DefaultSelector() as selector:
            selector.register(self.socket, selectors.EVENT_READ)
            selector.register(self._wake_reader, selectors.EVENT_READ)
            while True:
                selector.select()
                if self.stopping.is_set():
                    return
                self._accept()

    def _accept(self) -> None:
        try:
            request, client_address = self.get_request()
        except OSError:
            return  # the client gave up before it was accepted, as serve_forever allows
        with self._connections_lock:
            self._connections.add(request)
        self.process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def stop(self) -> None:
        """Stop the accept loop, and cut short any answer waiting out a fault's delay."""
        self.stopping.set()
        self._wake_writer.send(b"\0")

    def close(self) -> None:
        """End every open connection, wait for their threads, and free the port."""
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            # A kept-alive connection would hold its thread, and server_close, forever.
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
        self.server_close()
        self._wake_reader.close()
        self._wake_writer.close()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Without this, every answer on a kept-alive connection waits ~40 ms for an ACK.
    disable_nagle_algorithm = True
    server: _Server

    def handle(self) -> None:
        # A client that gave up (timed out, reset) is the test working, not an error.
        with contextlib.suppress(ConnectionError):
            super().handle()

    def version_string(self) -> str:
        return "amaimedia-fake"

    def log_message(self, format: str, *args: Any) -> None:
        """Stay quiet: a test run is no place for an access log."""

    def _serve(self) -> None:
        body = self._read_body()
        if body is None:
            return
        outcome = self.server.dispatch(self.command, self.path, self.headers.items(), body)
        if outcome.delay:
            self.server.stopping.wait(outcome.delay)
        if outcome.reply is None or self.server.stopping.is_set():
            self._cut()
            return
        self._send(outcome.reply)

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = _serve

    def _read_body(self) -> bytes | None:
        """The request body; `None` after refusing one that cannot be read safely."""
        if self.headers.get("transfer-encoding") is not None:
            self._refuse(411, "length_required", "send the body with a Content-Length")
            return None
        text = self.headers.get("content-length")
        if text is None:
            return b""
        if not (text.isascii() and text.isdigit()):
            self._refuse(400, "invalid_request", "Content-Length is not a number")
            return None
        length = int(text)
        if length > _MAX_BODY:
            self._refuse(413, "payload_too_large", f"the body exceeds {_MAX_BODY} bytes")
            return None
        return self.rfile.read(length)

    def _refuse(self, status: int, error: str, message: str) -> None:
        # The body was not read, so the connection cannot carry another request.
        self.close_connection = True
        self._send(json_reply(status, {"ok": False, "error": error, "message": message}))

    def _send(self, reply: Reply) -> None:
        self.send_response(reply.status)
        for name, value in reply.headers:
            self.send_header(name, value)
        self.send_header("content-length", str(len(reply.body)))
        if self.close_connection:
            self.send_header("connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(reply.body)

    def _cut(self) -> None:
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)
