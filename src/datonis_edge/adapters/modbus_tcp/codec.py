"""Modbus register decoding and read planning: pure functions, no I/O.

Word/byte orders name the four bytes of a 32-bit value A B C D as they should be read:
ABCD big-endian (Modbus' own order), BADC bytes swapped in each word, CDAB words swapped,
DCBA little-endian. 64-bit values extend the same rule to four words.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any

from .vocabulary import MAX_BITS_PER_READ, MAX_REGISTERS_PER_READ

_FORMATS = {"int16": ">h", "uint16": ">H", "int32": ">i", "uint32": ">I", "float32": ">f",
            "int64": ">q", "uint64": ">Q", "float64": ">d"}  # fmt: skip


def registers_to_bytes(registers: list[int], endian: str) -> bytes:
    """The value's bytes in big-endian order, whatever order the device keeps them in."""
    words = list(registers)
    if endian in ("CDAB", "DCBA"):
        words.reverse()
    raw = b"".join(w.to_bytes(2, "big") for w in words)
    if endian in ("BADC", "DCBA"):
        raw = b"".join(raw[i : i + 2][::-1] for i in range(0, len(raw), 2))
    return raw


def decode(
    registers: list[int], data_type: str, endian: str = "ABCD", bit_index: int | None = None
) -> Any:
    if data_type == "bool":
        word = registers[0]
        return bool((word >> bit_index) & 1) if bit_index is not None else word != 0
    if data_type == "string":
        raw = b"".join(w.to_bytes(2, "big") for w in registers)
        if endian in ("BADC", "DCBA"):
            raw = b"".join(raw[i : i + 2][::-1] for i in range(0, len(raw), 2))
        return raw.split(b"\0", 1)[0].decode("latin-1").rstrip()
    value = struct.unpack(_FORMATS[data_type], registers_to_bytes(registers, endian))[0]
    if data_type.startswith("float") and value != value:  # NaN is not JSON
        return None
    return value


def encode(value: Any, data_type: str, endian: str = "ABCD") -> list[int]:
    """The inverse of decode for numbers (used by tests and the benchmark's servers)."""
    raw = struct.pack(_FORMATS[data_type], value)
    if endian in ("BADC", "DCBA"):
        raw = b"".join(raw[i : i + 2][::-1] for i in range(0, len(raw), 2))
    words = [int.from_bytes(raw[i : i + 2], "big") for i in range(0, len(raw), 2)]
    if endian in ("CDAB", "DCBA"):
        words.reverse()
    return words


@dataclass(slots=True)
class TagSpec:
    """A validated tag as the running adapter keeps it (config.py makes these from ModbusTag):
    ~0.1 kB where a pydantic model takes ~1 kB, which counts with 15,000 tags."""

    name: str
    device: str
    unit_id: int  # the device's unit_id when the tag names none
    register_kind: str  # holding | input | coil | discrete
    address: int
    count: int  # registers (or bits) it occupies
    data_type: str
    endian: str
    bit_index: int | None


@dataclass
class ReadGroup:
    """One request: a run of addresses of one kind on one unit, covering several tags."""

    device: str
    unit_id: int
    register: str
    start: int
    count: int
    tags: list[TagSpec] = field(default_factory=list)

    def values(self, words_or_bits: list[Any]) -> dict[str, Any]:
        out = {}
        for tag in self.tags:
            offset = tag.address - self.start
            chunk = words_or_bits[offset : offset + tag.count]
            if self.register in ("coil", "discrete"):
                out[tag.name] = bool(chunk[0])
            else:
                out[tag.name] = decode(chunk, tag.data_type, tag.endian, tag.bit_index)
        return out


def plan_reads(
    tags: list[TagSpec],
    max_gap: int,
    max_registers: int = MAX_REGISTERS_PER_READ,
    max_bits: int = MAX_BITS_PER_READ,
) -> list[ReadGroup]:
    """Merge tags that lie close together into as few requests as the protocol allows."""
    by_kind: dict[tuple[str, int, str], list[TagSpec]] = {}
    for tag in tags:
        by_kind.setdefault((tag.device, tag.unit_id, tag.register_kind), []).append(tag)
    groups: list[ReadGroup] = []
    for (device, unit, register), members in by_kind.items():
        limit = max_bits if register in ("coil", "discrete") else max_registers
        members.sort(key=lambda t: t.address)
        current: ReadGroup | None = None
        for tag in members:
            end = tag.address + tag.count
            if (
                current is not None
                and tag.address - (current.start + current.count) <= max_gap
                and end - current.start <= limit
            ):
                current.count = max(current.count, end - current.start)
                current.tags.append(tag)
                continue
            current = ReadGroup(device, unit, register, tag.address, tag.count, [tag])
            groups.append(current)
    return groups
