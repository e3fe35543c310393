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
import time
from pathlib import Path
from typing import Any

from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ModbusException

from ...logs import OnceLogger
from ..base import Adapter, ReadingSink, Rejected, reading, ticks
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


class _Device:
    def __init__(self, config: ModbusDevice, groups: list[ReadGroup], max_backoff_s: float) -> None:
        self.config = config
        self.groups = groups
        self.client: AsyncModbusTcpClient | None = None
        self.max_backoff_s = max_backoff_s
        self.failures = 0
        self.retry_at = 0.0
        self.state: dict[str, Any] = {
            "name": config.name,
            "address": f"{config.host}:{config.port}",
            "connected": False,
            "last_error": None,
            "last_good_read_ms": None,
            "requests": 0,
            "errors": 0,  # failed reads: the device did not answer, or answered an exception
            "tags": sum(len(g.tags) for g in groups),
        }

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

    async def read(self) -> tuple[dict[str, Any], list[str]]:
        """Read every group; returns the tag values and the errors of groups that failed."""
        if time.monotonic() < self.retry_at:
            return {}, []
        values: dict[str, Any] = {}
        try:
            client = await self._connect()
            errors = await read_groups(client, self.groups, self.state, values)
        except (ModbusException, DeviceUnreachable, OSError, TimeoutError) as exc:
            self._failed(str(exc) or exc.__class__.__name__)
            return values, []
        self.failures = 0
        self.state["connected"] = True
        if values:
            self.state["last_good_read_ms"] = int(time.time() * 1000)
        self.state["last_error"] = "; ".join(errors) if errors else None
        self.state["errors"] += len(errors)
        return values, errors

    def _failed(self, message: str) -> None:
        self.failures += 1
        self.state["errors"] += 1
        delay = min(self.max_backoff_s, 0.5 * 2 ** (self.failures - 1))
        self.retry_at = time.monotonic() + delay
        self.state.update(connected=False, last_error=f"{message}; retrying in {delay:.1f} s")
        if self.client is not None:
            self.client.close()
            self.client = None

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

    async def scan(self) -> list[dict[str, Any]]:
        results = await asyncio.gather(*(d.read() for d in self.devices))
        values: dict[str, Any] = {}
        for device_values, _ in results:
            values.update(device_values)
        ts = int(time.time() * 1000)
        out = []
        for thing_key, tags in self._things:
            data = {tag: values[tag] for tag in tags if tag in values}
            if data:
                out.append(reading(thing_key, ts, data))
        return out

    def _report_devices(self) -> None:
        """One line when a device stops answering (each device on its own), one when it
        answers again; the service is degraded while any is down."""
        down = []
        for d in self.devices:
            key = f"device:{d.config.name}"
            where = f"device {d.config.name} at {d.state['address']} (unit {d.config.unit_id})"
            if d.state["connected"]:
                self._once.resolve(key, "services '%s': %s answers again", self.config.name, where)
                continue
            down.append(d.config.name)
            self._once.log(
                key,
                "services '%s': %s does not answer: %s; %s",
                self.config.name,
                where,
                d.state["last_error"],
                self.hint,
            )
        if down:
            self.status.error(
                f"devices not answering: {', '.join(down)}", "degraded", announce=False
            )
        else:
            self.status.ok("running")

    async def run(self) -> None:
        self.status.state = "running"
        try:
            async for _ in ticks(self.config.scan_interval_ms / 1000):
                readings = await self.scan()
                self._report_devices()
                if readings:
                    try:
                        await self.sink(readings)
                    except Rejected as exc:
                        self.status.error(exc.reason)
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
