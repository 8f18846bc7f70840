"""Children made with `os.fork`, the reports they send back, and the parent's sockets.

A child runs its work, writes its `Report` as JSON to a pipe, and leaves by `os._exit`,
whatever happened: it never returns into the parent's copy of pytest, so no test runs
twice and no fixture is finalized in a child.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import signal
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from .jobs import Report

__all__ = ["Child", "Gate", "collect", "connections_to", "fork", "fork_all"]

# How long the children may take in all: generous for a loaded CI machine. It bounds a
# wait (a child stuck on an answer another process read is killed), it asserts nothing.
DEADLINE = 120.0


@dataclass(frozen=True)
class Child:
    """A forked child, and the read end of the pipe its report comes on."""

    index: int
    pid: int
    pipe: int


@dataclass(frozen=True)
class Gate:
    """Holds forked children back until the last is forked: `open()` lets them all go.

    While the children are being forked, none of them talks to the server yet, so the
    server's threads in this process are idle at every fork. A thread of this process
    that is busy at the moment of a fork (holding a lock, or importing) leaves that lock
    held for ever in the child, a hazard of forking any threaded process that has
    nothing to do with what these tests look at: inherited connections.
    """

    reader: int
    writer: int

    @classmethod
    def new(cls) -> Gate:
        reader, writer = os.pipe()
        return cls(reader, writer)

    def wait(self) -> None:
        """In a child: wait until the parent opens the gate."""
        os.close(self.writer)
        os.read(self.reader, 1)  # end of file once every writer is closed
        os.close(self.reader)

    def open(self) -> None:
        """In the parent: let every child forked so far go."""
        os.close(self.writer)
        os.close(self.reader)


def fork_all(works: list[tuple[int, Callable[[], Report]]]) -> list[Child]:
    """Fork a child for each `(index, work)`, and start them together once all exist."""
    gate = Gate.new()
    try:
        return [fork(index, work, gate) for index, work in works]
    finally:
        gate.open()


def fork(index: int, work: Callable[[], Report], gate: Gate | None = None) -> Child:
    """Fork a child that runs `work` and reports; in the parent, return at once."""
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(reader)
            if gate is not None:
                gate.wait()
            try:
                report = work()
            except BaseException as exc:
                report = Report(index, errors=[f"child {index} crashed: {exc!r}"])
            with os.fdopen(writer, "wb") as pipe:
                pipe.write(json.dumps(asdict(report)).encode())
        finally:
            os._exit(0)
    os.close(writer)
    return Child(index, pid, reader)


def collect(children: list[Child], *, deadline: float = DEADLINE) -> list[Report]:
    """Every child's report, in order, each child reaped.

    A child still running after `deadline` seconds is killed; a child that sent no
    whole report is reported with that as its error.
    """
    received = {child.pipe: bytearray() for child in children}
    ends = time.monotonic() + deadline
    with selectors.DefaultSelector() as selector:
        for child in children:
            selector.register(child.pipe, selectors.EVENT_READ)
        while selector.get_map() and (left := ends - time.monotonic()) > 0:
            for key, _ in selector.select(left):
                chunk = os.read(key.fd, 1 << 16)
                if chunk:
                    received[key.fd] += chunk
                else:
                    selector.unregister(key.fd)
        running = set(selector.get_map())
    reports = []
    for child in children:
        if child.pipe in running:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child.pid, signal.SIGKILL)
        os.close(child.pipe)
        _, status = os.waitpid(child.pid, 0)
        try:
            reports.append(Report(**json.loads(received[child.pipe])))
        except (ValueError, TypeError):  # nothing, half a report, or not one
            reason = "killed after the deadline" if child.pipe in running else "no report"
            failure = f"child {child.index}: {reason} (wait status {status})"
            reports.append(Report(child.index, child.pid, errors=[failure]))
    return reports


def connections_to(port: int) -> set[int]:
    """The local ports of this process's established TCP connections to 127.0.0.1:`port`.

    Read from Linux's /proc: the sockets of this process whose peer is the server.
    """
    mine = set()
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # closed since it was listed
            mine.add(os.readlink(f"/proc/self/fd/{fd}"))
    peer = f"0100007F:{port:04X}"
    established = "01"
    ports = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote, state, inode = fields[1], fields[2], fields[3], fields[9]
        if remote == peer and state == established and f"socket:[{inode}]" in mine:
            ports.add(int(local.rpartition(":")[2], 16))
    return ports
