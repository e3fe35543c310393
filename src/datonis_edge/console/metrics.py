"""/metrics: the status snapshot as Prometheus metrics, plus the instruments of
`datonis_edge.metrics`. Names and labels follow DESIGN.md ("Operating it"): base units,
counters end in `_total`, labels service / uplink / device / status."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import CollectorRegistry

from ..metrics import REGISTRY as INSTRUMENTS

P = "datonis_edge_"
UP_STATES = {"running", "connected", "listening", "ready"}


def _gauge(name: str, doc: str, value: float | None = None, labels: list[str] | None = None):
    return GaugeMetricFamily(P + name, doc, value=value, labels=labels)


def _counter(name: str, doc: str, value: float | None = None, labels: list[str] | None = None):
    return CounterMetricFamily(P + name, doc, value=value, labels=labels)


class SnapshotCollector:
    def __init__(self, snapshot: Callable[[], dict[str, Any]]) -> None:
        self.snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        snap = self.snapshot()
        master = snap.get("role") == "master"
        yield _gauge("ha_master", "1 while this instance is master", 1.0 if master else 0.0)
        yield _gauge(
            "ha_epoch", "the data directory's epoch (fencing token)", snap.get("epoch") or 0
        )
        yield _counter(
            "failovers",
            "takeovers of this data directory's mastership since it was created (epoch - 1)",
            max(0, (snap.get("epoch") or 0) - 1),
        )
        if not master or "outbox" not in snap:
            return  # a standby has no pipeline: no health to speak of (not a 0 to alert on)
        yield _gauge(
            "health_ok",
            "1 when the status says health ok (the master's pipeline; see the status's reasons)",
            1.0 if snap.get("health") == "ok" else 0.0,
        )
        yield from self._outbox(snap)
        yield from self._services(snap.get("services", []))
        yield from self._uplinks(snap)

    def _outbox(self, snap: dict[str, Any]) -> Iterator[Metric]:
        ob, c = snap["outbox"], snap.get("counters", {})
        yield _gauge("outbox_events", "events waiting in the outbox", ob.get("pending", 0))
        yield _gauge(
            "outbox_bytes",
            "bytes the outbox uses against its cap (outbox.db's pages in use and its WAL)",
            ob.get("used_bytes", 0),
        )
        yield _gauge(
            "outbox_capacity_bytes", "the outbox cap (outbox.max_bytes)", ob.get("max_bytes", 0)
        )
        oldest = ob.get("oldest_ms")
        age = max(0.0, time.time() - oldest / 1000) if oldest else 0.0
        yield _gauge("outbox_oldest_age_seconds", "age of the oldest pending event", age)
        yield _counter(
            "events_evicted", "events dropped by the outbox cap (drop_oldest)", c.get("evicted", 0)
        )
        yield _counter("events_accepted", "events committed to the outbox", c.get("accepted", 0))
        yield _counter(
            "events_rejected",
            "events refused by the outbox (full, disk full)",
            c.get("rejected", 0),
        )

    def _services(self, services: list[dict[str, Any]]) -> Iterator[Metric]:
        received = _counter(
            "events_received", "readings a service handed to the outbox", labels=["service"]
        )
        rejected = _counter(
            "service_rejected", "readings of a service the outbox refused", labels=["service"]
        )
        malformed = _counter("malformed", "inputs refused as malformed", labels=["service"])
        up = _gauge("service_up", "1 while a service runs without error", labels=["service"])
        device_up = _gauge("device_up", "1 while a device answers", labels=["service", "device"])
        errors = _counter(
            "tag_read_errors", "failed reads of a device", labels=["service", "device"]
        )
        backlog = _gauge(
            "listener_backlog_messages",
            "messages a listener received and has not acknowledged yet (storing or waiting)",
            labels=["service"],
        )
        backlog_age = _gauge(
            "listener_backlog_age_seconds",
            "how long the oldest of them has waited",
            labels=["service"],
        )
        for svc in services:
            name, counters = svc["name"], svc.get("counters", {})
            received.add_metric([name], counters.get("received", 0))
            rejected.add_metric([name], counters.get("rejected", 0))
            malformed.add_metric(
                [name], counters.get("malformed", 0) + counters.get("bad_requests", 0)
            )
            up.add_metric([name], 1.0 if svc.get("state") in UP_STATES else 0.0)
            details = svc.get("details", {})
            if "backlog_messages" in details:
                backlog.add_metric([name], details["backlog_messages"])
                backlog_age.add_metric([name], details.get("backlog_age_s", 0.0))
            for dev in svc.get("details", {}).get("devices", []) or []:
                device_up.add_metric(
                    [name, str(dev.get("name"))], 1.0 if dev.get("connected") else 0.0
                )
                errors.add_metric([name, str(dev.get("name"))], dev.get("errors", 0))
        yield from (received, rejected, malformed, up, device_up, errors, backlog, backlog_age)

    def _uplinks(self, snap: dict[str, Any]) -> Iterator[Metric]:
        sent = _counter(
            "events_sent", "events the platform (or broker) accepted", labels=["uplink"]
        )
        declined = _counter(
            "events_declined", "events the platform refused, by status", labels=["uplink", "status"]
        )
        up = _gauge("uplink_up", "1 while the uplink delivers", labels=["uplink"])
        counters = snap.get("counters", {})
        by_status = snap.get("forwarder", {}).get("details", {}).get("declined_by_status", {})
        for uplink in snap.get("uplinks", []):
            name = uplink["name"]
            sent.add_metric([name], counters.get("delivered", 0))
            for status, n in by_status.items():
                declined.add_metric([name, str(status)], n)
            up.add_metric([name], 1.0 if uplink.get("state") in UP_STATES else 0.0)
        yield from (sent, declined, up)


def metrics_registry(snapshot: Callable[[], dict[str, Any]]) -> list[CollectorRegistry]:
    """What /metrics exposes: the snapshot collector and the process-wide instruments."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(snapshot))  # type: ignore[arg-type]
    return [registry, INSTRUMENTS]
