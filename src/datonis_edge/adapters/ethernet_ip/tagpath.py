"""Logix tag addresses: parsing (for the config) and the CIP symbolic path (for the wire).

An address is what RSLogix 5000 / Studio 5000 shows: `Speed`, `Recipe[3]`, `Grid[1,2]`,
`Motor.Speed` (a UDT member), `Line[2].Motor.Speed`, `Program:Main.Count` (a program tag),
`Status.5` (bit 5 of an integer). `Recipe[2..5]` is four elements from 2 (a range).
Pure functions, no I/O: the config imports this module.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass

_NAME = r"[A-Za-z_][A-Za-z0-9_]{0,39}"
_SEGMENT = re.compile(rf"^({_NAME})(?:\[(\d+(?:\s*,\s*\d+){{0,2}})\])?$")
_RANGE = re.compile(r"^(.*)\[(\d+)\.\.(\d+)\]$")
_PROGRAM = re.compile(rf"^Program:{_NAME}$")

EXAMPLE = (
    "write it like Speed, Recipe[3], Recipe[0..9], Motor.Speed, Program:Main.Count or Status.5"
)


@dataclass(frozen=True)
class TagAddress:
    text: str  # the address as written, without a range
    path: bytes  # the CIP request path (symbolic segments and element indexes)
    count: int  # elements to read
    bit: int | None  # a bit of an integer (`Status.5`)


def _symbol(name: str) -> bytes:
    raw = name.encode("ascii")
    return struct.pack("<BB", 0x91, len(raw)) + raw + (b"\0" if len(raw) % 2 else b"")


def _element(index: int) -> bytes:
    if index < 0x100:
        return struct.pack("<BB", 0x28, index)
    if index < 0x10000:
        return struct.pack("<BBH", 0x29, 0, index)
    return struct.pack("<BBI", 0x2A, 0, index)


def parse(address: str, count: int | None = None) -> TagAddress:
    """The address as a CIP path, or ValueError saying what is wrong and how to write it."""
    text = address.strip()
    if not text:
        raise ValueError(f"an empty address; {EXAMPLE}")
    ranged = _RANGE.match(text)
    if ranged:
        first, last = int(ranged.group(2)), int(ranged.group(3))
        if last < first:
            raise ValueError(
                f"'{address}': the range ends before it starts; write it like Recipe[0..9]"
            )
        if count is not None:
            raise ValueError(f"'{address}': give a range or count, not both")
        text, count = f"{ranged.group(1)}[{first}]", last - first + 1
        if count > 1024:
            raise ValueError(f"'{address}': {count} elements; a tag reads at most 1024, split it")
    parts = text.split(".")
    bit = None
    if len(parts) > 1 and parts[-1].isdigit():
        bit = int(parts.pop())
        if bit > 63:
            raise ValueError(f"'{address}': bit {bit} is past the last bit of a LINT (63)")
        if count not in (None, 1):
            raise ValueError(f"'{address}': a bit is one value; drop count or the range")
    path = b""
    for i, part in enumerate(parts):
        if i == 0 and _PROGRAM.match(part):
            path += _symbol(part)
            continue
        m = _SEGMENT.match(part)
        if not m:
            raise ValueError(f"'{address}' is not a Logix tag address; {EXAMPLE}")
        path += _symbol(m.group(1))
        for index in (m.group(2) or "").split(","):
            if index.strip():
                path += _element(int(index))
    if _PROGRAM.match(parts[-1]):
        raise ValueError(f"'{address}' names a program, not a tag; {EXAMPLE}")
    return TagAddress(text=text, path=path, count=count or 1, bit=bit)
