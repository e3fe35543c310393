"""Exponential backoff with full jitter, capped: how every retry in the gateway waits."""

from __future__ import annotations

import random


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
