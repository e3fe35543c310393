"""Lockout after repeated failed logins, per user name and per client address: five failures
in a row lock the name (or the address) for 30 s, each further lockout twice as long, up to
15 minutes; a successful login clears the name and the address. Kept in memory, per instance
(a restart forgets it; the scrypt cost still makes each guess slow)."""

from __future__ import annotations

import time
from dataclasses import dataclass

MAX_FAILURES = 5
FIRST_LOCK_S = 30.0
MAX_LOCK_S = 900.0
_MAX_ENTRIES = 10_000  # an address sprayer cannot grow this without bound


@dataclass
class _Entry:
    failures: int = 0
    lockouts: int = 0
    locked_until: float = 0.0
    last: float = 0.0


class Lockout:
    def __init__(
        self,
        max_failures: int = MAX_FAILURES,
        first_lock_s: float = FIRST_LOCK_S,
        max_lock_s: float = MAX_LOCK_S,
    ) -> None:
        self.max_failures = max_failures
        self.first_lock_s = first_lock_s
        self.max_lock_s = max_lock_s
        self._entries: dict[str, _Entry] = {}

    def locked_for(self, *keys: str) -> float:
        """Seconds until every one of `keys` may try again (0: none is locked)."""
        now = time.monotonic()
        return max(
            (max(0.0, e.locked_until - now) for k in keys if (e := self._entries.get(k))),
            default=0.0,
        )

    def failed(self, *keys: str) -> float:
        """Count a failure against each key; the lockout it starts, in seconds (0: none)."""
        now = time.monotonic()
        self._prune(now)
        started = 0.0
        for key in keys:
            entry = self._entries.setdefault(key, _Entry())
            entry.failures += 1
            entry.last = now
            if entry.failures >= self.max_failures:
                seconds = min(self.first_lock_s * 2**entry.lockouts, self.max_lock_s)
                entry.locked_until = now + seconds
                entry.lockouts += 1
                entry.failures = 0
                started = max(started, seconds)
        return started

    def succeeded(self, *keys: str) -> None:
        for key in keys:
            self._entries.pop(key, None)

    def _prune(self, now: float) -> None:
        if len(self._entries) < _MAX_ENTRIES:
            return
        # forget what has been quiet longest and is not locked
        quiet = sorted((e.last, k) for k, e in self._entries.items() if e.locked_until <= now)
        for _, key in quiet[: len(quiet) // 2 or 1]:
            del self._entries[key]
