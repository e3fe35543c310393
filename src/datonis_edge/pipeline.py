"""The master's pipeline: adapters → things → outbox → forwarder → uplink, and its status.

Built and started by the supervisor once this instance holds the data-directory lock, torn
down when it lets go. Also the small service interface the console is handed (status, replay).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path
from typing import Any

from .adapters import Adapter, ReadingSink, Rejected, adapter_class
from .forwarder import Backoff, Forwarder
from .root_config import Config
from .serving import PortError
from .status import Alert, Alerts
from .store.declined import DeclinedStore
from .store.outbox import Outbox, OutboxClosed, OutboxFull
from .things.mapping import ThingMap
from .uplinks import make_uplink

log = logging.getLogger(__name__)


class Gateway:
    def __init__(self, datadir: Path, config: Config, epoch: int, alerts: Alerts) -> None:
        self.datadir = datadir
        self.config = config
        self.epoch = epoch
        self.alerts = alerts
        self.loop: asyncio.AbstractEventLoop | None = None
        self.outbox = Outbox(
            datadir / "outbox",
            max_bytes=config.outbox.max_bytes,
            policy=config.outbox.policy,
            on_evict=self._on_evict,
        )
        self.declined = DeclinedStore(datadir / "declined")
        self.uplink = make_uplink(config.cloud)
        self.forwarder = Forwarder(
            self.outbox, self.declined, self.uplink, config.cloud, epoch, alerts
        )
        self.adapters: list[Adapter] = []
        for svc in config.services:
            if svc.enabled:
                things = ThingMap(svc.things, svc.send_interval_ms)
                cls = adapter_class(svc.type)
                self.adapters.append(cls(svc, self._sink_for(things), workdir=datadir))
        self._tasks: list[asyncio.Task[Any]] = []
        self._alert_queue: asyncio.Queue[Alert] = asyncio.Queue(maxsize=1000)

    # ------------------------------------------------------------------ wiring

    def _sink_for(self, things: ThingMap) -> ReadingSink:
        outbox = self.outbox

        async def sink(readings: list[dict[str, Any]], raw: bytes | None = None) -> int:
            events = things.apply(readings)
            if not events:
                return 0
            try:
                if raw is not None and events is readings:  # passed through unchanged
                    await outbox.append_raw(raw, len(events))
                else:
                    await outbox.append(events)
            except OutboxFull as exc:
                raise Rejected(str(exc)) from None
            except OutboxClosed:
                raise Rejected("the gateway is stopping; send again to the new master") from None
            return len(events)

        return sink

    def _on_evict(self, count: int) -> None:  # called on the outbox writer thread
        if self.loop is not None:
            self.loop.call_soon_threadsafe(
                self.alerts.raise_,
                "warning",
                f"outbox cap of {self.config.outbox.max_bytes} bytes reached: {count} oldest "
                "events evicted (policy drop_oldest)",
            )

    def _on_alert(self, alert: Alert) -> None:
        with contextlib.suppress(asyncio.QueueFull):
            self._alert_queue.put_nowait(alert)

    # ------------------------------------------------------------------ life

    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        await asyncio.to_thread(self.outbox.open)
        self.outbox.changed = asyncio.Event()
        self.declined.ensure()
        await self.uplink.start()
        self.alerts.listeners.append(self._on_alert)
        self._spawn(self.forwarder.run(), "forwarder")
        for adapter in self.adapters:
            self._spawn(self._keep_running(adapter), f"adapter {adapter.status.name}")
        self._spawn(self._replay_watcher(), "replay watcher")
        self._spawn(self._send_alerts(), "alert sender")
        if self.config.cloud.heartbeat_interval_ms > 0:
            self._spawn(self._heartbeats(), "heartbeat")

    async def wait_ready(self, timeout: float = 10) -> None:
        """Until every adapter accepts input (listeners bound, subscriptions made)."""
        await asyncio.wait_for(asyncio.gather(*(a.ready() for a in self.adapters)), timeout)

    def _spawn(self, coro: Any, name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        task.add_done_callback(self._task_done)
        self._tasks.append(task)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            log.error("%s stopped: %s", task.get_name(), exc, exc_info=exc)
            self.alerts.raise_("error", f"{task.get_name()} stopped: {exc}")

    async def _keep_running(self, adapter: Adapter) -> None:
        backoff = Backoff(1.0, 30.0)
        while True:
            try:
                await adapter.run()
                return
            except asyncio.CancelledError:
                raise
            except PortError as exc:
                adapter.status.error(str(exc), "error")
            except Exception as exc:
                log.exception("service %s failed", adapter.status.name)
                adapter.status.error(f"{exc.__class__.__name__}: {exc}", "error")
            await asyncio.sleep(backoff.next())

    async def stop(self, flush_timeout: float = 2.0) -> None:
        """Stop taking input, let the batch in flight finish briefly, close the outbox."""
        adapters = [t for t in self._tasks if t.get_name().startswith("adapter ")]
        for t in adapters:
            t.cancel()
        await asyncio.gather(*adapters, return_exceptions=True)
        self.forwarder.stop_soon()
        fwd = [t for t in self._tasks if t.get_name() == "forwarder"]
        with contextlib.suppress(Exception):
            await asyncio.wait(fwd, timeout=flush_timeout)
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._on_alert in self.alerts.listeners:
            self.alerts.listeners.remove(self._on_alert)
        await self.uplink.close()
        await asyncio.to_thread(self.outbox.close)

    def abort(self) -> None:
        """Stop forwarding at once (mastership lost): no more batches leave this process."""
        for t in self._tasks:
            t.cancel()

    # ------------------------------------------------------------------ background

    async def _replay_watcher(self) -> None:
        while True:
            await self.replay_requested()
            await asyncio.sleep(1.0)

    async def replay_requested(self) -> int:
        """Move every declined batch marked for replay back into the outbox."""
        items = await asyncio.to_thread(self.declined.replay_requests)
        moved = 0
        for item in items:
            await self.outbox.append(item.events or [])
            await asyncio.to_thread(self.declined.remove, item)
            moved += item.count
        if moved:
            self.alerts.raise_("info", f"{len(items)} declined batch(es), {moved} events, replayed")
        return moved

    async def replay(self, ids: list[str] | None) -> int:
        items = await asyncio.to_thread(self.declined.find, ids)
        for item in items:
            await asyncio.to_thread(self.declined.request_replay, item)
        return await self.replay_requested()

    async def _send_alerts(self) -> None:
        while True:
            alert = await self._alert_queue.get()
            if self.forwarder.keys_suspect:
                continue  # the platform refuses our keys: an alert would be refused too
            outcome = await self.uplink.alert(alert.thing_key, alert.level, alert.message)
            if outcome.kind.value != "delivered":
                log.warning("alert not delivered to the platform: %s", outcome.reason)

    async def _heartbeats(self) -> None:
        keys = self.config.thing_keys()
        interval = self.config.cloud.heartbeat_interval_ms / 1000
        while True:
            await asyncio.sleep(interval)
            if keys:
                await self.uplink.heartbeat(keys)

    # ------------------------------------------------------------------ status

    def snapshot(self) -> dict[str, Any]:
        stats = self.outbox.stats()
        return {
            "outbox": {
                "pending": stats.pending,
                "bytes": stats.bytes,
                "max_bytes": stats.max_bytes,
                "policy": stats.policy,
                "segments": stats.segments,
                "commits": stats.commits,
            },
            "counters": {
                "accepted": stats.counters["accepted"],
                "delivered": stats.counters["delivered"],
                "declined": stats.counters["declined"],
                "evicted": stats.counters["evicted"],
                "rejected": stats.counters["rejected"],
            },
            "declined_batches": self.declined.count(),
            "services": [a.status.snapshot() for a in self.adapters],
            "uplinks": [self.uplink.status.snapshot()],
            "forwarder": self.forwarder.status.snapshot(),
        }
