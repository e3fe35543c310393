"""Writes for instructions: every S7 type to DB, M and Q (I is refused: the PLC overwrites
its inputs every cycle). A BOOL is an S7 bit write, so the other bits of its byte stay as
the PLC program has them; a STRING writes its actual length and characters.

Writes go over a connection of their own per PLC, opened on the first write and kept, so a
write never waits behind the reader's backoff nor races its reconnects.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from ..base import ValueRefused, WriteFailed, fit_value
from .codec import encode
from .config import S7Device, S7Service, S7Tag
from .link import ItemRefused, LinkDown, S7Link

RECONNECT_S = 0.25  # while waiting for a PLC, how often to try it again
FIT_AS = {"BOOL": "bool", "BYTE": "uint8", "SINT": "int8", "USINT": "uint8", "INT": "int16",
          "UINT": "uint16", "WORD": "uint16", "DINT": "int32", "UDINT": "uint32", "DWORD": "uint32",
          "REAL": "float32", "LREAL": "float64", "STRING": "string"}  # fmt: skip


class S7Writer:
    def __init__(self, config: S7Service) -> None:
        self.tags: dict[str, S7Tag] = {t.name: t for t in config.tags}
        self.devices: dict[str, S7Device] = {d.name: d for d in config.devices}
        self.links: dict[str, S7Link] = {}

    def _tag(self, name: str) -> S7Tag:
        tag = self.tags.get(name)
        if tag is None:
            raise ValueRefused(f"no tag named {name}")
        if tag.s7.area == "I":
            raise ValueRefused(
                f"{name} ({tag.s7}) is an input, which the PLC overwrites every cycle"
            )
        return tag

    def fit(self, name: str, value: Any) -> Any:
        """The value converted for the tag, or ValueRefused; no I/O."""
        address = self._tag(name).s7
        fitted = fit_value(value, FIT_AS[address.data_type], name)
        if address.data_type == "STRING":
            try:
                raw = fitted.encode("latin-1")
            except UnicodeEncodeError:
                raise ValueRefused(
                    f"{name} takes Latin-1 characters only, not {fitted!r}"
                ) from None
            if len(raw) > address.length:
                raise ValueRefused(
                    f"{name} holds {address.length} characters, {fitted!r} has {len(raw)}"
                )
        return fitted

    def _link(self, tag: S7Tag) -> S7Link:
        link = self.links.get(tag.device)
        if link is None:
            link = self.links[tag.device] = S7Link(self.devices[tag.device])
        return link

    async def connect(self, name: str, wait_s: float) -> None:
        """Wait up to `wait_s` until the tag's PLC takes a connection."""
        link = self._link(self._tag(name))
        deadline = time.monotonic() + wait_s
        while True:
            try:
                await link.connect()
                return
            except LinkDown as exc:
                if time.monotonic() >= deadline:
                    raise WriteFailed(f"{link.where} does not answer: {exc}") from None
            await asyncio.sleep(RECONNECT_S)

    async def write(self, name: str, value: Any) -> None:
        tag = self._tag(name)
        link, address = self._link(tag), tag.s7
        raw = encode(value, address)
        offset = address.offset + (1 if address.data_type == "STRING" else 0)
        bit = address.bit if address.data_type == "BOOL" else None
        try:
            await link.connect()
            await link.write(address.area_code, address.db, offset, raw, bit)
        except LinkDown as exc:
            raise WriteFailed(f"{link.where} does not answer: {exc}") from None
        except ItemRefused as exc:
            raise WriteFailed(
                f"{link.where} refused the write of {name} ({address}): {exc}"
            ) from None

    async def close(self) -> None:
        for link in self.links.values():
            with contextlib.suppress(Exception):
                await link.close()
