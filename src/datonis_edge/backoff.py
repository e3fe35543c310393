"""Exponential backoff with full jitter, capped: how every retry in the gateway waits."""

from __future__ import annotations

import random

# while a platform or broker is unreachable, how often a cheap check (a TCP connect, an MQTT
# client's reconnect) asks whether it is back: the first batch goes out within about this
# long of its return, whatever the batch's backoff has grown to
REACHABILITY_PROBE_S = 0.5


class Backoff:
    """Exponential backoff with full jitter, capped."""

    def __init__(self, first_s: float, cap_s: float) -> None:
        self.first = first_s
        self.cap = cap_s
        self.attempt = 0

    def next(self) -> float:
        ceiling = min(self.cap, self.first * (2**self.attempt))
        self.attempt += 1
        return random.uniform(ceiling / 2, ceiling)

    def reset(self) -> None:
        self.attempt = 0
