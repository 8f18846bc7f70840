"""A loopback server that answers as a hostile or broken API would: huge, endless or slow.

Not collected (no `test_` prefix). `HostileServer` answers each request on 127.0.0.1 with
the next `Answer` queued on it, then with a valid quote once the queue is empty, over
HTTP/1.1 with keep-alive. An answer's body is produced while it is sent (a 200 MiB body is
the same 64 KiB chunk over and over, never 200 MiB in memory), optionally a piece at a time
with a pause between pieces, and the server counts the body bytes it managed to write
before the client hung up: that count is how a test sees that a client stopped reading.

Every connection thread is joined when the `with` block ends; a pause waits on an event
that the end of the block sets, so no thread outlives it.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from types import TracebackType
from typing import Final

from tests.answers import QUOTE

__all__ = ["Answer", "HostileServer", "repeated"]

_HOST: Final = "127.0.0.1"
_CHUNK: Final = 64 * 1024
_MAX_HEAD: Final = 64 * 1024
_JOIN_TIMEOUT: Final = 10.0


def repeated(total: int, chunk: bytes = b"x" * _CHUNK) -> Callable[[], Iterator[bytes]]:
    """A body of `total` bytes made of `chunk` again and again, produced as it is sent."""

    def pieces() -> Iterator[bytes]:
        left = total
        view = memoryview(chunk)
        while left > 0:
            piece = view[: min(left, len(chunk))]
            left -= len(piece)
            yield bytes(piece) if len(piece) < len(chunk) else chunk

    return pieces


@dataclass(frozen=True)
class Answer:
    """One scripted answer.

    Attributes:
        status: The status code.
        headers: Headers besides the ones the server writes (`content-length` unless
            `chunked`, `transfer-encoding` when it is).
        body: Makes the body's pieces, each written on its own (a chunk when `chunked`).
        length: The `content-length` to announce; by default the sum of the pieces, which
            needs the pieces made twice (fine for small bodies). Ignored when `chunked`.
        chunked: Send the body with `transfer-encoding: chunked`, so no length is known.
        pause: Seconds to wait before each piece of the body.
        close: End the connection after this answer.
    """

    status: int = 200
    headers: tuple[tuple[str, str], ...] = (("content-type", "application/json"),)
    body: Callable[[], Iterator[bytes]] = field(default=lambda: iter([json.dumps(QUOTE).encode()]))
    length: int | None = None
    chunked: bool = False
    pause: float = 0.0
    close: bool = True


class HostileServer:
    """A loopback HTTP server that answers from a queue of `Answer`s.

    Use it as a context manager; `base_url` is set inside the block.
    """

    def __init__(self) -> None:
        self._answers: deque[Answer] = deque()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._sockets: set[socket.socket] = set()
        self._listener: socket.socket | None = None
        self.base_url = ""
        self.requests = 0
        self.sent: list[int] = []
        """Body bytes written for each hostile answer, in order, as far as the client read."""

    def queue(self, *answers: Answer) -> None:
        with self._lock:
            self._answers.extend(answers)

    def __enter__(self) -> HostileServer:
        listener = socket.create_server((_HOST, 0))
        listener.settimeout(0.1)
        self._listener = listener
        self.base_url = f"http://{_HOST}:{listener.getsockname()[1]}"
        accepting = threading.Thread(target=self._accept_loop, name="hostile-accept", daemon=True)
        accepting.start()
        self._threads.append(accepting)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._stopping.set()
        with self._lock:
            connections = list(self._sockets)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
        for thread in list(self._threads):
            thread.join(_JOIN_TIMEOUT)
            assert not thread.is_alive(), f"{thread.name} did not end"
        if self._listener is not None:
            self._listener.close()

    def _accept_loop(self) -> None:
        assert self._listener is not None
        while not self._stopping.is_set():
            try:
                connection, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            connection.settimeout(None)
            with self._lock:
                self._sockets.add(connection)
            thread = threading.Thread(
                target=self._serve, args=(connection,), name="hostile-connection", daemon=True
            )
            self._threads.append(thread)
            thread.start()

    def _serve(self, connection: socket.socket) -> None:
        try:
            with connection:
                while not self._stopping.is_set():
                    if not self._read_request(connection):
                        return
                    with self._lock:
                        self.requests += 1
                        answer = self._answers.popleft() if self._answers else None
                    if answer is None:
                        self._write(connection, Answer(close=False), record=False)
                        continue
                    self._write(connection, answer, record=True)
                    if answer.close:
                        return
        except OSError:
            return
        finally:
            with self._lock:
                self._sockets.discard(connection)

    @staticmethod
    def _read_request(connection: socket.socket) -> bool:
        """Read one request (head and body); `False` when the client closed instead."""
        data = b""
        while b"\r\n\r\n" not in data:
            piece = connection.recv(_CHUNK)
            if not piece or len(data) > _MAX_HEAD:
                return False
            data += piece
        head, _, rest = data.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value.strip())
        while len(rest) < length:
            piece = connection.recv(_CHUNK)
            if not piece:
                return False
            rest += piece
        return True

    def _write(self, connection: socket.socket, answer: Answer, *, record: bool) -> None:
        lines = [f"HTTP/1.1 {answer.status} Answer"]
        lines += [f"{name}: {value}" for name, value in answer.headers]
        if answer.chunked:
            lines.append("transfer-encoding: chunked")
        else:
            length = answer.length
            if length is None:
                length = sum(len(piece) for piece in answer.body())
            lines.append(f"content-length: {length}")
        if answer.close:
            lines.append("connection: close")
        connection.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        index = -1
        if record:
            with self._lock:
                self.sent.append(0)
                index = len(self.sent) - 1
        try:
            for piece in answer.body():
                if answer.pause and self._stopping.wait(answer.pause):
                    return
                if answer.chunked:
                    connection.sendall(b"%x\r\n" % len(piece) + piece + b"\r\n")
                else:
                    connection.sendall(piece)
                if record:
                    with self._lock:
                        self.sent[index] += len(piece)
            if answer.chunked:
                connection.sendall(b"0\r\n\r\n")
        except OSError:
            # The client hung up: what it read is what `sent` says.
            return
