"""Accepting connections ourselves: a bounded number per server, refused with 503 beyond it,
and a spare descriptor so that EMFILE never closes a listener."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import socket
import ssl
from collections.abc import Callable

from .limits import _ACCEPTS_PER_WAKEUP, _TOO_MANY, _Alarms

log = logging.getLogger("datonis_edge.serving")


class _Slot:
    """One accepted connection's place under max_connections, given back once."""

    __slots__ = ("acceptor",)

    def __init__(self, acceptor: _Acceptor) -> None:
        self.acceptor: _Acceptor | None = acceptor
        acceptor.open += 1

    def release(self) -> None:
        if self.acceptor is not None:
            self.acceptor.open -= 1
            self.acceptor = None


class _Acceptor:
    """Accepts connections for one server: past the limit a connection is answered 503 and
    closed before anything is made for it; out of descriptors, the listener keeps listening."""

    def __init__(
        self,
        sock: socket.socket,
        make_protocol: Callable[[_Slot], asyncio.Protocol],
        max_connections: int,
        alarms: _Alarms,
        ssl_context: ssl.SSLContext | None = None,
        handshake_timeout: float = 10.0,
    ) -> None:
        self.sock = sock
        self.ssl_context = ssl_context
        self.handshake_timeout = handshake_timeout
        self.make_protocol = make_protocol
        self.max_connections = max_connections
        self.alarms = alarms
        self.loop = asyncio.get_running_loop()
        self.open = 0  # accepted and not yet closed
        self.tasks: set[asyncio.Task[None]] = set()
        self.resume: asyncio.TimerHandle | None = None
        self.closed = False

    def start(self) -> None:
        _take_spare()
        self.loop.add_reader(self.sock.fileno(), self._on_readable)

    # the subset of asyncio.Server that uvicorn's shutdown uses
    def close(self) -> None:
        self.closed = True
        if self.resume is not None:
            self.resume.cancel()
        with contextlib.suppress(Exception):
            self.loop.remove_reader(self.sock.fileno())

    async def wait_closed(self) -> None:
        return None

    def _on_readable(self) -> None:
        for _ in range(_ACCEPTS_PER_WAKEUP):
            try:
                conn, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:
                continue
            except OSError as exc:
                self._accept_failed(exc)
                return
            if self.open >= self.max_connections:
                _refuse_unserved(conn)
                self.alarms.note(
                    "too_many",
                    f"refused a connection: {self.max_connections} are open, the limit "
                    "(limits.max_connections)",
                )
                continue
            self._serve(conn)

    def _serve(self, conn: socket.socket) -> None:
        conn.setblocking(False)
        with contextlib.suppress(OSError):
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        slot = _Slot(self)
        task = self.loop.create_task(self._connect(conn, slot))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _connect(self, conn: socket.socket, slot: _Slot) -> None:
        try:
            await self.loop.connect_accepted_socket(
                lambda: self.make_protocol(slot),
                conn,
                ssl=self.ssl_context,
                ssl_handshake_timeout=self.handshake_timeout if self.ssl_context else None,
            )
        except Exception:  # the peer left before we got to it
            conn.close()
            slot.release()

    def _accept_failed(self, exc: OSError) -> None:
        if exc.errno in (errno.EMFILE, errno.ENFILE):
            self.alarms.note(
                "descriptors",
                f"out of file descriptors ({exc.strerror}): refusing new connections; raise "
                "LimitNOFILE in the service unit or lower limits.max_connections",
            )
            if _shed_with_spare(self.sock):
                return  # the queue is empty; the next connection wakes us again
        else:
            self.alarms.note("accept", f"accepting a connection failed ({exc.strerror})")
        # nothing we can do this instant: let the kernel queue them for a moment
        with contextlib.suppress(Exception):
            self.loop.remove_reader(self.sock.fileno())
        self.resume = self.loop.call_later(0.5, self._resume)

    def _resume(self) -> None:
        self.resume = None
        if not self.closed:
            _take_spare()
            self.loop.add_reader(self.sock.fileno(), self._on_readable)


def _refuse_unserved(conn: socket.socket) -> None:
    with contextlib.suppress(OSError):
        conn.setblocking(False)
        conn.send(_TOO_MANY)
        conn.shutdown(socket.SHUT_WR)
        conn.recv(65536)  # drop a request already here, so closing does not reset the 503
    conn.close()


# One descriptor held in reserve for the whole process, given up when accept() runs out.
_spare: int | None = None


def _take_spare() -> None:
    global _spare
    if _spare is None:
        with contextlib.suppress(OSError):
            _spare = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)


def _shed_with_spare(sock: socket.socket) -> bool:
    """Accept and refuse what waits, using the spare descriptor; whether the queue emptied."""
    global _spare
    if _spare is None:
        return False
    os.close(_spare)
    _spare = None
    try:
        for _ in range(_ACCEPTS_PER_WAKEUP):
            try:
                conn, _ = sock.accept()
            except (BlockingIOError, InterruptedError):
                return True
            except OSError:
                return False
            _refuse_unserved(conn)
        return True
    finally:
        _take_spare()
