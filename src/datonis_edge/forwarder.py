"""The forwarder: reads the outbox in batches, hands each to the uplink, applies the outcome.

DESIGN.md's outcome table lives here and nowhere else:

    DELIVERED → ack (removed from the outbox)
    DECLINED  → written to declined/ with status, reason and body, then ack; alert raised.
                A 401 also backs the uplink off (the keys are probably wrong) and the next
                batch is the probe: the moment the platform accepts again, batches flow.
    RETRY     → the same batch again after Retry-After, or exponential backoff with jitter,
                capped by retry_max_backoff_ms. "Is it reachable" is apart from "send it
                again": while a batch backs off after a connection failure, the uplink probes
                cheaply and often (Uplink.wait_reachable) and the batch goes the moment the
                endpoint is back; a 5xx or a timeout from a reachable platform waits it out.

What fails on this side of the wire is no network fault and would fail forever, so it must
not hold up the batches behind it (store/quarantine.py keeps it for inspection, replayable):

    the uplink answers a local DECLINED (status None: the batch does not encode)
                → declined/ like a 422, with the local reason; counted, alerted.
    the uplink *raises* on a batch (a bug, or data it chokes on)
                → retried with backoff LOCAL_ERROR_ATTEMPTS times, then declined locally.
    an outbox segment does not read back (invalid JSON stored by an old bug, or bytes
    that no longer match their checksum)
                → declined with its raw bytes, acknowledged in order; reading goes on.

Up to `max_inflight_batches` are on the wire at once (a WAN round trip would otherwise cap
the drain rate), but they are settled strictly in outbox order: a batch is acknowledged only
after every batch before it was. With 1, events also arrive in the order they were accepted.
A batch keeps its id across retries so the platform can spot a duplicate.

On a stop, a batch waiting to be retried is abandoned at once and a request on the wire gets
what is left of the stop's budget (Gateway.stop): either way the batch stays in the outbox.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import Any

from .backoff import Backoff
from .config.models import CloudBase
from .logs import OnceLogger
from .metrics import UPLINK_REQUEST_SECONDS, UPLINK_RETRIES
from .model import Batch, Outcome, OutcomeKind
from .status import Alerts, PartStatus
from .store.declined import DeclinedStore
from .store.outbox import Cursor, Outbox, OutboxClosed, ReadResult
from .store.quarantine import Undecodable, decline_locally, find_undecodable, keep_raw
from .uplinks.base import Uplink, is_local, local_decline

log = logging.getLogger(__name__)

# an uplink that raised on the same batch this often is failing on the batch, not the network
LOCAL_ERROR_ATTEMPTS = 3


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
        self._stop = asyncio.Event()
        self._acks: set[asyncio.Future[None]] = set()
        self._window: deque[tuple[Batch, asyncio.Future[Outcome | None]]] = deque()
        self._undecodable: dict[str, Undecodable] = {}
        self._once = OnceLogger(log, interval_s=60.0)

    def stop_soon(self) -> None:
        """Finish the requests on the wire, abandon the retries, then stop (a clean hand-over)."""
        self._stopping = True
        self._stop.set()  # wake every retry and backoff wait
        if self.outbox.changed is not None:
            self.outbox.changed.set()  # wake a wait for more events

    async def _stopped_within(self, delay: float, until_reachable: bool = False) -> bool:
        """Wait `delay` seconds (less with `until_reachable`, once the uplink's endpoint takes
        connections again); True at once if a stop was asked for meanwhile."""
        waits = [asyncio.ensure_future(self._stop.wait())]
        if until_reachable:
            waits.append(asyncio.ensure_future(self.uplink.wait_reachable()))
        try:
            await asyncio.wait(waits, timeout=delay, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiting in waits:
                waiting.cancel()
        return self._stop.is_set()

    # ------------------------------------------------------------------ the loop

    async def run(self) -> None:
        """Keep up to max_inflight_batches on the wire; settle them strictly in outbox order."""
        cursor: Cursor = await self.outbox.head()
        self.status.ok("running")
        window = self._window
        try:
            while not (self._stopping and not window):
                limit = 1 if self.keys_suspect else self.cloud.max_inflight_batches
                while len(window) < limit and not self._stopping:
                    got = await self._next_events(cursor, wait=not window)
                    if isinstance(got, Undecodable):
                        batch, cursor = self._refuse_undecodable(got), (got.segment, got.n)
                        self.outbox.hold(batch.cursor)
                        window.append((batch, _done(local_decline_of(got))))
                        continue
                    if not got.count:
                        break
                    batch = self._batch(got)
                    cursor = got.after
                    self.outbox.hold(batch.cursor)
                    window.append((batch, asyncio.ensure_future(self._deliver(batch))))
                if not window:
                    continue
                batch, task = window[0]
                outcome = await task
                window.popleft()
                if outcome is None:
                    break  # abandoned by a stop: it and everything after it stay in the outbox
                await self._settle(batch, outcome)
        finally:
            for _, task in window:
                task.cancel()
            window.clear()
            self._undecodable.clear()
            await self.flush_acks()

    def _batch(self, got: ReadResult) -> Batch:
        """The events as the outbox stored them (bytes): parsed only if someone asks."""
        return Batch(
            batch_id=f"{got.first[0]}.{got.first[1]}+{got.count}",
            epoch=self.epoch,
            cursor=got.after,
            count=got.count,
            payload=got.payload,
            parsed=got.parsed,
            nbytes=got.nbytes,
        )

    def _refuse_undecodable(self, bad: Undecodable) -> Batch:
        """A pseudo-batch for a segment that does not decode: settled in order, then declined."""
        batch = Batch(
            batch_id=f"{bad.segment}.{bad.begin}+{bad.count}",
            epoch=self.epoch,
            cursor=(bad.segment, bad.n),
            count=bad.count,
            parsed=[],
            nbytes=len(bad.raw),
        )
        self._undecodable[batch.batch_id] = bad
        return batch

    async def _read(self, cursor: Cursor, size: int) -> ReadResult | Undecodable:
        """outbox.read, except that a segment which does not decode comes back on its own."""
        try:
            return await self.outbox.read(cursor, size)
        except OutboxClosed:
            raise
        except Exception:
            bad = await find_undecodable(self.outbox, cursor, size)
            if bad is None:
                raise  # not the data: a storage fault, for the gateway's supervision
            if bad.good_before:  # the events before it first, in order
                return await self.outbox.read(cursor, bad.good_before)
            return bad

    async def _next_events(self, cursor: Cursor, wait: bool) -> ReadResult | Undecodable:
        """Up to bulk_max_elements events. With `wait`, waits for a full batch up to the
        transmit interval (or for anything at all); without, takes only a full batch.

        While a partial batch waits, the outbox is read again only once enough events may
        have come to fill it (by its `accepted` counter), not after every append: at a few
        thousand appends a second a read per append (a transaction on the writer thread, and
        the partial batch decoded again each time) was most of the forwarder's cost."""
        size = self.cloud.bulk_max_elements
        deadline = self._last_send + self.cloud.bulk_transmit_interval_ms / 1000
        while True:
            before = self._accepted()  # every event counted here is visible to the read
            got = await self._read(cursor, size)
            if isinstance(got, Undecodable):
                return got
            n = got.count
            if n >= size or self._stopping:
                return got
            if not wait:
                return ReadResult(0, cursor, cursor, 0)
            if n and time.monotonic() >= deadline:
                return got
            # events the read did not see are counted after `before`: wait for enough of them
            await self._more_events(before + (size - n if n else 1), deadline if n else None)

    def _accepted(self) -> int:
        return self.outbox.stats().counters.get("accepted", 0)

    async def _more_events(self, accepted: int, deadline: float | None) -> None:
        """Until the outbox's `accepted` counter reaches `accepted`, the deadline passes (else
        a second: a safety net), or a stop is asked for."""
        changed = self.outbox.changed
        until = deadline if deadline is not None else time.monotonic() + 1.0
        while not self._stopping:
            if changed is not None:
                changed.clear()
            if self._accepted() >= accepted:
                return
            timeout = until - time.monotonic()
            if timeout <= 0:
                return
            if changed is None:
                await asyncio.sleep(min(timeout, 0.05))
                continue
            try:
                await asyncio.wait_for(changed.wait(), timeout)
            except TimeoutError:
                return

    # ------------------------------------------------------------------ one batch

    async def _deliver(self, batch: Batch) -> Outcome | None:
        """Send until settled: DELIVERED or DECLINED (RETRY loops here); None if a stop came."""
        raised = 0
        while True:
            self._last_send = time.monotonic()
            try:
                outcome = await self.uplink.send(batch)
                UPLINK_REQUEST_SECONDS.labels(self.uplink.status.name).observe(
                    time.monotonic() - self._last_send
                )
            except Exception as exc:  # an uplink must not raise: a bug, or data it chokes on
                raised += 1
                outcome = self._uplink_raised(batch, exc, raised)
            else:
                if outcome.kind is OutcomeKind.RETRY:
                    self._report_unreachable(outcome)
            if outcome.kind is not OutcomeKind.RETRY:
                return outcome
            if self._stopping:
                return None  # left in the outbox for the next master
            wait = outcome.retry_after_s
            delay = wait if wait is not None else self.retry_backoff.next()
            self.status.error(f"{outcome.reason}; retrying in {delay:.1f} s", "retrying")
            self.status.count("retries")
            UPLINK_RETRIES.labels(self.uplink.status.name).inc()
            # a Retry-After is the platform's own word: kept; a backoff ends early once the
            # uplink, found unreachable, takes connections again (its cheap probe says so)
            if await self._stopped_within(delay, until_reachable=wait is None):
                return None

    def _uplink_raised(self, batch: Batch, exc: Exception, times: int) -> Outcome:
        what = f"{exc.__class__.__name__}: {exc}"
        self._once.log(
            f"raised {self.uplink.status.name}",
            "uplink %s failed on batch %s (%s); it is tried %d times, then declined locally "
            "and kept for inspection; this is a bug, please report it",
            self.uplink.status.name,
            batch.batch_id,
            what,
            LOCAL_ERROR_ATTEMPTS,
            level=logging.ERROR,
        )
        log.debug("uplink %s raised", self.uplink.status.name, exc_info=exc)
        if times >= LOCAL_ERROR_ATTEMPTS:
            return local_decline(
                exc, f"the uplink failed on this batch {times} times; it is kept for inspection"
            )
        return Outcome(OutcomeKind.RETRY, None, f"uplink error: {what}")

    def _report_unreachable(self, outcome: Outcome) -> None:
        """Once per outage (then once a minute while it lasts) at WARNING; recovery at INFO."""
        self._once.log(
            "unreachable",
            "uplink %s: %s; retrying with backoff, events stay in the outbox",
            self.uplink.status.name,
            outcome.reason,
        )

    async def _settle(self, batch: Batch, outcome: Outcome) -> None:
        if outcome.kind is not OutcomeKind.DECLINED or outcome.status is not None:
            self._reachable_again()
        if outcome.kind is OutcomeKind.DELIVERED:
            self._ack_soon(batch, "delivered", batch.count)
            self.retry_backoff.reset()
            if self.keys_suspect:
                self.keys_suspect = False
                self.keys_backoff.reset()
                log.info("the platform accepts the keys again; delivery resumed")
                self.alerts.raise_("info", "the platform accepts the keys again; delivery resumed")
            self.status.ok("running")
            return
        await self._decline(batch, outcome)

    def _reachable_again(self) -> None:
        self._once.resolve("unreachable", "uplink %s answers again", self.uplink.status.name)

    async def _decline(self, batch: Batch, outcome: Outcome) -> None:
        bad = self._undecodable.pop(batch.batch_id, None)
        count = bad.count if bad is not None else batch.count
        now_ms = int(time.time() * 1000)
        events, unparsed = await asyncio.to_thread(_parsed, batch)
        if is_local(outcome):
            item = await asyncio.to_thread(
                decline_locally,
                self.declined,
                batch_id=batch.batch_id,
                epoch=batch.epoch,
                events=events,
                reason=outcome.reason,
                declined_at_ms=now_ms,
                undecodable=bad,
            )
            hint = "inspect it (and fix it) there, then replay with `datonis-edge declined replay`"
        else:
            item = await asyncio.to_thread(
                self.declined.decline,
                batch_id=batch.batch_id,
                epoch=batch.epoch,
                events=events,
                status=outcome.status,
                reason=outcome.reason,
                response_body=outcome.body,
                declined_at_ms=now_ms,
            )
            hint = (
                "check access_key and secret_key; replay with `datonis-edge declined replay` "
                "once fixed"
                if outcome.keys_suspect
                else "the platform refused this batch's content"
            )
        if unparsed is not None:  # kept as the bytes they are
            await asyncio.to_thread(keep_raw, item, batch.payload or b"", unparsed, count)
        self._ack_soon(batch, "declined", count)
        self.status.count("declined_batches")
        by_status = self.status.details.setdefault("declined_by_status", {})
        key = str(outcome.status) if outcome.status is not None else "local"
        by_status[key] = by_status.get(key, 0) + count
        message = (
            f"batch {batch.batch_id} ({count} events) declined: {outcome.reason}; "
            f"kept as declined/{item.id}; {hint}"
        )
        self._once.log(f"declined {outcome.status}", "%s", message, level=logging.ERROR)
        first = events[0] if events else None
        self.alerts.raise_(
            "error",
            message,
            thing_key=str(first.get("thing_key")) if isinstance(first, dict) else None,
        )
        if outcome.keys_suspect:
            # back off, then the next batch alone is the probe (the window shrinks to one)
            self.keys_suspect = True
            delay = self.keys_backoff.next()
            self.status.error(f"{outcome.reason}; next probe in {delay:.1f} s", "backing_off")
            await self._stopped_within(delay)
        else:
            self.status.error(outcome.reason, "running")

    # ------------------------------------------------------------------ acks

    def _ack_soon(self, batch: Batch, outcome: str, count: int) -> None:
        """Acknowledge without waiting for the commit: acks group-commit in the background,
        in order. A crash before it commits only means the batch is sent again."""
        task = asyncio.ensure_future(self.outbox.ack(batch.cursor, count, outcome))
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


def _parsed(batch: Batch) -> tuple[list[Any], str | None]:
    """A batch's events for its decline record, or why its stored bytes do not parse."""
    try:
        return batch.events, None
    except ValueError as exc:  # bytes stored against append_raw's promise
        return [], f"the batch's bytes as stored; they do not parse ({exc})"


def local_decline_of(bad: Undecodable) -> Outcome:
    return local_decline(
        ValueError(f"outbox segment {bad.segment} does not decode ({bad.error})"),
        "this batch could not be decoded; its raw bytes are kept for inspection",
    )


def _done(outcome: Outcome) -> asyncio.Future[Outcome | None]:
    fut: asyncio.Future[Outcome | None] = asyncio.get_running_loop().create_future()
    fut.set_result(outcome)
    return fut
