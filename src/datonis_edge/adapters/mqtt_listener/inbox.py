"""The mqtt_listener's inbox: messages from paho's network thread to the event loop, gathered
into batches, bounded.

Back-pressure: at most `limit` messages are held (received, not yet acknowledged); beyond that
paho's thread waits before it reads more, so TCP and the broker hold the rest. QoS 1 messages
are also bounded by the broker's inflight window, since each is acknowledged only once stored:
paho's thread keeps reading (and answering the keep-alive) while we store.

Gathering: every batch costs about the same (a task, an append, a commit, a PUBACK write and
five thread wake-ups), whatever it holds. At a few thousand messages a second, handing each
message on as it came made batches of one or two, and those fixed costs were most of the
listener's CPU. So while messages come often (more than two expected within COLLECT_S), the
first of a batch waits up to COLLECT_S for company; the batch goes sooner once ENOUGH are in,
or once none came for four times the usual gap (the broker's inflight window may be full: it
sends no more before our PUBACKs). A message after a pause goes at once. The outbox's commit
window then has nothing left to gather: each batch commits at once, so a message waits
COLLECT_S at most, well inside a 20 ms PUBACK budget.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

COLLECT_S = 0.008  # the longest the first message of a batch waits for company
ENOUGH = 256  # a batch this large goes at once: the rate is high, the loop batches by itself
QUIET_MIN_S = 0.003  # "none came for a while" is never shorter: each check is a wake-up


class Inbox:
    """Messages from paho's thread to the event loop; at most `limit` held (received and not
    yet acknowledged). `put` (paho's thread) waits while the limit is reached: the listener
    stops reading, and `while_waiting` runs every `every_s` meanwhile (the keep-alive). The
    event loop `take`s a batch (gathered as the module says) and calls `done` once it is
    acknowledged (batches are acknowledged in the order they were taken)."""

    def __init__(self, limit: int, collect_s: float = COLLECT_S) -> None:
        self.limit = limit
        self.collect_s = collect_s
        self.while_waiting: Callable[[], None] | None = None
        self.every_s = 15.0
        self._cond = threading.Condition()
        self._queue: deque[tuple[float, Any]] = deque()
        self._taken: deque[tuple[float, int]] = deque()  # (first arrival, size) per batch
        self._held = 0
        self._waiter: asyncio.Future[None] | None = None
        self._want = 1  # queued messages that wake the waiter
        self._last_at = 0.0  # when the last message came
        self._gap = collect_s  # mean time between messages (moving average, capped)
        self._paused = True  # the first message queued came after a pause
        self._closed = False
        self.waited = False  # paho's thread had to wait for room since the last `lag()`
        self._waiting = False  # it waits now

    def put(self, msg: Any) -> None:
        while True:
            with self._cond:
                if self._held >= self.limit and not self._closed:
                    self.waited = self._waiting = True
                    if self._cond.wait(self.every_s) or self.while_waiting is None:
                        continue
                else:
                    self._waiting = False
                    break
            self.while_waiting()  # outside the lock: `done` must not wait for the socket
        with self._cond:
            now = time.monotonic()
            gap = now - self._last_at
            if not self._queue:
                self._paused = gap > self.collect_s  # a lone message: it goes at once
            self._gap += (min(gap, self.collect_s) - self._gap) / 8
            self._last_at = now
            self._queue.append((now, msg))
            self._held += 1
            waiter = self._waiter
            if waiter is not None and len(self._queue) >= self._want:
                self._waiter = None
            else:
                waiter = None
        if waiter is not None:
            waiter.get_loop().call_soon_threadsafe(_wake, waiter)

    put_nowait = put  # (it waits only at the limit)

    async def take(self, most: int) -> list[Any]:
        """The messages queued (at most `most`), once there are any and they have gathered."""
        loop = asyncio.get_running_loop()
        while True:
            with self._cond:
                delay = self._gather_for() if self._queue else None
                if delay is not None and delay <= 0:
                    n = min(most, len(self._queue))
                    first = self._queue[0][0]
                    batch = [self._queue.popleft()[1] for _ in range(n)]
                    self._taken.append((first, n))
                    return batch
                self._want = 1 if delay is None else min(ENOUGH, most)
                waiter = self._waiter = loop.create_future()
            if delay is None:
                await waiter
                continue
            timer = loop.call_later(delay, _wake, waiter)
            try:
                await waiter
            finally:
                timer.cancel()

    def _gather_for(self) -> float:
        """Seconds the queued messages should still wait for company (≤ 0: take them now)."""
        if (
            self._paused
            or 2 * self._gap > self.collect_s  # fewer than two more expected meanwhile
            or len(self._queue) >= ENOUGH
            or self._closed
        ):
            return 0.0
        quiet = max(4 * self._gap, QUIET_MIN_S)
        return min(self._queue[0][0] + self.collect_s, self._last_at + quiet) - time.monotonic()

    def done(self) -> None:
        """The oldest batch taken is acknowledged (or dropped, unacknowledged, at a stop)."""
        with self._cond:
            if self._taken:
                self._held -= self._taken.popleft()[1]
                self._cond.notify()

    def lag(self) -> tuple[int, float, bool]:
        """(messages held, seconds the oldest of them has waited, whether paho's thread waits
        for room or had to since the last call)."""
        with self._cond:
            oldest = self._taken[0][0] if self._taken else None
            if oldest is None and self._queue:
                oldest = self._queue[0][0]
            waited, self.waited = self.waited or self._waiting, False
            age = time.monotonic() - oldest if oldest is not None else 0.0
            return self._held, age, waited

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)
