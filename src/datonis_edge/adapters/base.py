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


class WriteFailed(Exception):
    """A write did not happen (or not wholly): the device did not answer, refused it, or the
    protocol cannot write. `reason` is a sentence for the instruction's ack and the log."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ValueRefused(WriteFailed):
    """The value does not fit the tag (type, range, length): refused before any I/O."""


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

    # Writes (instructions from the platform). The engine first checks every value of an
    # instruction, then writes them in order: a value that does not fit writes nothing.

    async def check_write(self, tag: str, value: Any, wait_s: float = 0.0) -> Any:
        """The value as it will be written to `tag` (converted to the tag's type), or
        ValueRefused naming why not. May ask the device (an OPC UA node's type), waiting up
        to `wait_s` for it to answer (WriteFailed past that)."""
        raise ValueRefused(f"a {self.type} service does not write to machines")

    async def write(self, tag: str, value: Any) -> None:
        """Write what `check_write` returned for this tag; WriteFailed if the device did not
        take it."""
        raise WriteFailed(f"a {self.type} service does not write to machines")

    async def close_writes(self) -> None:  # noqa: B027 - optional hook
        """Close what writing opened (the pipeline calls it when it stops)."""


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
        _adapter("modbus_rtu", "ModbusRtuService", "ModbusRtuAdapter"),
        _adapter("opcua", "OpcUaService", "OpcUaAdapter"),
        _adapter("mtconnect", "MtconnectService", "MtconnectAdapter"),
        _adapter("s7", "S7Service", "S7Adapter"),
        _adapter("ethernet_ip", "EthernetIpService", "EthernetIpAdapter"),
        _adapter("bacnet", "BacnetService", "BacnetAdapter"),
    )
}


def adapter_class(service_type: str) -> type[Adapter]:
    """The adapter of a service type, imported on first use."""
    return REGISTRY[service_type].load()


_INT_BITS = {"int8": 8, "int16": 16, "int32": 32, "int64": 64}
_FLOAT_MAX = {"float32": 3.4028234663852886e38, "float64": 1.7976931348623157e308}


def fit_value(value: Any, data_type: str, tag: str) -> Any:
    """`value` as a `data_type` (bool, [u]int8..64, float32/64, string), or ValueRefused
    naming the tag, the value and what fits. A whole float (42.0) may go to an integer."""
    if data_type == "bool":
        if isinstance(value, bool) or (type(value) is int and value in (0, 1)):
            return bool(value)
        raise ValueRefused(f"{tag} takes true or false, not {value!r}")
    if data_type == "string":
        if isinstance(value, str):
            return value
        raise ValueRefused(f"{tag} takes a string, not {value!r}")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueRefused(f"{tag} takes a number ({data_type}), not {value!r}")
    if data_type in _FLOAT_MAX:
        if value != value or abs(value) > _FLOAT_MAX[data_type]:
            raise ValueRefused(f"{tag} ({data_type}) cannot hold {value!r}")
        return float(value)
    if isinstance(value, float) and not value.is_integer():
        raise ValueRefused(f"{tag} ({data_type}) takes a whole number, not {value!r}")
    number = int(value)
    unsigned = data_type.startswith("u")
    bits = _INT_BITS[data_type.removeprefix("u")]
    low, high = (0, 2**bits - 1) if unsigned else (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
    if not low <= number <= high:
        raise ValueRefused(f"{tag} ({data_type}) takes {low} to {high}, not {number}")
    return number
