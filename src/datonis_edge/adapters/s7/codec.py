"""S7 values and read planning: pure functions, no I/O.

S7 keeps numbers big-endian. A STRING is a two-byte header (declared maximum length, actual
length) and the characters. Reads are planned in two steps: tags of one area (and data
block) that lie within `max_gap` bytes of each other become one byte range; ranges are cut
to what one response can carry and packed into multi-variable read requests (at most 20
items, request and response within the negotiated PDU size).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any

from .address import S7Address

_FORMATS = {"BYTE": ">B", "SINT": ">b", "USINT": ">B", "INT": ">h", "UINT": ">H", "WORD": ">H",
            "DINT": ">i", "UDINT": ">I", "DWORD": ">I", "REAL": ">f", "LREAL": ">d"}  # fmt: skip

MAX_ITEMS = 20  # variables in one S7 read request (what S7 CPUs and snap7 accept)
HEADER = 12  # S7 header of a response (request: 10, counted as 12 to be safe)
PARAMS = 2  # function code and item count
ITEM_SPEC = 12  # one variable's address in a request
ITEM_HEAD = 4  # return code, transport size, length: before each item's data in a response


def decode(raw: bytes | bytearray, address: S7Address) -> Any:
    """The value of `address` from its bytes (raw starts at the address's offset)."""
    if address.data_type == "BOOL":
        return bool(raw[0] >> address.bit & 1)
    if address.data_type == "STRING":
        actual = min(raw[1], raw[0] or address.length, address.length)
        return bytes(raw[2 : 2 + actual]).decode("latin-1")
    value = struct.unpack(_FORMATS[address.data_type], bytes(raw[: address.size]))[0]
    if address.data_type in ("REAL", "LREAL") and value != value:  # NaN is not JSON
        return None
    return value


def encode(value: Any, address: S7Address) -> bytes:
    """The bytes written for a value already fitted to the type. A BOOL is its bit (written
    with an S7 bit write); a STRING is its actual length and characters, leaving the
    declared maximum (the first header byte) as the PLC has it."""
    if address.data_type == "BOOL":
        return b"\x01" if value else b"\x00"
    if address.data_type == "STRING":
        raw = value.encode("latin-1")
        return bytes([len(raw)]) + raw
    return struct.pack(_FORMATS[address.data_type], value)


@dataclass
class TagRead:
    name: str
    address: S7Address


@dataclass
class Block:
    """A run of bytes of one area that covers several tags; filled by one or more items."""

    area: int
    db: int
    start: int
    length: int
    tags: list[TagRead] = field(default_factory=list)
    data: bytearray = field(default_factory=bytearray)

    def values(self) -> dict[str, Any]:
        out = {}
        for tag in self.tags:
            at = tag.address.offset - self.start
            out[tag.name] = decode(self.data[at : at + tag.address.size], tag.address)
        return out


@dataclass
class Item:
    """One variable of a read request: `length` bytes of a block from `start`."""

    block: Block
    start: int
    length: int


@dataclass
class Request:
    items: list[Item] = field(default_factory=list)
    response_bytes: int = HEADER + PARAMS

    def specs(self) -> list[tuple[int, int, int, int]]:
        return [(i.block.area, i.block.db, i.start, i.length) for i in self.items]


def plan_blocks(tags: list[TagRead], max_gap: int) -> list[Block]:
    """Tags of one area and data block within `max_gap` bytes of each other: one block."""
    by_area: dict[tuple[int, int], list[TagRead]] = {}
    for tag in tags:
        by_area.setdefault((tag.address.area_code, tag.address.db), []).append(tag)
    blocks: list[Block] = []
    for (area, db), members in sorted(by_area.items()):
        members.sort(key=lambda t: t.address.offset)
        current: Block | None = None
        for tag in members:
            start, end = tag.address.offset, tag.address.offset + tag.address.size
            if current is not None and start - (current.start + current.length) <= max_gap:
                current.length = max(current.length, end - current.start)
                current.tags.append(tag)
                continue
            current = Block(area, db, start, end - start, [tag])
            blocks.append(current)
    return blocks


def plan_requests(blocks: list[Block], pdu_size: int) -> list[Request]:
    """Items packed into as few requests as the PDU size and the 20-item limit allow.

    A block longer than one response can carry is cut into several items; each request's
    items and their response (with the fill byte after an odd item) fit in `pdu_size`."""
    payload = pdu_size - HEADER - PARAMS - ITEM_HEAD  # the most one item can carry alone
    max_items = min(MAX_ITEMS, (pdu_size - HEADER - PARAMS) // ITEM_SPEC)
    items = [
        Item(b, b.start + at, min(payload, b.length - at))
        for b in blocks
        for at in range(0, b.length, payload)
    ]
    requests: list[Request] = []
    for item in sorted(items, key=lambda i: -i.length):  # first fit, biggest first
        cost = ITEM_HEAD + item.length + item.length % 2
        for request in requests:
            if len(request.items) < max_items and request.response_bytes + cost <= pdu_size:
                break
        else:
            request = Request()
            requests.append(request)
        request.items.append(item)
        request.response_bytes += cost
    return requests
