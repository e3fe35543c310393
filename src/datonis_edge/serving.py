"""Serving an ASGI app on a socket we bound ourselves, inside the gateway's own event loop.

We bind first so that "port in use" is one clear sentence, and we keep uvicorn away from the
process's signal handlers: the supervisor owns SIGTERM.
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
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


async def serve_app(app: Any, sock: socket.socket, **kwargs: Any) -> None:
    """Serve until cancelled; on cancellation close the listener and open connections."""
    config = uvicorn.Config(
        app,
        log_level=logging.WARNING,
        access_log=False,
        lifespan="off",
        interface="asgi3",
        http="httptools",
        timeout_keep_alive=30,
        timeout_graceful_shutdown=2,
        **kwargs,
    )
    server = _Server(config)
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
