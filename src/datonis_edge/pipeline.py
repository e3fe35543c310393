"""The master's pipeline: adapters → things → outbox → forwarder → uplink, and its status.

Built and started by the supervisor once this instance holds the data-directory lock, torn
down when it lets go. Instructions come back down the same way: the uplink hands them to the
instruction engine (instructions/), which writes through the adapter owning the thing. Every long-running part runs supervised (`supervision.py`); the chores
beside the data path (replay, alerts, heartbeats, outbox fill) are in `housekeeping.py`. Also
the small service interface the console is handed (status, replay).
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

from .adapters import Adapter, Rejected, adapter_class
from .forwarder import Forwarder
from .housekeeping import Housekeeping
from .instructions import InstructionEngine
from .readings import InvalidReading, check_reading
from .root_config import Config
from .status import Alerts, PartStatus
from .store.declined import DeclinedStore
from .store.outbox import DiskFull, Outbox, OutboxClosed, OutboxFull
from .supervision import Parts
from .things.mapping import ThingMap
from .uplinks import REGISTRY, make_uplink

log = logging.getLogger(__name__)

STOP_FLUSH_S = 1.5  # a clean stop lets requests on the wire finish this long, then cancels


def preload(config: Config) -> None:
    """Import the code of the configured adapters and uplink (the registries load it lazily)."""
    REGISTRY[config.cloud.protocol].load()
    for svc in config.services:
        if svc.enabled:
            adapter_class(svc.type)


class LatestValues:
    """thing_key -> metric -> (value, time ms) of what was stored last. Bounded: a listener's
    producers choose thing keys and metric names, so new ones beyond the bounds are not
    tracked (counted in `untracked`); the readings themselves are stored as ever."""

    MAX_THINGS = 20_000
    MAX_METRICS = 2_000  # per thing

    def __init__(self) -> None:
        self.things: dict[str, dict[str, tuple[Any, int]]] = {}
        self.untracked = 0

    def update(self, events: list[dict[str, Any]]) -> None:
        things = self.things
        for event in events:
            at = event.get("timestamp") or 0
            metrics = things.get(event["thing_key"])
            if metrics is None:
                if len(things) >= self.MAX_THINGS:
                    self.untracked += 1
                    continue
                metrics = things[event["thing_key"]] = {}
            for metric, value in event["data"].items():
                if metric in metrics or len(metrics) < self.MAX_METRICS:
                    metrics[metric] = (value, at)
                else:
                    self.untracked += 1


class ServiceSink:
    """What one service hands its readings to (the adapters' `ReadingSink`): mapped to
    metrics, checked, stored; counted for the service as received or rejected.

    Listeners check what they receive themselves (`checked=True`: they answer the producer);
    readings of polled adapters pass the same check here, one by one, so one value beyond the
    limits (a 100 kB OPC UA string) is refused and reported without losing its neighbours."""

    def __init__(self, outbox: Outbox, things: ThingMap) -> None:
        self.outbox = outbox
        self.things = things
        self.status = PartStatus(name="", type="")  # the adapter's, set once it exists
        self.latest = LatestValues()  # what was stored last, for the console's Things page

    async def __call__(
        self, readings: list[dict[str, Any]], raw: bytes | None = None, checked: bool = False
    ) -> int:
        events = self.things.apply(readings)
        if not checked and raw is None:
            events = self._checked(events)
        if not events:
            return 0
        try:
            if raw is not None and events is readings:  # a listener's checked bytes
                await self.outbox.append_raw(raw, len(events))
            else:
                await self.outbox.append(events)
        except OutboxFull as exc:
            self.status.count("rejected", len(events))
            if isinstance(exc, DiskFull):  # the outbox logs it (and its end): one cause, one line
                self.status.logged_elsewhere(str(exc))
            raise Rejected(str(exc)) from None
        except OutboxClosed:
            raise Rejected("the gateway is stopping; send again to the new master") from None
        self.status.count("received", len(events))
        self.latest.update(events)
        return len(events)

    def _checked(self, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        now = int(time.time() * 1000)
        good: list[dict[str, Any]] = []
        for event in events:
            try:
                good.append(check_reading(event, now))
            except InvalidReading as exc:
                self.status.count("malformed")
                self.status.error(f"a reading was refused: {exc}")
        return good


class Pipeline:
    def __init__(self, datadir: Path, config: Config, epoch: int, alerts: Alerts) -> None:
        self.datadir = datadir
        self.config = config
        self.epoch = epoch
        self.alerts = alerts
        self.loop: asyncio.AbstractEventLoop | None = None
        self.state = "starting"  # starting | running | stopping | stopped

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
        self.housekeeping = Housekeeping(
            self.outbox,
            self.declined,
            self.uplink,
            self.forwarder,
            alerts,
            config.thing_keys(),
            config.cloud.heartbeat_interval_ms / 1000,
        )
        self.adapters: list[Adapter] = []
        self.sinks: list[ServiceSink] = []
        for svc in config.services:
            if svc.enabled:
                sink = ServiceSink(self.outbox, ThingMap(svc.things, svc.send_interval_ms))
                adapter = adapter_class(svc.type)(svc, sink, workdir=datadir)
                sink.status = adapter.status
                self.adapters.append(adapter)
                self.sinks.append(sink)
        self.instructions = InstructionEngine(
            datadir / "instructions",
            getattr(config.cloud, "access_key", ""),
            getattr(config.cloud, "secret_key", ""),
            config.thing_keys(),
            self.adapters,
            self.uplink,
            alerts,
        )
        self.parts = Parts(alerts)
        self.parts.add("forwarder", self.forwarder.run, self.forwarder.status)
        self.parts.add("instructions", self.instructions.run, self.instructions.status)
        for adapter in self.adapters:
            self.parts.add(f"adapter {adapter.status.name}", adapter.run, adapter.status)
        hk = self.housekeeping
        self.parts.add("replay watcher", hk.replay_watcher)
        self.parts.add("alert sender", hk.send_alerts)
        self.parts.add("outbox watch", hk.watch_outbox)
        if config.cloud.heartbeat_interval_ms > 0:
            self.parts.add("heartbeat", hk.heartbeats)

    # ------------------------------------------------------------------ wiring

    def _receive_instructions(self) -> None:
        """Subscribe before the uplink connects; say once if configured rules cannot work."""
        keys = self.config.thing_keys()
        if self.uplink.receive_instructions(keys, self.instructions.sink):
            self.instructions.status.details["receiving"] = True
            return
        self.instructions.status.details["receiving"] = False
        if self.instructions.mapping.rules:
            log.warning(
                "instructions are configured for %s, but cloud.protocol %s cannot receive "
                "instructions; use protocol mqtt or mqtts (the Datonis MQTT transport)",
                ", ".join(sorted(self.instructions.mapping.rules)),
                self.config.cloud.protocol,
            )

    def _on_evict(self, count: int) -> None:  # called on the outbox writer thread
        if self.loop is not None:
            self.loop.call_soon_threadsafe(self.housekeeping.evicted, count)

    # ------------------------------------------------------------------ life

    async def start(self, heartbeat_counters: dict[str, Any] | None = None) -> None:
        """Open the outbox (salvaging a damaged one), compare it with the counters of the last
        master's heartbeat (acknowledged readings that are missing are reported), start."""
        self.loop = asyncio.get_running_loop()
        # the outbox's alerts at open go out too
        self.alerts.listeners.append(self.housekeeping.queue_alert)
        await asyncio.to_thread(self.outbox.open)
        await asyncio.to_thread(self.outbox.reconcile, heartbeat_counters)
        self.outbox.changed = asyncio.Event()
        self.declined.ensure()
        await asyncio.to_thread(self.instructions.open)
        self._receive_instructions()
        await self.uplink.start()
        self.parts.start_all()
        self.state = "running"

    async def stop(self, flush_timeout: float = STOP_FLUSH_S) -> None:
        """Stop taking input, let the requests on the wire finish briefly (retries are
        abandoned at once), close the uplink and the outbox. What was not delivered stays
        in the outbox for the next master."""
        self.state = "stopping"
        self.parts.stopping.set()
        await self.parts.cancel([f"adapter {a.status.name}" for a in self.adapters])
        self.forwarder.stop_soon()
        forwarder = self.parts["forwarder"].task
        if forwarder is not None:
            await asyncio.wait([forwarder], timeout=flush_timeout)
        await self.parts.cancel()
        await self.instructions.close()
        for adapter in self.adapters:
            await adapter.close_writes()
        if self.housekeeping.queue_alert in self.alerts.listeners:
            self.alerts.listeners.remove(self.housekeeping.queue_alert)
        await self.uplink.close()
        await asyncio.to_thread(self.outbox.close)
        self.state = "stopped"

    def abort(self) -> None:
        """Stop forwarding at once (mastership lost): no more batches leave this process."""
        self.state = "stopped"
        self.parts.abort()
        self.instructions.abort()

    async def replay(self, ids: list[str] | None) -> int:
        return await self.housekeeping.replay(ids)

    # ------------------------------------------------------------------ status

    def latest_values(self) -> dict[str, dict[str, tuple[Any, int]]]:
        """thing_key -> metric -> (latest value, time ms) over every service."""
        out: dict[str, dict[str, tuple[Any, int]]] = {}
        for sink in self.sinks:
            for key, metrics in sink.latest.things.items():
                out.setdefault(key, {}).update(metrics)
        return out

    def pipeline_state(self) -> str:
        """`running` only while the data path runs: the forwarder is not down, nor failing
        (restarted after a failure and not yet running again for a while: between two
        failures of a loop it is `starting` or `running` for a moment)."""
        if self.state == "running" and (
            self.forwarder.status.state == "failed" or self.parts["forwarder"].failing
        ):
            return "failed"
        return self.state

    def health(self) -> list[str]:
        """What an operator should look at, as sentences (empty: healthy)."""
        reasons = []
        for part in self.parts.running():
            if not part.status.healthy:
                reasons.append(f"{part.name}: {part.status.state}: {part.status.last_error}")
        uplink = self.uplink.status
        if not uplink.healthy:
            reasons.append(f"uplink {uplink.name}: {uplink.state}: {uplink.last_error}")
        if self.forwarder.keys_suspect:
            reasons.append("the platform refuses the keys (401); check access_key and secret_key")
        if self.housekeeping.outbox_filling:
            reasons.append("the outbox is over 80 % of its cap")
        return reasons

    def snapshot(self) -> dict[str, Any]:
        stats = self.outbox.stats()
        return {
            "pipeline": self.pipeline_state(),
            "outbox": {
                "pending": stats.pending,
                "bytes": stats.bytes,
                "max_bytes": stats.max_bytes,
                # of the cap, in what the cap measures (pages in use and WAL, not payload)
                "fill": round(stats.used_bytes / stats.max_bytes, 4) if stats.max_bytes else 0.0,
                "oldest_ms": stats.oldest_ms,
                "policy": stats.policy,
                "segments": stats.segments,
                "commits": stats.commits,
                "used_bytes": stats.used_bytes,
                "disk_bytes": stats.disk_bytes,
                "disk_full": stats.disk_full,
                "disk_free_bytes": stats.disk_free_bytes,
                "damaged": stats.damaged,
            },
            "counters": dict(stats.counters),
            "declined_batches": self.declined.count(),
            "services": [a.status.snapshot() for a in self.adapters],
            "uplinks": [self.uplink.status.snapshot()],
            "forwarder": self.forwarder.status.snapshot(),
            "instructions": self.instructions.status.snapshot(),
            # the pipeline's own background loops (adapters and forwarder report above)
            "tasks": [p.status.snapshot() for p in self.parts.running() if p.ours],
        }
