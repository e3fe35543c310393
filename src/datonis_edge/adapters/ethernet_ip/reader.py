"""Reading one PLC: its tags packed into Multiple Service Packets up to the connection size,
the replies decoded, each tag's reply size learned for the next plan. Blocking: it runs in
the device's worker thread (adapter.py).

The first scan does not know the tags' types, so it plans for 88 bytes a tag (a Logix
STRING); from the second scan on the plan uses the sizes the PLC answered: 500 DINTs with
short names go in two requests. A tag whose reply would not fit a packet is read alone by
fragments (service 0x52); once its size is known it joins a packet if it fits after all. A tag the PLC refuses (no such tag, past the array's end) is an error of
that tag only; the others of its packet are delivered.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

from . import codec
from .codec import CipError, TypeInfo
from .session import Session
from .tagpath import TagAddress

_GUESS = 88  # bytes of a value whose type is not known yet (a Logix STRING)
_MARGIN = 8  # bytes of the connection size left unused
_MOST_PER_ELEMENT = 2 + 65_535 + 1  # the largest element: a CIP STRING of 65,535 characters


class Unreadable(ValueError):
    """The tag was read but cannot be delivered as it is addressed."""


@dataclass
class TagRead:
    name: str
    address: TagAddress
    service: bytes
    reply_size: int | None = None  # learned: the service's reply, 4-byte header included
    kind: TypeInfo | None = None
    alone: bool = False  # too large for a packet (as planned): read by fragments
    too_big: bool = False  # the PLC said so (a partial reply): by fragments from now on

    @classmethod
    def of(cls, name: str, address: TagAddress) -> TagRead:
        return cls(name, address, codec.read_service(address.path, address.count))

    def value(self, kind: TypeInfo, values: list[Any]) -> Any:
        self.kind = kind
        if kind.name == "UDT" or kind.name.startswith("0x"):
            raise Unreadable(
                f"is a {kind.name}, not decoded whole; read its members, like Motor.Speed"
            )
        if self.address.bit is not None:
            if not isinstance(values[0], int) or isinstance(values[0], bool):
                raise Unreadable(
                    f"is a {kind.name}, which has no bits; drop the .{self.address.bit}"
                )
            return bool((values[0] >> self.address.bit) & 1)
        return values[0] if self.address.count == 1 else values


def plan(reads: list[TagRead], connection_size: int) -> list[list[TagRead]]:
    """The tags in packets whose request and reply both fit the connection."""
    budget = connection_size - _MARGIN
    packets: list[list[TagRead]] = []
    current: list[TagRead] = []
    head = 8  # service, path size, message router path, service count
    request = reply = head
    for r in reads:
        size = r.reply_size or 4 + 4 + _GUESS * r.address.count
        r.alone = r.too_big or size + head + 2 > budget
        if r.alone:
            packets.append([r])
            continue
        if current and (request + len(r.service) + 2 > budget or reply + size + 2 > budget):
            packets.append(current)
            current, request, reply = [], head, head
        current.append(r)
        request += len(r.service) + 2
        reply += size + 2
    if current:
        packets.append(current)
    return packets


class Reader:
    def __init__(self, session: Session, reads: list[TagRead]) -> None:
        self.session = session
        self.reads = reads
        self.packets: list[list[TagRead]] = []
        self._planned_for: tuple[Any, ...] = ()
        self.single_only = False  # the PLC has no Multiple Service Packet

    def _plan(self) -> list[list[TagRead]]:
        size = self.session.connection_size or 504
        key = (size, self.single_only, *((r.reply_size, r.too_big) for r in self.reads))
        if key != self._planned_for:
            self._planned_for = key
            self.packets = [[r] for r in self.reads] if self.single_only else plan(self.reads, size)
        return self.packets

    def read(self) -> tuple[dict[str, Any], dict[str, str]]:
        """Every tag once: the values, and the tags that failed with why. DeviceDown if the
        PLC stops answering (values read so far are dropped with it)."""
        self.session.connect()
        values: dict[str, Any] = {}
        errors: dict[str, str] = {}
        for packet in self._plan():
            if len(packet) == 1:
                self.read_one(packet[0], values, errors)
            else:
                self._read_packet(packet, values, errors)
        return values, errors

    def _take(
        self, r: TagRead, reply: bytes, values: dict[str, Any], errors: dict[str, str]
    ) -> None:
        status, extended, data = codec.reply_status(reply)
        if status == 0x06:  # would not fit: by fragments, now and from now on
            r.alone = r.too_big = True
            self.read_one(r, values, errors)
            return
        try:
            if status:
                raise CipError(status, extended)
            r.reply_size = len(reply)
            values[r.name] = r.value(*codec.decode_values(data, r.address.count))
        except (CipError, Unreadable) as exc:
            errors[r.name] = f"{r.address.text}: {exc}"
        except (ValueError, IndexError, struct.error) as exc:
            errors[r.name] = f"{r.address.text}: cannot decode the PLC's reply ({exc})"

    def _read_packet(
        self, packet: list[TagRead], values: dict[str, Any], errors: dict[str, str]
    ) -> None:
        reply = self.session.request(codec.multiple([r.service for r in packet]))
        status, _, data = codec.reply_status(reply)
        if status not in (0, 0x1E):  # the packet itself refused: one service at a time
            self.single_only = status == 0x08
            for r in packet:
                self.read_one(r, values, errors)
            return
        for r, embedded in zip(packet, codec.split_multiple(data), strict=False):
            self._take(r, embedded, values, errors)

    def read_one(self, r: TagRead, values: dict[str, Any], errors: dict[str, str]) -> None:
        if not r.alone:
            self._take(r, self.session.request(r.service), values, errors)
            return
        path, count = r.address.path, r.address.count
        chunks, offset, header = [], 0, b""
        while True:
            reply = self.session.request(codec.fragmented_read_service(path, count, offset))
            status, extended, data = codec.reply_status(reply)
            if status not in (0, 0x06):
                errors[r.name] = f"{r.address.text}: {CipError(status, extended)}"
                return
            cut = 4 if data[0] == codec.STRUCT else 2
            header = data[:cut]
            chunks.append(data[cut:])
            offset += len(data) - cut
            if status == 0 or len(data) <= cut:
                break
            if offset > count * _MOST_PER_ELEMENT:  # a PLC that never says "done"
                errors[r.name] = f"{r.address.text}: the PLC sends more than {count} values hold"
                return
        data = header + b"".join(chunks)
        r.reply_size = 4 + len(data)  # whole: the next plan packs it if it fits after all
        try:
            values[r.name] = r.value(*codec.decode_values(data, count))
        except (CipError, Unreadable) as exc:
            errors[r.name] = f"{r.address.text}: {exc}"
        except (ValueError, IndexError, struct.error) as exc:
            errors[r.name] = f"{r.address.text}: cannot decode the PLC's reply ({exc})"
