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
import logging
import socket
from collections.abc import Generator
from typing import Any

import uvicorn

from ..config.models import ConnectionLimits
from .accept import _Acceptor, _Slot
from .guard import _GuardedProtocol
from .limits import _Alarms, _Limits, raise_descriptor_limit

log = logging.getLogger("datonis_edge.serving")


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
            _Acceptor(
                sock,
                make_protocol,
                self.limits.max_connections,
                self.alarms,
                config.ssl,  # HTTPS: uvicorn's context from ssl_certfile / ssl_keyfile
                self.limits.header_timeout,
            )
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


__all__ = ["PortError", "bind_socket", "raise_descriptor_limit", "serve_app"]
