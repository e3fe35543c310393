"""The master's pipeline: adapters → things → outbox → forwarder → uplink, and its status.

Built and started by the supervisor once this instance holds the data-directory lock, torn
down when it lets go. Also the small service interface the console is handed (status, replay).

Every long-running part (the forwarder, each adapter, the replay watcher, the alert sender, the
heartbeat) runs under one supervision (`_spawn`): when it fails, its status says `failed` with
the error and the time, one ERROR line and one alert name the cause, and it is started again
with backoff; once it has run RUNNING_AGAIN_AFTER_S without failing, one INFO line says so.
A part that keeps failing is logged at most once a minute, never a flood.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .adapters import Adapter, ReadingSink, Rejected, adapter_class
from .forwarder import Backoff, Forwarder
from .logs import OnceLogger
from .model import Outcome, OutcomeKind
from .root_config import Config
from .serving import PortError
from .status import Alert, Alerts, PartStatus
from .store.declined import DeclinedStore
from .store.outbox import Outbox, OutboxClosed, OutboxFull
from .store.quarantine import cancel_replay
from .things.mapping import ThingMap
from .uplinks import make_uplink

log = logging.getLogger(__name__)

RUNNING_AGAIN_AFTER_S = 2.0  # a restarted part that lives this long is running again
STOP_FLUSH_S = 1.5  # a clean stop lets requests on the wire finish this long, then cancels

PartRun = Callable[[], Coroutine[Any, Any, Any]]


@dataclass
class Part:
    """One long-running part under supervision: how to (re)start it and where it reports."""

    name: str
    status: PartStatus
    run: PartRun | None
    backoff: Backoff = field(default_factory=lambda: Backoff(1.0, 30.0))
    failing: bool = False  # failed, and not yet running again
    reported: bool = False  # its failure was logged: its recovery is logged too
    spawned: bool = False


class Gateway:
    def __init__(self, datadir: Path, config: Config, epoch: int, alerts: Alerts) -> None:
        self.datadir = datadir
        self.config = config
        self.epoch = epoch
        self.alerts = alerts
        self.loop: asyncio.AbstractEventLoop | None = None

        def outbox_alert(level: str, message: str) -> None:  # on the outbox's writer thread
            if self.loop is not None:
                self.loop.call_soon_threadsafe(self.alerts.raise_, level, message)
            else:
                self.alerts.raise_(level, message)

        self.outbox = Outbox(
            datadir / "outbox",
            max_bytes=config.outbox.max_bytes,
            policy=config.outbox.policy,
            on_evict=self._on_evict,
            on_alert=outbox_alert,
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
        self._stopping = asyncio.Event()
        self._once = OnceLogger(log, interval_s=60.0)
        # what `_spawn` restarts, by task name (start() names them)
        self._parts: dict[str, Part] = {}
        self._part("forwarder", self.forwarder.status, self.forwarder.run)
        for adapter in self.adapters:
            self._part(f"adapter {adapter.status.name}", adapter.status, adapter.run)
        for name, run in (
            ("replay watcher", self._replay_watcher),
            ("alert sender", self._send_alerts),
            ("heartbeat", self._heartbeats),
        ):
            self._part(name, PartStatus(name=name, type="task"), run)

    def _part(self, name: str, status: PartStatus, run: PartRun) -> None:
        self._parts[name] = Part(name, status, run)

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

    async def start(self, heartbeat_counters: dict[str, Any] | None = None) -> None:
        """Open the outbox (salvaging a damaged one), compare it with the counters of the last
        master's heartbeat (acknowledged readings that are missing are reported), start."""
        self.loop = asyncio.get_running_loop()
        self.alerts.listeners.append(self._on_alert)  # the outbox's alerts at open go out too
        await asyncio.to_thread(self.outbox.open)
        await asyncio.to_thread(self.outbox.reconcile, heartbeat_counters)
        self.outbox.changed = asyncio.Event()
        self.declined.ensure()
        await self.uplink.start()
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

    def _spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> None:
        part = self._parts.get(name) or self._parts.setdefault(
            name, Part(name, PartStatus(name=name, type="task"), None)
        )
        part.spawned = True
        task = asyncio.create_task(self._supervise(part, coro), name=name)
        task.add_done_callback(self._task_done)
        self._tasks.append(task)

    async def _supervise(self, part: Part, coro: Coroutine[Any, Any, Any]) -> None:
        """Run the part; when it fails, report it and start it again after a backoff."""
        loop = asyncio.get_running_loop()
        while True:
            if part.status.type == "task":
                part.status.ok("running")  # our own loops: the adapters and forwarder say so
            steady = (
                loop.call_later(RUNNING_AGAIN_AFTER_S, self._running_again, part)
                if part.failing
                else None
            )
            try:
                await coro
                if not self._stopping.is_set():  # it ended on its own: not running any more
                    part.status.state = "stopped"
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                delay = part.backoff.next()
                self._failed(part, exc, delay)
            finally:
                if steady is not None:
                    steady.cancel()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)
            if self._stopping.is_set() or part.run is None:
                return
            part.status.count("restarts")
            part.status.state = "starting"
            coro = part.run()

    def _failed(self, part: Part, exc: Exception, delay: float) -> None:
        cause = str(exc) if isinstance(exc, PortError) else f"{exc.__class__.__name__}: {exc}"
        again = f"restarting in {delay:.1f} s" if part.run is not None else "not restartable"
        part.status.failed(f"{cause}; {again}")
        first = not part.failing
        part.failing = True
        # never resolved: a part that flaps is logged at most once a minute (with a count)
        if first and self._once.log(
            f"failed {part.name}", "%s failed: %s; %s", part.name, cause, again, level=logging.ERROR
        ):
            part.reported = True
            log.debug("%s failed", part.name, exc_info=exc)  # the traceback, for a bug report
            self.alerts.raise_("error", f"{part.name} failed: {cause}; {again}")

    def _running_again(self, part: Part) -> None:
        part.failing = False
        part.backoff.reset()
        if part.status.state in ("starting", "failed"):
            part.status.ok("running")
        if part.reported:
            part.reported = False
            log.info("%s is running again", part.name)
            self.alerts.raise_("info", f"{part.name} is running again")

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        """A supervision that ended by an exception: a bug in it; the part stays down."""
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            part = self._parts.get(task.get_name())
            if part is not None:
                part.status.failed(f"{exc.__class__.__name__}: {exc}; not restarted")
            log.error(
                "%s stopped and is not restarted: %s; please report this bug", task.get_name(), exc
            )
            log.debug("%s stopped", task.get_name(), exc_info=exc)
            self.alerts.raise_("error", f"{task.get_name()} stopped: {exc}")

    async def _keep_running(self, adapter: Adapter) -> None:
        """An adapter's run, supervised like every part by `_spawn`."""
        await adapter.run()

    async def stop(self, flush_timeout: float = STOP_FLUSH_S) -> None:
        """Stop taking input, let the requests on the wire finish briefly (retries are
        abandoned at once), close the uplink and the outbox. What was not delivered stays
        in the outbox for the next master."""
        self._stopping.set()
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
        self._stopping.set()
        for t in self._tasks:
            t.cancel()

    # ------------------------------------------------------------------ background

    async def _replay_watcher(self) -> None:
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

    async def _send_alerts(self) -> None:
        while True:
            alert = await self._alert_queue.get()
            if self.forwarder.keys_suspect:
                continue  # the platform refuses our keys: an alert would be refused too
            outcome = await self.uplink.alert(alert.thing_key, alert.level, alert.message)
            self._report_unsent("alert", outcome)

    async def _heartbeats(self) -> None:
        keys = self.config.thing_keys()
        interval = self.config.cloud.heartbeat_interval_ms / 1000
        while True:
            await asyncio.sleep(interval)
            if keys:
                self._report_unsent("heartbeat", await self.uplink.heartbeat(keys))

    def _report_unsent(self, what: str, outcome: Outcome) -> None:
        if outcome.kind is OutcomeKind.DELIVERED:
            self._once.resolve(f"{what} not delivered", "%ss reach the platform again", what)
        else:
            self._once.log(
                f"{what} not delivered",
                "%s not delivered to the platform: %s",
                what,
                outcome.reason,
            )

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
            # the gateway's own background loops (adapters and forwarder report above)
            "tasks": [
                p.status.snapshot()
                for p in self._parts.values()
                if p.spawned and p.status.type == "task"
            ],
        }
