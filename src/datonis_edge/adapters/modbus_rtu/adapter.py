"""The modbus_rtu adapter: polls the units of one serial line (pymodbus serial client).

It is modbus_tcp's adapter over a different transport: the same tag model, read planning,
decoding, status, logging and writes (imported from adapters/modbus_tcp, not copied). What a
bus changes is here: all units share the line's one connection and are read one request at
a time (the line's lock, held for a unit's whole scan), with the inter-frame silence kept
between frames (line.py). A unit that does not answer costs one timeout, then is skipped for
a backoff while the others keep being read; the status shows each unit.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from pymodbus.exceptions import ModbusException

from ..base import ReadingSink
from ..devices import device_state
from ..modbus_tcp.adapter import ModbusTcpAdapter, UnitReader, read_groups
from ..modbus_tcp.codec import ReadGroup
from .config import ModbusRtuService, ModbusRtuUnit
from .line import Line, LineUnavailable
from .writer import ModbusRtuWriter


class _Unit(UnitReader):
    """One unit on the line: its groups, its backoff and its status entry."""

    def __init__(
        self, config: ModbusRtuUnit, line: Line, groups: list[ReadGroup], max_backoff_s: float
    ) -> None:
        tags = sum(len(g.tags) for g in groups)
        state = device_state(config.name, line.config.port, tags, unit_id=config.unit_id)
        super().__init__(state, max_backoff_s)
        self.config = config
        self.line = line
        self.groups = groups

    async def read(self) -> dict[str, Any]:
        if self.waiting() or not self.groups:
            return {}
        values: dict[str, Any] = {}
        try:
            async with self.line.lock:  # one request on the wire at a time
                client = await self.line.client()
                errors = await read_groups(client, self.groups, self.state, values)
        except (ModbusException, LineUnavailable, OSError, TimeoutError) as exc:
            self.failed(str(exc) or exc.__class__.__name__)
            return values
        self.answered(values, errors)
        return values

    def close(self) -> None:
        """The line is the adapter's to close, not a unit's."""


class ModbusRtuAdapter(ModbusTcpAdapter):
    type = "modbus_rtu"
    hint = (
        "check the serial port, its baud rate, parity and stop bits, the wiring and "
        "termination, and that each unit is powered and has its unit_id; it is retried with backoff"
    )

    def __init__(
        self, config: ModbusRtuService, sink: ReadingSink, workdir: Path | None = None
    ) -> None:
        self.line = Line(config)
        super().__init__(config, sink, workdir)  # type: ignore[arg-type]
        framing = f"{config.bytesize}{config.parity}{config.stopbits}"
        self.status.details["line"] = {
            "port": config.port,
            "baudrate": config.baudrate,
            "framing": framing,
            "inter_frame_ms": round(self.line.gap_s * 1000, 3),
        }

    def _devices(self, groups: list[ReadGroup]) -> list[Any]:
        backoff_s = self.config.retry_max_backoff_ms / 1000
        return [
            _Unit(u, self.line, [g for g in groups if g.device == u.name], backoff_s)
            for u in self.config.devices
        ]

    def _new_writer(self) -> ModbusRtuWriter:
        return ModbusRtuWriter(self.config, self.line)  # type: ignore[arg-type]

    async def run(self) -> None:
        try:
            await super().run()
        finally:
            with contextlib.suppress(Exception):
                self.line.close()
