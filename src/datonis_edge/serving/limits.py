"""The limits one server applies (from `ConnectionLimits`), the descriptor budget they get, the
answers sent to a client that breaks them, and the rate-limited alarms that report it."""

from __future__ import annotations

import contextlib
import functools
import logging
import resource
import time
from collections import Counter
from dataclasses import dataclass

from uvicorn.protocols.http.httptools_impl import STATUS_LINE

from ..config.models import ConnectionLimits

log = logging.getLogger("datonis_edge.serving")

# room for the gateway's own descriptors: outbox and data-directory files, uplink sockets
_NOFILE_RESERVE = 256
# servers that may fill their limits at once: the console, listeners, a platform simulator
_NOFILE_SHARES = 4
_ACCEPTS_PER_WAKEUP = 128
_LINGER_S = 2.0  # after a refusal, read and drop for this long so the client reads our answer
_ALARM_EVERY_S = 60.0


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
