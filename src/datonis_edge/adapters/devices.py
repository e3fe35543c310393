"""What every polling adapter does with its devices, written once.

A device (a Modbus unit, a PLC, a BACnet device, an MTConnect agent) that does not answer
affects only its own tags: it is retried with backoff (0.5 s, doubling up to the service's
`retry_max_backoff_ms`), logged once with the adapter's hint when it stops answering and once
at INFO when it answers again, and the service is degraded while any device is down. Its
entry in `status.details["devices"]` (connected, last_error, last_good_read_ms, requests,
errors, tags) is what /metrics turns into device_up and tag_read_errors. How a device is read
is the protocol's, in its own folder.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, Protocol

from ..logs import OnceLogger
from ..status import PartStatus
from .base import Reading, ReadingSink, Rejected, reading, ticks

Things = Sequence[tuple[str, Iterable[str]]]  # (thing_key, the tags its metrics use)


def backoff_s(failures: int, max_backoff_s: float) -> float:
    """How long to wait after the `failures`-th failure in a row."""
    return min(max_backoff_s, 0.5 * 2 ** (failures - 1))


def device_state(name: str, address: str, tags: int, **extra: Any) -> dict[str, Any]:
    """A device's entry in status.details["devices"]: the keys /metrics reads, and the
    protocol's own (`extra`)."""
    return {
        "name": name,
        "address": address,
        "connected": False,
        "last_error": None,
        "last_good_read_ms": None,
        "since_ms": None,  # when `connected` last changed (first answer or first failure)
        "requests": 0,
        "errors": 0,  # failed reads: the device did not answer, or refused a part
        "tags": tags,
        **extra,
    }


class PolledDevice:
    """A device's backoff and status entry. The protocol's device class reads; it calls
    `failed()` when the device did not answer and `answered()` when it did."""

    def __init__(self, state: dict[str, Any], max_backoff_s: float) -> None:
        self.state = state
        self.max_backoff_s = max_backoff_s
        self.failures = 0  # in a row
        self.retry_at = 0.0  # monotonic time of the next try after a failure

    @property
    def where(self) -> str:
        """The device as log lines name it."""
        return f"device {self.state['name']} at {self.state['address']}"

    def waiting(self) -> bool:
        """Still backing off after a failure: do not try yet."""
        return time.monotonic() < self.retry_at

    def failed(self, message: str) -> float:
        """The device did not answer: back off; returns the delay until the next try."""
        self.failures += 1
        self.state["errors"] += 1
        delay = backoff_s(self.failures, self.max_backoff_s)
        self.retry_at = time.monotonic() + delay
        self._connected(False)
        self.state["last_error"] = f"{message}; retrying in {delay:.1f} s"
        return delay

    def _connected(self, connected: bool) -> None:
        if self.state["connected"] != connected or self.state["since_ms"] is None:
            self.state["since_ms"] = int(time.time() * 1000)
        self.state["connected"] = connected

    def answered(self, values: dict[str, Any], errors: Sequence[str] = ()) -> None:
        """The device answered; `errors` are the parts of it that it refused."""
        self.failures = 0
        self._connected(True)
        if values:
            self.state["last_good_read_ms"] = int(time.time() * 1000)
        self.state["last_error"] = "; ".join(errors) if errors else None
        self.state["errors"] += len(errors)


class Reported(Protocol):
    state: dict[str, Any]

    @property
    def where(self) -> str: ...


def report_device(once: OnceLogger, service: str, device: Reported, hint: str) -> None:
    """One line when the device stops answering (with the fix), one when it answers again."""
    state = device.state
    key = f"device:{state['name']}"
    if state["connected"]:
        once.resolve(key, "services '%s': %s answers again", service, device.where)
    elif state["last_error"] is not None:  # tried, and did not answer
        once.log(
            key,
            "services '%s': %s does not answer: %s; %s",
            service,
            device.where,
            state["last_error"],
            hint,
        )


def report_health(status: PartStatus, devices: Iterable[Reported], noun: str = "devices") -> None:
    """The service is degraded while any device is down, running otherwise."""
    down = [
        d.state["name"]
        for d in devices
        if not d.state["connected"] and d.state["last_error"] is not None
    ]
    if down:
        status.error(f"{noun} not answering: {', '.join(down)}", "degraded", announce=False)
    else:
        status.ok("running")


def readings_for(things: Things, values: dict[str, Any], ts: int | None = None) -> list[Reading]:
    """A reading for each thing that has values among `values`, stamped `ts` (now)."""
    ts = int(time.time() * 1000) if ts is None else ts
    out = []
    for thing_key, tags in things:
        data = {tag: values[tag] for tag in tags if tag in values}
        if data:
            out.append(reading(thing_key, ts, data))
    return out


async def poll(
    interval_s: float,
    read: Callable[[], Awaitable[dict[str, Any]]],
    report: Callable[[], None],
    things: Things,
    sink: ReadingSink,
    status: PartStatus,
) -> None:
    """Read every `interval_s` until cancelled: report the devices' health, hand on the
    readings (a refusal by the store is shown in the status; the next scan goes on)."""
    async for _ in ticks(interval_s):
        values = await read()
        report()
        readings = readings_for(things, values)
        if readings:
            try:
                await sink(readings)
            except Rejected as exc:
                status.error(exc.reason)
