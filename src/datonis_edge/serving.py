"""Serving an ASGI app on a socket we bound ourselves, inside the gateway's own event loop.

We bind first so that "port in use" is one clear sentence, and we keep uvicorn away from the
process's signal handlers: the supervisor owns SIGTERM.

Every server (the console, each http_listener, the platform simulator) limits what one client
can hold, so that idle or slow connections cannot use up the process's file descriptors and
take the master, its heartbeat and its replay watcher down with them. The limits are
`ConnectionLimits` (config/models.py: `console.limits`, a listener's `limits`):

| limit               | default | on breach                                                        |
|---------------------|---------|------------------------------------------------------------------|
| `max_connections`   | 1000    | a new connection gets `503` and is closed at once: no protocol,  |
|                     |         | no parser, its descriptor freed in the same accept pass          |
| `header_timeout_ms` | 10 s    | from connect (or from the first byte of the next request) to the |
|                     |         | end of the headers, in total: slowloris gets `408` and is closed;|
|                     |         | a connection that never sent a byte is closed quietly            |
| `body_timeout_ms`   | 30 s    | a body that stalls this long between two reads: `408`, closed    |
| `idle_timeout_ms`   | 60 s    | an idle keep-alive connection between requests is closed         |
| `max_header_bytes`  | 32 KiB  | request line plus headers: `431` and closed                      |

Why these: a plant's agents and browsers are few and send small requests in one packet, so
1000 connections per server is ample and 10 s is ages for a header; 60 s of keep-alive spares
agents a reconnect per batch; 32 KiB is twice what Node and uvicorn's h11 allow. Time a server
waits on itself (reading paused by flow control, a pipelined request queued, the app not yet
asking for the body of an `Expect: 100-continue`) never counts against the client.

Descriptors: the first server raises the soft RLIMIT_NOFILE to the hard limit. If that still
cannot hold every server's `max_connections` (a quarter of it each, after 256 for the gateway's
own files), the limit is lowered with a warning naming LimitNOFILE. We accept connections
ourselves rather than with `loop.create_server`, because uvloop closes a listener for good when
accept() fails with EMFILE; here, out of descriptors, a spare descriptor is given up to accept
and refuse (503) what waits, then taken back, and the listener keeps listening.

Each kind of cut-off is logged as one WARNING at most once a minute per server, with a count.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import logging
import os
import resource
import socket
import time
from collections import Counter
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any

import httptools
import uvicorn
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from .config.models import ConnectionLimits

log = logging.getLogger(__name__)

# room for the gateway's own descriptors: outbox and data-directory files, uplink sockets
_NOFILE_RESERVE = 256
# servers that may fill their limits at once: the console, listeners, a platform simulator
_NOFILE_SHARES = 4
_ACCEPTS_PER_WAKEUP = 128
_LINGER_S = 2.0  # after a refusal, read and drop for this long so the client reads our answer
_ALARM_EVERY_S = 60.0


class PortError(Exception):
    pass


def bind_socket(host: str, port: int, owner: str) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise PortError(
                f"{owner}: port {port} on {host} is already in use; stop what uses it or choose another port"
            ) from None
        if exc.errno == errno.EACCES:
            raise PortError(
                f"{owner}: not allowed to listen on port {port}; use a port above 1023"
            ) from None
        raise PortError(f"{owner}: cannot listen on {host}:{port} ({exc.strerror})") from None
    sock.listen(2048)
    sock.setblocking(False)
    return sock


@functools.cache
def raise_descriptor_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit (once); the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = 1 << 20 if hard == resource.RLIM_INFINITY else min(hard, 1 << 20)
    if soft == resource.RLIM_INFINITY or soft >= target:
        return target if soft == resource.RLIM_INFINITY else soft
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def _connection_budget(wanted: int, name: str) -> int:
    nofile = raise_descriptor_limit()
    budget = max(16, (nofile - _NOFILE_RESERVE) // _NOFILE_SHARES)
    if wanted <= budget:
        return wanted
    log.warning(
        "%s: the file descriptor limit (%d) leaves room for %d connections, not the %d of "
        "limits.max_connections; raise LimitNOFILE in the service unit (or ulimit -n)",
        name,
        nofile,
        budget,
        wanted,
    )
    return budget


@dataclass(frozen=True)
class _Limits:
    max_connections: int
    header_timeout: float
    body_timeout: float
    idle_timeout: float
    max_header_bytes: int

    @classmethod
    def of(cls, limits: ConnectionLimits, name: str) -> _Limits:
        return cls(
            max_connections=_connection_budget(limits.max_connections, name),
            header_timeout=limits.header_timeout_ms / 1000,
            body_timeout=limits.body_timeout_ms / 1000,
            idle_timeout=limits.idle_timeout_ms / 1000,
            max_header_bytes=limits.max_header_bytes,
        )


class _Alarms:
    """What a server cut off, each kind logged at most once a minute: an attack is a line a
    minute, not a flood."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._counts: Counter[str] = Counter()
        self._logged: dict[str, float] = {}

    def note(self, kind: str, message: str) -> None:
        self._counts[kind] += 1
        now = time.monotonic()
        if now - self._logged.get(kind, -_ALARM_EVERY_S) >= _ALARM_EVERY_S:
            self._logged[kind] = now
            log.warning(
                "%s: %s (%d since this was last logged)", self.name, message, self._counts.pop(kind)
            )


def _answer(status: int, text: str) -> bytes:
    body = text.encode()
    return b"".join(
        [
            STATUS_LINE[status],
            b"content-type: text/plain; charset=utf-8\r\nconnection: close\r\n",
            b"content-length: %d\r\n\r\n" % len(body),
            body,
        ]
    )


_TOO_MANY = _answer(503, "too many connections; try again shortly\n")


class _HeadTooLarge(Exception):
    pass


class _GuardedProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a deadline on reading each request's head and body and
    a cap on the head's size; after a refusal it reads and drops for a moment, then closes."""

    def __init__(
        self,
        config: uvicorn.Config,
        server_state: Any,
        app_state: dict[str, Any],
        limits: _Limits,
        alarms: _Alarms,
        slot: _Slot,
    ) -> None:
        super().__init__(config, server_state, app_state)
        self.limits = limits
        self.alarms = alarms
        self.slot = slot
        self.phase: str | None = None  # "head" or "body" while we wait on the client
        self.deadline = 0.0  # loop time the current phase must end by
        self.timer: asyncio.TimerHandle | None = None
        self.timer_at = 0.0
        self.head_seen = False  # bytes of the awaited request have arrived
        self.head_wire = 0  # bytes of whole chunks that left the head unfinished
        self.head_parsed = 0  # bytes of the request line and the finished headers
        self.head_too_large = False
        self.began_in_chunk = False
        self.refusing = False

    # deadlines: one timer per connection, re-armed only when it fires early

    def _wait_for(self, phase: str, seconds: float) -> None:
        self.phase = phase
        self.deadline = self.loop.time() + seconds
        if self.timer is not None and self.timer_at > self.deadline:
            self.timer.cancel()
            self.timer = None

    def _arm(self) -> None:
        if self.phase is not None and self.timer is None and not self.refusing:
            self.timer_at = self.deadline
            self.timer = self.loop.call_at(self.deadline, self._on_timer)

    def _on_timer(self) -> None:
        self.timer = None
        if self.phase is None or self.transport.is_closing():
            return
        now = self.loop.time()
        ours = self.flow.read_paused or (
            self.phase == "body" and self.cycle is not None and self.cycle.waiting_for_100_continue
        )
        if ours:  # we are the ones not reading: the client is not late
            timeout = (
                self.limits.header_timeout if self.phase == "head" else self.limits.body_timeout
            )
            self.deadline = now + timeout
        if now < self.deadline:
            self._arm()
            return
        if self.phase == "head" and not self.head_seen:
            self.transport.close()  # connected and never asked anything: nothing to answer
            return
        if self.phase == "body" and self.cycle is not None and self.cycle.response_complete:
            self.transport.close()  # answered already; the rest of the body is not needed
            return
        if self.phase == "head":
            self.alarms.note(
                "header_timeout",
                "closed a connection that did not send its request headers within "
                f"{self.limits.header_timeout:g} s (limits.header_timeout_ms)",
            )
        else:
            self.alarms.note(
                "body_timeout",
                "closed a connection whose request body stalled for "
                f"{self.limits.body_timeout:g} s (limits.body_timeout_ms)",
            )
        self._refuse(408, "request not received in time\n")

    # refusals

    def _refuse(self, status: int, text: str) -> None:
        self.phase = None
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            if cycle.response_started:  # an answer is half written: all we can do is stop
                self.transport.close()
                return
            cycle.disconnected = True  # the app's receive() ends, its send() is dropped
            cycle.message_event.set()
        self.refusing = True
        self.transport.write(_answer(status, text))
        self.flow.resume_reading()
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(_LINGER_S, self.transport.close)

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._wait_for("head", self.limits.header_timeout)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.phase = None
        self.slot.release()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        self._unset_keepalive_if_required()
        if self.refusing:
            return
        if self.phase == "head":
            self.head_seen = True
        self.began_in_chunk = False
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            pass  # no WebSocket here: the request was answered as plain HTTP
        except httptools.HttpParserError:
            if self.head_too_large:
                self._head_too_large()
            else:
                self.alarms.note("bad_request", "answered 400 to a request that is not HTTP")
                self._refuse(400, "Invalid HTTP request received.\n")
            return
        if self.phase == "head" and not self.began_in_chunk:
            # the whole chunk belongs to an unfinished head (one whose start is in this chunk
            # is measured by its parsed parts instead)
            self.head_wire += len(data)
            if self.head_wire > self.limits.max_header_bytes:
                self._head_too_large()
                return
        self._arm()

    def _head_too_large(self) -> None:
        self.alarms.note(
            "header_size",
            "answered 431 to a request whose headers are over "
            f"{self.limits.max_header_bytes} bytes (limits.max_header_bytes)",
        )
        self._refuse(431, "request line and headers are too large\n")

    # parser callbacks

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self.phase != "head":  # the connection's first request keeps its deadline from connect
            self._wait_for("head", self.limits.header_timeout)
        self.head_seen = True
        self.head_wire = self.head_parsed = 0
        self.began_in_chunk = True

    def _count_head(self, n: int) -> None:
        self.head_parsed += n
        if self.head_parsed > self.limits.max_header_bytes:
            self.head_too_large = True
            raise _HeadTooLarge  # the parser stops; data_received answers 431

    def on_url(self, url: bytes) -> None:
        self._count_head(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count_head(len(name) + len(value) + 4)
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._wait_for("body", self.limits.body_timeout)
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        self.deadline = self.loop.time() + self.limits.body_timeout
        super().on_body(body)

    def on_message_complete(self) -> None:
        self.phase = None
        super().on_message_complete()


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
    ) -> None:
        self.sock = sock
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
            await self.loop.connect_accepted_socket(lambda: self.make_protocol(slot), conn)
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


class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, limits: _Limits, name: str) -> None:
        super().__init__(config)
        self.limits = limits
        self.alarms = _Alarms(name)

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await self.lifespan.startup()
        config, state = self.config, self.server_state

        def make_protocol(slot: _Slot) -> asyncio.Protocol:
            return _GuardedProtocol(
                config, state, self.lifespan.state, self.limits, self.alarms, slot
            )

        acceptors = [
            _Acceptor(sock, make_protocol, self.limits.max_connections, self.alarms)
            for sock in sockets or []
        ]
        for acceptor in acceptors:
            acceptor.start()
        self.servers = acceptors  # type: ignore[assignment]
        self.started = True


async def serve_app(
    app: Any,
    sock: socket.socket,
    limits: ConnectionLimits | None = None,
    name: str | None = None,
    **kwargs: Any,
) -> None:
    """Serve until cancelled; on cancellation close the listener and open connections."""
    if name is None:
        host, port = sock.getsockname()[:2]
        name = f"server on {host}:{port}"
    effective = _Limits.of(limits or ConnectionLimits(), name)
    config = uvicorn.Config(
        app,
        log_level=logging.WARNING,
        log_config=None,  # our handlers (logs.py: text or JSON), not uvicorn's own
        access_log=False,
        lifespan="off",
        interface="asgi3",
        http="httptools",
        ws="none",
        timeout_keep_alive=effective.idle_timeout,  # type: ignore[arg-type]
        timeout_graceful_shutdown=2,
        **kwargs,
    )
    server = _Server(config, effective, name)
    task = asyncio.ensure_future(server.serve(sockets=[sock]))
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        server.should_exit = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 5)
        raise
    finally:
        with contextlib.suppress(Exception):
            sock.close()
