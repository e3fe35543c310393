"""Writes for instructions: holding registers (every data type and word order the reader
decodes, a bool as one bit of a register) and coils.

Writes go over a connection of their own per device, so a write never waits behind the
reader's backoff nor races its reconnects; it is opened on the first write and kept. A bool
with `bit_index` is a read-modify-write of its register (the device offers nothing atomic).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ModbusException

from ..base import ValueRefused, WriteFailed, fit_value
from .codec import encode
from .config import ModbusDevice, ModbusTag, ModbusTcpService

RECONNECT_S = 0.25  # while waiting for a device, how often to try it again


def string_words(text: str, count: int, endian: str, tag: str) -> list[int]:
    """A string as `count` registers, two Latin-1 characters each, padded with NULs."""
    try:
        raw = text.encode("latin-1")
    except UnicodeEncodeError:
        raise ValueRefused(f"{tag} takes Latin-1 characters only, not {text!r}") from None
    if len(raw) > 2 * count:
        raise ValueRefused(f"{tag} holds {2 * count} characters, {text!r} has {len(raw)}")
    raw = raw.ljust(2 * count, b"\0")
    if endian in ("BADC", "DCBA"):
        raw = b"".join(raw[i : i + 2][::-1] for i in range(0, len(raw), 2))
    return [int.from_bytes(raw[i : i + 2], "big") for i in range(0, len(raw), 2)]


class ModbusWriter:
    def __init__(self, config: ModbusTcpService) -> None:
        self.tags: dict[str, ModbusTag] = {t.name: t for t in config.tags}
        self.devices: dict[str, ModbusDevice] = {d.name: d for d in config.devices}
        self.clients: dict[str, AsyncModbusTcpClient] = {}

    def _tag(self, name: str) -> ModbusTag:
        tag = self.tags.get(name)
        if tag is None:
            raise ValueRefused(f"no tag named {name}")
        if tag.register_kind in ("input", "discrete"):
            raise ValueRefused(f"{name} is a read-only {tag.register_kind} register")
        return tag

    def fit(self, name: str, value: Any) -> Any:
        """The value converted for the tag, or ValueRefused; no I/O."""
        tag = self._tag(name)
        if tag.data_type == "string":
            string_words(fit_value(value, "string", name), tag.count or 1, tag.endian, name)
            return value
        return fit_value(value, tag.data_type, name)

    def _where(self, tag: ModbusTag) -> str:
        device = self.devices[tag.device]
        unit = tag.unit_id if tag.unit_id is not None else device.unit_id
        return f"device {device.name} at {device.host}:{device.port} (unit {unit})"

    async def _client(self, device: ModbusDevice, wait_s: float) -> AsyncModbusTcpClient:
        client = self.clients.get(device.name)
        if client is not None and client.connected:
            return client
        deadline = time.monotonic() + wait_s
        while True:
            if client is not None:
                client.close()
            client = AsyncModbusTcpClient(
                device.host,
                port=device.port,
                timeout=device.timeout_ms / 1000,
                retries=0,
                reconnect_delay=0,
            )
            if await client.connect():
                self.clients[device.name] = client
                return client
            if time.monotonic() >= deadline:
                client.close()
                raise WriteFailed(f"cannot connect to {device.host}:{device.port}")
            await asyncio.sleep(RECONNECT_S)

    async def connect(self, name: str, wait_s: float) -> None:
        """Wait up to `wait_s` until the tag's device takes a connection."""
        tag = self._tag(name)
        try:
            await self._client(self.devices[tag.device], wait_s)
        except WriteFailed as exc:
            raise WriteFailed(f"{self._where(tag)} does not answer: {exc.reason}") from None

    async def write(self, name: str, value: Any) -> None:
        tag = self._tag(name)
        device = self.devices[tag.device]
        unit = tag.unit_id if tag.unit_id is not None else device.unit_id
        try:
            client = await self._client(device, 0.0)
            if tag.register_kind == "coil":
                result = await client.write_coil(tag.address, bool(value), device_id=unit)
            else:
                words = await self._words(client, tag, unit, value)
                result = await client.write_registers(tag.address, words, device_id=unit)
            if result.isError():
                code = getattr(result, "exception_code", "?")
                raise WriteFailed(
                    f"{self._where(tag)} refused the write of {name} "
                    f"({tag.register_kind} {tag.address}): exception code {code}"
                )
        except WriteFailed as exc:
            if exc.reason.startswith("cannot connect"):
                raise WriteFailed(f"{self._where(tag)} does not answer: {exc.reason}") from None
            raise
        except (ModbusException, OSError, TimeoutError) as exc:
            self._drop(device.name)
            reason = str(exc) or exc.__class__.__name__
            raise WriteFailed(f"{self._where(tag)} does not answer: {reason}") from None

    async def _words(
        self, client: AsyncModbusTcpClient, tag: ModbusTag, unit: int, value: Any
    ) -> list[int]:
        if tag.data_type == "string":
            return string_words(value, tag.count or 1, tag.endian, tag.name)
        if tag.data_type != "bool":
            return encode(value, tag.data_type, tag.endian)
        if tag.bit_index is None:
            return [1 if value else 0]
        current = await client.read_holding_registers(tag.address, count=1, device_id=unit)
        if current.isError():
            raise WriteFailed(
                f"{self._where(tag)} refused to read {tag.name}'s register {tag.address} "
                "(needed to change one bit of it)"
            )
        word, bit = current.registers[0], 1 << tag.bit_index
        return [(word | bit) if value else (word & ~bit)]

    def _drop(self, device: str) -> None:
        client = self.clients.pop(device, None)
        if client is not None:
            client.close()

    def close(self) -> None:
        for name in list(self.clients):
            with contextlib.suppress(Exception):
                self._drop(name)
