"""The forwarder: reads the outbox in batches, hands each to the uplink, applies the outcome.

DESIGN.md's outcome table lives here and nowhere else:

    DELIVERED → ack (removed from the outbox)
    DECLINED  → written to declined/ with status, reason and body, then ack; alert raised.
                A 401 also backs the uplink off (the keys are probably wrong) and the next
                batch is the probe: the moment the platform accepts again, batches flow.
    RETRY     → the same batch again after Retry-After, or exponential backoff with jitter.

Up to `max_inflight_batches` are on the wire at once (a WAN round trip would otherwise cap
the drain rate), but they are settled strictly in outbox order: a batch is acknowledged only
after every batch before it was. With 1, events also arrive in the order they were accepted.
A batch keeps its id across retries so the platform can spot a duplicate.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import deque

from .config.models import CloudBase
from .model import Batch, Outcome, OutcomeKind
from .status import Alerts, PartStatus
from .store.declined import DeclinedStore
from .store.outbox import Cursor, Outbox, ReadResult
from .uplinks.base import Uplink

log = logging.getLogger(__name__)


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


class Forwarder:
    def __init__(
        self,
        outbox: Outbox,
        declined: DeclinedStore,
        uplink: Uplink,
        cloud: CloudBase,
        epoch: int,
        alerts: Alerts,
    ) -> None:
        self.outbox = outbox
        self.declined = declined
        self.uplink = uplink
        self.cloud = cloud
        self.epoch = epoch
        self.alerts = alerts
        self.status = PartStatus(name="forwarder", type="forwarder")
        cap = cloud.retry_max_backoff_ms / 1000
        self.retry_backoff = Backoff(0.5, cap)
        self.keys_backoff = Backoff(1.0, cap)
        self.keys_suspect = False
        self._last_send = 0.0
        self._stopping = False
        self._acks: set[asyncio.Future[None]] = set()
        self._window: deque[tuple[Batch, asyncio.Task[Outcome]]] = deque()

    def stop_soon(self) -> None:
        """Finish the batches in flight, then stop (used on a clean hand-over)."""
        self._stopping = True
        if self.outbox.changed is not None:
            self.outbox.changed.set()  # wake a wait for more events

    # ------------------------------------------------------------------ the loop

    async def run(self) -> None:
        """Keep up to max_inflight_batches on the wire; settle them strictly in outbox order."""
        cursor: Cursor = await self.outbox.head()
        self.status.state = "running"
        window = self._window
        try:
            while not (self._stopping and not window):
                limit = 1 if self.keys_suspect else self.cloud.max_inflight_batches
                while len(window) < limit and not self._stopping:
                    got = await self._next_events(cursor, wait=not window)
                    if not got.events:
                        break
                    batch = self._batch(got)
                    cursor = got.after
                    self.outbox.hold(batch.cursor)
                    window.append((batch, asyncio.create_task(self._deliver(batch))))
                if not window:
                    continue
                batch, task = window[0]
                outcome = await task
                window.popleft()
                await self._settle(batch, outcome)
        finally:
            for _, task in window:
                task.cancel()
            window.clear()
            await self.flush_acks()

    def _batch(self, got: ReadResult) -> Batch:
        return Batch(
            batch_id=f"{got.first[0]}.{got.first[1]}+{len(got.events)}",
            epoch=self.epoch,
            events=got.events,
            cursor=got.after,
            nbytes=got.nbytes,
        )

    async def _next_events(self, cursor: Cursor, wait: bool) -> ReadResult:
        """Up to bulk_max_elements events. With `wait`, waits for a full batch up to the
        transmit interval (or for anything at all); without, takes only a full batch."""
        size = self.cloud.bulk_max_elements
        changed = self.outbox.changed
        deadline = self._last_send + self.cloud.bulk_transmit_interval_ms / 1000
        while True:
            if changed is not None:
                changed.clear()
            got = await self.outbox.read(cursor, size)
            n = len(got.events)
            if n >= size or self._stopping:
                return got
            if not wait:
                return ReadResult([], cursor, cursor, 0)
            if n and time.monotonic() >= deadline:
                return got
            timeout = max(0.0, deadline - time.monotonic()) if n else 1.0
            if changed is None:
                await asyncio.sleep(min(timeout, 0.05))
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), timeout)

    # ------------------------------------------------------------------ one batch

    async def _deliver(self, batch: Batch) -> Outcome:
        """Send until the platform settles it: DELIVERED or DECLINED (RETRY loops here)."""
        while True:
            self._last_send = time.monotonic()
            try:
                outcome = await self.uplink.send(batch)
            except Exception as exc:  # an uplink must not raise; if it does, it is a retry
                log.exception("uplink %s raised", self.uplink.status.name)
                outcome = Outcome(OutcomeKind.RETRY, None, f"uplink error: {exc}")
            if outcome.kind is not OutcomeKind.RETRY:
                return outcome
            if self._stopping:
                raise asyncio.CancelledError  # left in the outbox for the next master
            wait = outcome.retry_after_s
            delay = wait if wait is not None else self.retry_backoff.next()
            self.status.error(f"{outcome.reason}; retrying in {delay:.1f} s", "retrying")
            self.status.count("retries")
            await asyncio.sleep(delay)

    async def _settle(self, batch: Batch, outcome: Outcome) -> None:
        if outcome.kind is OutcomeKind.DELIVERED:
            self._ack_soon(batch, "delivered")
            self.retry_backoff.reset()
            if self.keys_suspect:
                self.keys_suspect = False
                self.keys_backoff.reset()
                self.alerts.raise_("info", "the platform accepts the keys again; delivery resumed")
            self.status.ok("running")
            return
        await self._decline(batch, outcome)

    async def _decline(self, batch: Batch, outcome: Outcome) -> None:
        item = await asyncio.to_thread(
            self.declined.decline,
            batch_id=batch.batch_id,
            epoch=batch.epoch,
            events=batch.events,
            status=outcome.status,
            reason=outcome.reason,
            response_body=outcome.body,
            declined_at_ms=int(time.time() * 1000),
        )
        self._ack_soon(batch, "declined")
        self.status.count("declined_batches")
        hint = (
            "check access_key and secret_key; replay with `datonis-edge declined replay` once fixed"
            if outcome.keys_suspect
            else "the platform refused this batch's content"
        )
        self.alerts.raise_(
            "error",
            f"batch {batch.batch_id} ({len(batch.events)} events) declined: {outcome.reason}; "
            f"kept as declined/{item.path.name}; {hint}",
            thing_key=batch.events[0].get("thing_key") if batch.events else None,
        )
        if outcome.keys_suspect:
            # back off, then the next batch alone is the probe (the window shrinks to one)
            self.keys_suspect = True
            delay = self.keys_backoff.next()
            self.status.error(f"{outcome.reason}; next probe in {delay:.1f} s", "backing_off")
            await asyncio.sleep(delay)
        else:
            self.status.error(outcome.reason, "running")

    # ------------------------------------------------------------------ acks

    def _ack_soon(self, batch: Batch, outcome: str) -> None:
        """Acknowledge without waiting for the commit: acks group-commit in the background,
        in order. A crash before it commits only means the batch is sent again."""
        task = asyncio.ensure_future(self.outbox.ack(batch.cursor, len(batch.events), outcome))
        self._acks.add(task)
        task.add_done_callback(self._ack_done)

    def _ack_done(self, task: asyncio.Future[None]) -> None:
        self._acks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("outbox ack failed: %s", task.exception())
            self.status.error(f"outbox ack failed: {task.exception()}")

    async def flush_acks(self) -> None:
        if self._acks:
            await asyncio.gather(*list(self._acks), return_exceptions=True)
