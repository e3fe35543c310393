"""Live state that parts report and the console reads: per service, per uplink, alerts.

Plain mutable records, written by their owner only; the console reads a snapshot.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Any


def _ms() -> int:
    return int(time.time() * 1000)


@dataclass
class PartStatus:
    """The state of one service (adapter) or uplink."""

    name: str
    type: str
    # starting | running | connected | disconnected | retrying | backing_off | degraded |
    # error | failed (its task died and waits for its restart) | stopped
    state: str = "starting"
    last_error: str | None = None
    last_error_ms: int | None = None
    last_ok_ms: int | None = None
    counters: dict[str, int] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)

    def ok(self, state: str | None = None) -> None:
        self.last_ok_ms = _ms()
        if state:
            self.state = state

    def error(self, message: str, state: str | None = None) -> None:
        self.last_error = message
        self.last_error_ms = _ms()
        if state:
            self.state = state

    def failed(self, message: str) -> None:
        """Its task died: shown until the restart succeeds; never `running` while down."""
        self.error(message, "failed")
        self.count("failures")

    def count(self, name: str, by: int = 1) -> None:
        self.counters[name] = self.counters.get(name, 0) + by

    def snapshot(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Alert:
    level: str  # info | warning | error
    message: str
    at_ms: int = field(default_factory=_ms)
    thing_key: str | None = None


class Alerts:
    """The most recent alerts, newest last; a listener may forward them to the platform."""

    def __init__(self, keep: int = 200) -> None:
        self.items: deque[Alert] = deque(maxlen=keep)
        self.total = 0
        self.listeners: list[Any] = []

    def raise_(self, level: str, message: str, thing_key: str | None = None) -> Alert:
        alert = Alert(level, message, thing_key=thing_key)
        self.items.append(alert)
        self.total += 1
        for listener in self.listeners:
            listener(alert)
        return alert

    def snapshot(self, last: int = 20) -> list[dict[str, Any]]:
        return [asdict(a) for a in list(self.items)[-last:]]
