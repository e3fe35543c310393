"""The modbus_tcp adapter: polls devices over Modbus TCP (pymodbus client).

Tags of one device, one unit and one register kind that lie close together are read in one
request (≤ 125 registers or 2000 bits; `max_gap` addresses may lie unused between them): that
is where the speed comes from. Devices are read concurrently and independently: a device that
does not answer, times out or returns an exception code affects only its own tags; it is
retried with backoff and shown in the status (connected, last error, last good read).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path
from typing import Any

from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ModbusException

from ...logs import OnceLogger
from ..base import Adapter, ReadingSink
from ..devices import PolledDevice, device_state, poll, readings_for, report_device, report_health
from .codec import ReadGroup, plan_reads
from .config import ModbusDevice, ModbusTcpService
from .writer import ModbusWriter

log = logging.getLogger(__name__)

logging.getLogger("pymodbus").setLevel(logging.CRITICAL)  # we report device errors ourselves

_READERS = {
    "holding": "read_holding_registers",
    "input": "read_input_registers",
    "coil": "read_coils",
    "discrete": "read_discrete_inputs",
}


class DeviceUnreachable(Exception):
    pass


async def read_groups(
    client: Any, groups: list[ReadGroup], state: dict[str, Any], values: dict[str, Any]
) -> list[str]:
    """Send each group's request in turn, adding what it read to `values` (kept if a later
    request fails); the errors of groups the device refused (an exception code affects only
    that group's tags). Shared by modbus_rtu."""
    errors: list[str] = []
    for group in groups:
        reader = getattr(client, _READERS[group.register])
        state["requests"] += 1
        result = await reader(group.start, count=group.count, device_id=group.unit_id)
        if result.isError():
            errors.append(
                f"{group.register} {group.start}+{group.count} on unit {group.unit_id}: "
                f"exception code {getattr(result, 'exception_code', '?')}"
            )
            continue
        data = result.bits if group.register in ("coil", "discrete") else result.registers
        values.update(group.values(data))
    return errors


class UnitReader(PolledDevice):
    """A device read by unit id: modbus_tcp's devices and modbus_rtu's units."""

    config: Any  # a ModbusDevice or a modbus_rtu unit: a name and a unit_id

    @property
    def where(self) -> str:
        return f"device {self.config.name} at {self.state['address']} (unit {self.config.unit_id})"


class _Device(UnitReader):
    def __init__(self, config: ModbusDevice, groups: list[ReadGroup], max_backoff_s: float) -> None:
        tags = sum(len(g.tags) for g in groups)
        super().__init__(
            device_state(config.name, f"{config.host}:{config.port}", tags), max_backoff_s
        )
        self.config = config
        self.groups = groups
        self.client: AsyncModbusTcpClient | None = None

    async def _connect(self) -> AsyncModbusTcpClient:
        if self.client is not None and self.client.connected:
            return self.client
        if self.client is not None:
            self.client.close()
        self.client = AsyncModbusTcpClient(
            self.config.host,
            port=self.config.port,
            timeout=self.config.timeout_ms / 1000,
            retries=0,
            reconnect_delay=0,
        )
        if not await self.client.connect():
            raise DeviceUnreachable(f"cannot connect to {self.config.host}:{self.config.port}")
        return self.client

    async def read(self) -> dict[str, Any]:
        """Every group's tag values (a group the device refused is named in last_error)."""
        if self.waiting():
            return {}
        values: dict[str, Any] = {}
        try:
            client = await self._connect()
            errors = await read_groups(client, self.groups, self.state, values)
        except (ModbusException, DeviceUnreachable, OSError, TimeoutError) as exc:
            self.failed(str(exc) or exc.__class__.__name__)
            return values
        self.answered(values, errors)
        return values

    def failed(self, message: str) -> float:
        if self.client is not None:
            self.client.close()
            self.client = None
        return super().failed(message)

    def close(self) -> None:
        if self.client is not None:
            self.client.close()


class ModbusTcpAdapter(Adapter):
    type = "modbus_tcp"
    hint = "check that each device is powered and reachable at its host, port and unit_id; it is retried with backoff"

    def __init__(
        self, config: ModbusTcpService, sink: ReadingSink, workdir: Path | None = None
    ) -> None:
        super().__init__(config, sink, workdir)
        self.config: ModbusTcpService = config
        groups = plan_reads(config.tags, config.max_gap)  # TagSpec records (config.py)
        self.devices = self._devices(groups)
        # thing_key -> the tags its metrics use
        self._things = [(t.thing_key, t.tags_used()) for t in config.things]
        self.status.details["devices"] = [d.state for d in self.devices]
        self.status.details["requests_per_scan"] = len(groups)
        self._once = OnceLogger(log)

    def _devices(self, groups: list[ReadGroup]) -> list[Any]:
        """One reader per device, each with its groups (modbus_rtu makes units of a line)."""
        backoff_s = self.config.retry_max_backoff_ms / 1000
        return [
            _Device(d, [g for g in groups if g.device == d.name], backoff_s)
            for d in self.config.devices
        ]

    def _new_writer(self) -> ModbusWriter:
        return ModbusWriter(self.config)

    async def _read_all(self) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for device_values in await asyncio.gather(*(d.read() for d in self.devices)):
            values.update(device_values)
        return values

    async def scan(self) -> list[dict[str, Any]]:
        """One read of every device (concurrently): a reading for each thing."""
        return readings_for(self._things, await self._read_all())

    def _report_devices(self) -> None:
        for d in self.devices:
            report_device(self._once, self.config.name, d, self.hint)
        report_health(self.status, self.devices)

    async def run(self) -> None:
        self.status.state = "running"
        try:
            await poll(
                self.config.scan_interval_ms / 1000,
                self._read_all,
                self._report_devices,
                self._things,
                self.sink,
                self.status,
            )
        finally:
            for d in self.devices:
                with contextlib.suppress(Exception):
                    d.close()

    # ------------------------------------------------------------------ writes (writer.py)

    async def check_write(self, tag: str, value: Any, wait_s: float = 0.0) -> Any:
        if not hasattr(self, "_writer"):
            self._writer = self._new_writer()
        fitted = self._writer.fit(tag, value)
        await self._writer.connect(tag, wait_s)
        return fitted

    async def write(self, tag: str, value: Any) -> None:
        await self._writer.write(tag, value)

    async def close_writes(self) -> None:
        if hasattr(self, "_writer"):
            self._writer.close()
