"""Live state that parts report and the console reads: per service, per uplink, alerts.

Plain mutable records, written by their owner only; the console reads a snapshot.

A status that `announce`s (every adapter's) is also how its trouble reaches the log: the first
`error()` after a good spell is one WARNING line naming the part, the cause and the fix
(`hint`); the first `ok()` after a logged problem is one INFO line. Problem lines of one part
are at most one a minute (a flapping device gets a count, not a flood). Parts that log their
own changes (the forwarder, the uplinks) leave `announce` off.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Any

log = logging.getLogger("datonis_edge.services")

ANNOUNCE_INTERVAL_S = 60.0
HEALTHY_STATES = frozenset({"starting", "running", "connected", "listening", "ready", "stopped"})


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
    # when `state` last changed (epoch ms): set by every assignment that changes it
    since: int = field(default_factory=_ms)
    counters: dict[str, int] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    # logging of state changes (see the module docstring); not part of the snapshot
    announce: bool = field(default=False, repr=False)
    hint: str = field(default="", repr=False)
    _problem_logged: bool = field(default=False, repr=False)
    _last_line: float = field(default=-ANNOUNCE_INTERVAL_S, repr=False)
    _suppressed: int = field(default=0, repr=False)
    _logged_elsewhere: str | None = field(default=None, repr=False)

    def __setattr__(self, name: str, value: Any) -> None:
        # every transition is timed, also the parts that assign `state` directly
        if name == "state" and self.__dict__.get("state", value) != value:
            object.__setattr__(self, "since", _ms())
        object.__setattr__(self, name, value)

    def ok(self, state: str | None = None) -> None:
        self.last_ok_ms = _ms()
        if state:
            self.state = state
        if self._problem_logged:
            self._problem_logged = False
            log.info("%s %s: recovered (%s)", self.type, self.name, self.state)

    def error(self, message: str, state: str | None = None, announce: bool = True) -> None:
        """A problem: kept as the last error (with its time) and, for a status that
        announces, logged as described above. `announce=False` for one bad input among
        good ones (a malformed message), which the part counts and logs itself."""
        self.last_error = message
        self.last_error_ms = _ms()
        if state:
            self.state = state
        if message == self._logged_elsewhere:
            return
        if announce and self.announce and not self._problem_logged:
            self._announce(message)

    def logged_elsewhere(self, message: str) -> None:
        """The part's next `error(message)` is a condition another part logs (a full disk,
        logged by the outbox): kept as the last error, not announced again."""
        self._logged_elsewhere = message

    def _announce(self, message: str) -> None:
        now = time.monotonic()
        if now - self._last_line < ANNOUNCE_INTERVAL_S:
            self._suppressed += 1
            return
        more = f" ({self._suppressed} more problems in the last minute)" if self._suppressed else ""
        hint = f"; {self.hint}" if self.hint and self.hint not in message else ""
        log.warning("%s %s: %s%s%s", self.type, self.name, message, hint, more)
        self._problem_logged, self._last_line, self._suppressed = True, now, 0

    @property
    def healthy(self) -> bool:
        return self.state in HEALTHY_STATES

    def failed(self, message: str) -> None:
        """Its task died: shown until the restart succeeds; never `running` while down.
        Not announced: the supervision logs the failure and the recovery itself (one ERROR,
        one INFO), and the part's hint speaks of its running trouble, not of its death."""
        self.error(message, "failed", announce=False)
        self.count("failures")

    def count(self, name: str, by: int = 1) -> None:
        self.counters[name] = self.counters.get(name, 0) + by

    def snapshot(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k not in _PRIVATE}


_PRIVATE = frozenset(
    {"announce", "hint", "_problem_logged", "_last_line", "_suppressed", "_logged_elsewhere"}
)


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
