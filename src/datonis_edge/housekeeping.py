"""The master's background chores beside the data path: replaying declined batches that were
marked for replay, sending alerts and heartbeats to the platform, and watching how full the
outbox is. Each runs as one supervised part of the pipeline."""

from __future__ import annotations

import asyncio
import logging

from .forwarder import Forwarder
from .logs import OnceLogger
from .model import Outcome, OutcomeKind
from .status import Alert, Alerts
from .store.declined import DeclinedStore
from .store.outbox import Outbox, OutboxFull
from .store.quarantine import cancel_replay
from .uplinks import Uplink

log = logging.getLogger("datonis_edge.pipeline")

FILL_WARN = 0.8  # an outbox this full is logged (once) and shown as degraded
FILL_CLEAR = 0.7  # ... until it is back under this


class Housekeeping:
    def __init__(
        self,
        outbox: Outbox,
        declined: DeclinedStore,
        uplink: Uplink,
        forwarder: Forwarder,
        alerts: Alerts,
        thing_keys: list[str],
        heartbeat_interval_s: float,
    ) -> None:
        self.outbox = outbox
        self.declined = declined
        self.uplink = uplink
        self.forwarder = forwarder
        self.alerts = alerts
        self.thing_keys = thing_keys
        self.heartbeat_interval_s = heartbeat_interval_s
        self.alert_queue: asyncio.Queue[Alert] = asyncio.Queue(maxsize=1000)
        self.outbox_filling = False
        self._once = OnceLogger(log, interval_s=60.0)

    # ------------------------------------------------------------------ declined replay

    async def replay_watcher(self) -> None:
        while True:
            await self.replay_requested()
            await asyncio.sleep(1.0)

    async def replay_requested(self) -> int:
        """Move every declined batch marked for replay back into the outbox. One that cannot
        go back (its events are not a list of events, or do not encode) is unmarked, named
        in an alert, and does not hold up the others."""
        items = await asyncio.to_thread(self.declined.replay_requests)
        moved = batches = 0
        for item in items:
            events = item.events if item.events is not None else []
            try:
                if not isinstance(events, list) or not all(isinstance(e, dict) for e in events):
                    raise TypeError("'events' is not a list of events")
                await self.outbox.append(events)
            except OutboxFull as exc:
                self._once.log("replay outbox full", "replay waits: %s", exc)
                break  # the outbox is full: the rest stay marked for the next round
            except (TypeError, ValueError) as exc:
                await asyncio.to_thread(cancel_replay, item)
                message = (
                    f"declined/{item.id} cannot be replayed ({exc.__class__.__name__}: {exc}); "
                    "it is kept; fix its events, then request the replay again"
                )
                log.error("%s", message)
                self.alerts.raise_("error", message)
                continue
            await asyncio.to_thread(self.declined.remove, item)
            moved += len(events)
            batches += 1
        if moved:
            log.info("%d declined batch(es), %d events, replayed", batches, moved)
            self.alerts.raise_("info", f"{batches} declined batch(es), {moved} events, replayed")
        return moved

    async def replay(self, ids: list[str] | None) -> int:
        items = await asyncio.to_thread(self.declined.find, ids)
        for item in items:
            await asyncio.to_thread(self.declined.request_replay, item)
        return await self.replay_requested()

    # ------------------------------------------------------------------ to the platform

    def queue_alert(self, alert: Alert) -> None:
        if not self.alert_queue.full():
            self.alert_queue.put_nowait(alert)

    async def send_alerts(self) -> None:
        while True:
            alert = await self.alert_queue.get()
            if self.forwarder.keys_suspect:
                continue  # the platform refuses our keys: an alert would be refused too
            outcome = await self.uplink.alert(alert.thing_key, alert.level, alert.message)
            self._report_unsent("alert", outcome)

    async def heartbeats(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_interval_s)
            if self.thing_keys:
                self._report_unsent("heartbeat", await self.uplink.heartbeat(self.thing_keys))

    def _report_unsent(self, what: str, outcome: Outcome) -> None:
        if outcome.kind is OutcomeKind.DELIVERED:
            self._once.resolve(f"{what} not delivered", "%ss reach the platform again", what)
        elif outcome.kind is OutcomeKind.RETRY and self.uplink.status.state == "retrying":
            # the platform is unreachable and the forwarder says so already: one cause, one line
            log.debug("%s not delivered to the platform: %s", what, outcome.reason)
        else:
            self._once.log(
                f"{what} not delivered",
                "%s not delivered to the platform: %s",
                what,
                outcome.reason,
            )

    # ------------------------------------------------------------------ outbox fill

    async def watch_outbox(self, every_s: float = 1.0) -> None:
        while True:
            self.check_fill()
            await asyncio.sleep(every_s)

    def check_fill(self) -> None:
        """Log (and alert) once when the outbox passes 80 % of its cap, once when it is back.
        The fill is what the cap is measured in (outbox.db's pages in use and its WAL), not
        the events' payload: with a small cap, SQLite's own pages are a good part of it."""
        stats = self.outbox.stats()
        fill = stats.used_bytes / stats.max_bytes if stats.max_bytes else 0.0
        if not self.outbox_filling and fill >= FILL_WARN:
            self.outbox_filling = True
            then = (
                "the oldest are evicted"
                if stats.policy == "drop_oldest"
                else "new readings are refused"
            )
            message = (
                f"the outbox is {fill:.0%} full ({stats.pending} events, {stats.used_bytes} of "
                f"{stats.max_bytes} bytes): the platform is not taking them fast enough; at 100 % "
                f"{then}; check the uplink, or raise outbox.max_bytes"
            )
            log.warning("%s", message)
            self.alerts.raise_("warning", message)
        elif self.outbox_filling and fill < FILL_CLEAR:
            self.outbox_filling = False
            log.info(
                "the outbox is back under %.0f %% of its cap (%.0f %%)",
                FILL_CLEAR * 100,
                fill * 100,
            )

    def evicted(self, count: int) -> None:
        """The cap evicted `count` events (drop_oldest): one line and one alert a minute at
        most, however many appends evict meanwhile (the count is in the status and /metrics)."""
        message = (
            f"outbox cap of {self.outbox.max_bytes} bytes reached: the oldest events are "
            f"evicted (policy drop_oldest; {count} just now); the platform is not taking "
            "readings fast enough: check the uplink, or raise outbox.max_bytes"
        )
        if self._once.log("evicting", "%s", message):
            self.alerts.raise_("warning", message)
