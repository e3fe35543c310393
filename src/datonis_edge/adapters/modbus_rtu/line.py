"""One serial line: the single connection every unit on it shares, one request on the wire at
a time, and the silence the bus requires between frames.

Callers hold `line.lock` for as long as they talk to one unit (a scan of its groups, or one
write) and use `line.client` inside it; the client waits out the inter-frame gap before each
request. A unit that does not answer costs its timeout and nothing else: the line stays open
(on a bus, silence from one unit says nothing about the others). Only a port that cannot be
opened or fails (the adapter unplugged) closes it, and every unit waits for it then.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from pymodbus.client import AsyncModbusSerialClient

from .config import ModbusRtuService


class LineUnavailable(Exception):
    pass


class _PacedClient:
    """The pymodbus client, with the inter-frame silence kept before every request."""

    def __init__(self, client: AsyncModbusSerialClient, line: Line) -> None:
        self._client = client
        self._line = line

    def __getattr__(self, name: str) -> Any:
        call = getattr(self._client, name)
        if not name.startswith(("read_", "write_")):
            return call

        async def paced(*args: Any, **kwargs: Any) -> Any:
            await self._line.quiet()
            try:
                return await call(*args, **kwargs)
            finally:
                self._line.last_frame_end = time.monotonic()

        return paced


class Line:
    def __init__(self, config: ModbusRtuService) -> None:
        self.config = config
        self.lock = asyncio.Lock()
        self.gap_s = config.inter_frame_s
        self.last_frame_end = 0.0
        self._client: AsyncModbusSerialClient | None = None
        self.error: str | None = None  # why the port is not open, while it is not

    async def quiet(self) -> None:
        wait = self.last_frame_end + self.gap_s - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)

    async def client(self) -> _PacedClient:
        """The open line (opened now if it is not); LineUnavailable if the port will not open.
        Call with `lock` held."""
        if self._client is not None and self._client.connected:
            return _PacedClient(self._client, self)
        self.close()
        c = self.config
        client = AsyncModbusSerialClient(
            c.port,
            baudrate=c.baudrate,
            parity=c.parity,
            stopbits=c.stopbits,
            bytesize=c.bytesize,
            timeout=c.timeout_ms / 1000,
            retries=0,
            reconnect_delay=0,
        )
        if not await client.connect():
            client.close()
            self.error = f"cannot open serial port {c.port}"
            raise LineUnavailable(self.error)
        self._client, self.error = client, None
        return _PacedClient(client, self)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


def frame_bytes(register: str, count: int) -> tuple[int, int]:
    """Bytes of the request and of the answer of one read on the wire (address, function,
    payload, CRC): for the line's theoretical limit."""
    payload = (count + 7) // 8 if register in ("coil", "discrete") else 2 * count
    return 8, 5 + payload
