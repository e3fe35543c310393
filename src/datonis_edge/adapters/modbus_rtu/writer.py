"""Writes for instructions on a serial line: modbus_tcp's writer (every data type and word
order, strings, a bit of a register, coils), sending over the line the readers share, under
its lock: a write waits for the request on the wire to finish, never interleaves with it."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from ..base import WriteFailed
from ..modbus_tcp.config import ModbusTag
from ..modbus_tcp.writer import RECONNECT_S, ModbusWriter
from .config import ModbusRtuService
from .line import Line, LineUnavailable


class ModbusRtuWriter(ModbusWriter):
    def __init__(self, config: ModbusRtuService, line: Line) -> None:
        super().__init__(config)  # type: ignore[arg-type]
        self.line = line

    def _where(self, tag: ModbusTag) -> str:
        device = self.devices[tag.device]
        unit = tag.unit_id if tag.unit_id is not None else device.unit_id
        return f"device {device.name} (unit {unit}) on {self.line.config.port}"

    async def _client(self, device: Any, wait_s: float) -> Any:
        deadline = time.monotonic() + wait_s
        while True:
            try:
                return await self.line.client()
            except LineUnavailable as exc:
                if time.monotonic() >= deadline:
                    raise WriteFailed(f"cannot connect: {exc}") from None
            await asyncio.sleep(RECONNECT_S)

    async def connect(self, name: str, wait_s: float) -> None:
        async with self.line.lock:
            await super().connect(name, wait_s)

    async def write(self, name: str, value: Any) -> None:
        async with self.line.lock:
            await super().write(name, value)

    def _drop(self, device: str) -> None:
        """A unit that did not answer says nothing about the line: it stays open."""

    def close(self) -> None:
        """The line is the adapter's to close."""
