"""The southbound interface: every adapter turns one protocol into readings, nothing more.

An adapter knows nothing of the outbox, the uplink or retries. It hands what it read to the
`ReadingSink` it was given and awaits it: when the await returns, the readings are durable
(so a listener may acknowledge its producer), and when it raises `Rejected`, they were not.
Adding a protocol is one folder (`adapters/<protocol>/`: config.py, adapter.py, README.md,
testcases/) and one line in `REGISTRY` below (docs/adding-a-protocol.md walks through it).
"""

from __future__ import annotations

import asyncio
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path
from typing import Any, ClassVar, Protocol

from ..registry import Plugin
from ..status import PartStatus

# A reading is what one thing reported at one instant, in the Datonis event form so that a
# listener receiving Datonis events passes them on without conversion:
#     {"thing_key": str, "timestamp": epoch ms, "data": {tag or metric: value}}
# `things.py` maps tags to metrics (scale, offset, diff) for things that are configured.
Reading = dict[str, Any]


def reading(thing_key: str, timestamp: int, values: dict[str, Any]) -> Reading:
    return {"thing_key": thing_key, "timestamp": timestamp, "data": values}


class Rejected(Exception):
    """The readings were not stored (outbox full, gateway stopping); `reason` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ReadingSink(Protocol):
    """Stores readings; returns once they are durable, raises Rejected if they were not.
    `raw`, when given, is the readings already as a JSON array (a listener's checked bytes);
    `checked` says the adapter put them through readings.py itself (listeners do, to answer
    their producer); otherwise the sink checks each one and refuses what breaks the limits."""

    def __call__(
        self, readings: list[Reading], raw: bytes | None = None, checked: bool = False
    ) -> Awaitable[int]: ...


async def ticks(interval_s: float) -> AsyncIterator[None]:
    """Once per interval on a fixed schedule (no drift); an overrun skips the missed ticks
    rather than bursting to catch up."""
    next_at = time.monotonic()
    while True:
        yield
        next_at += interval_s
        delay = next_at - time.monotonic()
        if delay < 0:
            next_at, delay = time.monotonic(), 0.0
        await asyncio.sleep(delay)


class Adapter(ABC):
    type: ClassVar[str]
    # what an operator should check when this adapter reports trouble (logged with it)
    hint: ClassVar[str] = ""

    def __init__(self, config: Any, sink: ReadingSink, workdir: Path | None = None) -> None:
        self.config = config
        self.sink = sink
        self.workdir = workdir  # the data directory, for what an adapter keeps (certificates)
        self.status = PartStatus(name=config.name, type=config.type, announce=True, hint=self.hint)

    @abstractmethod
    async def run(self) -> None:
        """Read until cancelled. Errors of the device are reported in status and retried."""


def _adapter(name: str, config: str, adapter: str) -> Plugin:
    return Plugin(name, f"{name}.config:{config}", f"{name}.adapter:{adapter}", __package__)


# one line per southbound protocol: its `type`, its config model, its adapter class
REGISTRY: dict[str, Plugin] = {
    p.name: p
    for p in (
        _adapter("simulator", "SimulatorService", "SimulatorAdapter"),
        _adapter("http_listener", "HttpListenerService", "HttpListenerAdapter"),
        _adapter("mqtt_listener", "MqttListenerService", "MqttListenerAdapter"),
        _adapter("modbus_tcp", "ModbusTcpService", "ModbusTcpAdapter"),
        _adapter("opcua", "OpcUaService", "OpcUaAdapter"),
    )
}


def adapter_class(service_type: str) -> type[Adapter]:
    """The adapter of a service type, imported on first use."""
    return REGISTRY[service_type].load()
