"""The outbox's counters: every point is in exactly one place, and each place is counted.

accepted = delivered + declined + evicted + lost + pending, after any crash: the counters live
in the same database as the data and change in the same transactions. `rejected` counts what
was refused (never stored). `lost` counts what was accepted once and could not be salvaged
from a damaged or torn outbox (reported and alerted when found, never hidden).

Counted in memory at once, written with the group's commit (one upsert per counter per
commit), published to other threads as of the last commit (the supervisor's heartbeat writes
them to ha/master.json, so they must never run ahead of what is durable).
"""

from __future__ import annotations

import sqlite3
from typing import Any

NAMES = ("accepted", "delivered", "declined", "evicted", "rejected", "lost")
GONE = ("delivered", "declined", "evicted", "lost")  # the places a point leaves the outbox for


def pending_of(counters: dict[str, int]) -> int:
    return counters.get("accepted", 0) - sum(counters.get(k, 0) for k in GONE)


class Counters:
    def __init__(self) -> None:
        self.live = dict.fromkeys(NAMES, 0)  # the writer thread's, inside the transaction
        self.committed = dict(self.live)  # as of the last commit: what other threads read
        self._delta: dict[str, int] = {}  # counted, not yet written

    def load(self, conn: sqlite3.Connection) -> None:
        for name, value in conn.execute("SELECT name, value FROM counters"):
            self.live[str(name)] = int(value)
        self.publish()

    def bump(self, name: str, by: int) -> None:
        if by:
            self.live[name] = self.live.get(name, 0) + by
            self._delta[name] = self._delta.get(name, 0) + by

    @property
    def unwritten(self) -> bool:
        return bool(self._delta)

    def flush(self, conn: sqlite3.Connection) -> None:
        """Write what was counted, inside the open transaction."""
        if self._delta:
            conn.executemany(
                "INSERT INTO counters(name, value) VALUES (?, ?) "
                "ON CONFLICT(name) DO UPDATE SET value = value + excluded.value",
                list(self._delta.items()),
            )
            self._delta.clear()

    def snapshot(self) -> Any:
        return dict(self.live), dict(self._delta)

    def restore(self, snap: Any) -> None:
        live, delta = snap
        self.live, self._delta = dict(live), dict(delta)

    def publish(self) -> None:
        self.committed = dict(self.live)  # a new dict: readers never see one half-updated
