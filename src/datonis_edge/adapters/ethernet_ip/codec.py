"""CIP services for Logix tags: Read Tag, Write Tag, Read-Modify-Write and the Multiple
Service Packet that carries many of them in one request. Pure functions, no I/O.

Reference: ODVA CIP Vol. 1 (Multiple Service Packet, 0x0A; error codes) and Rockwell's
"Logix 5000 Controllers Data Access" (1756-PM020: services 0x4C, 0x4D, 0x4E, 0x52, the
atomic type codes and the STRING structure handle 0x0FCE).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

READ_TAG, WRITE_TAG, RMW_TAG, READ_FRAGMENTED, MULTIPLE = 0x4C, 0x4D, 0x4E, 0x52, 0x0A
MESSAGE_ROUTER = b"\x20\x02\x24\x01"  # class 2, instance 1
STRUCT, LOGIX_STRING_HANDLE, LOGIX_STRING_LEN = 0xA0, 0x0FCE, 82

# type code: (name, struct format); CIP Vol. 1 C-6.1 and 1756-PM020
ATOMIC: dict[int, tuple[str, str]] = {
    0xC1: ("BOOL", "<B"), 0xC2: ("SINT", "<b"), 0xC3: ("INT", "<h"), 0xC4: ("DINT", "<i"),
    0xC5: ("LINT", "<q"), 0xC6: ("USINT", "<B"), 0xC7: ("UINT", "<H"), 0xC8: ("UDINT", "<I"),
    0xC9: ("ULINT", "<Q"), 0xCA: ("REAL", "<f"), 0xCB: ("LREAL", "<d"), 0xD1: ("BYTE", "<B"),
    0xD2: ("WORD", "<H"), 0xD3: ("DWORD", "<I"), 0xD4: ("LWORD", "<Q"),
}  # fmt: skip
CIP_STRING, SHORT_STRING = 0xD0, 0xDA  # a UINT / USINT length, the characters (STRING: to even)
# what an instruction's value is checked as (adapters/base.py fit_value)
FIT_AS = {
    "BOOL": "bool", "SINT": "int8", "INT": "int16", "DINT": "int32", "LINT": "int64",
    "USINT": "uint8", "UINT": "uint16", "UDINT": "uint32", "ULINT": "uint64", "REAL": "float32",
    "LREAL": "float64", "BYTE": "uint8", "WORD": "uint16", "DWORD": "uint32", "LWORD": "uint64",
}  # fmt: skip

_ERRORS = {
    0x04: "the PLC cannot parse the tag path",
    0x05: "no such tag in the PLC",
    0x06: "partial reply",
    0x08: "the PLC does not offer this service",
    0x0A: "attribute error",
    0x13: "too little data for the write",
    0x15: "too much data for the write",
    0x1E: "an embedded service failed",
    0x0E: "the tag cannot be written",
    0x0F: "permission denied (the tag is read-only or externally constant)",
    0x10: "the PLC is in a state that forbids this (program mode or a fault)",
    0x11: "the reply would not fit in the connection; read fewer elements",
    0x26: "the path size is wrong",
    0xFF: "general error (the element is past the array's end, or the type does not match)",
}


class CipError(Exception):
    """The PLC answered a service with an error status."""

    def __init__(self, status: int, extended: int | None = None) -> None:
        self.status = status
        text = _ERRORS.get(status, "CIP error")
        more = f", extended 0x{extended:04X}" if extended is not None else ""
        super().__init__(f"{text} (status 0x{status:02X}{more})")


@dataclass(frozen=True)
class TypeInfo:
    code: int
    handle: int | None = None  # a structure's handle

    @property
    def name(self) -> str:
        if self.code in ATOMIC:
            return ATOMIC[self.code][0]
        if self.code == STRUCT:
            return "STRING" if self.handle == LOGIX_STRING_HANDLE else "UDT"
        return {CIP_STRING: "STRING", SHORT_STRING: "SHORT_STRING"}.get(
            self.code, f"0x{self.code:02X}"
        )

    def header(self) -> bytes:
        if self.code == STRUCT:
            return struct.pack("<BBH", STRUCT, 2, self.handle or 0)
        return struct.pack("<BB", self.code, 0)


def read_service(path: bytes, count: int) -> bytes:
    return struct.pack("<BB", READ_TAG, len(path) // 2) + path + struct.pack("<H", count)


def fragmented_read_service(path: bytes, count: int, offset: int) -> bytes:
    return (
        struct.pack("<BB", READ_FRAGMENTED, len(path) // 2)
        + path
        + struct.pack("<HI", count, offset)
    )


def multiple(services: list[bytes]) -> bytes:
    """One Multiple Service Packet to the message router carrying `services`."""
    offsets, at = [], 2 + 2 * len(services)
    for s in services:
        offsets.append(at)
        at += len(s)
    head = struct.pack("<BB", MULTIPLE, 2) + MESSAGE_ROUTER
    return (
        head + struct.pack(f"<{len(services) + 1}H", len(services), *offsets) + b"".join(services)
    )


def reply_status(reply: bytes) -> tuple[int, int | None, bytes]:
    """A service reply: (status, extended status, data after the status)."""
    status, ext_words = reply[2], reply[3]
    extended = struct.unpack_from("<H", reply, 4)[0] if ext_words else None
    return status, extended, reply[4 + 2 * ext_words :]


def split_multiple(reply: bytes) -> list[bytes]:
    """The embedded replies of a Multiple Service Packet's reply data."""
    count = struct.unpack_from("<H", reply, 0)[0]
    offsets = [*struct.unpack_from(f"<{count}H", reply, 2), len(reply)]
    return [reply[offsets[i] : offsets[i + 1]] for i in range(count)]


def _float32(raw: bytes) -> float | None:
    value = struct.unpack("<f", raw)[0]
    if value != value or value in (float("inf"), float("-inf")):
        return None  # NaN and infinities are not JSON
    for digits in (6, 7, 8, 9):  # the shortest decimal that is this REAL (23.7, not 23.70000076)
        short = float(f"{value:.{digits}g}")
        if struct.pack("<f", short) == raw:
            return short
    return value


def decode_values(data: bytes, count: int) -> tuple[TypeInfo, list[Any]]:
    """A Read Tag reply's data: the type and `count` values."""
    code = data[0]
    if code == STRUCT:
        kind = TypeInfo(code, struct.unpack_from("<H", data, 2)[0])
        body = data[4:]
        if kind.handle != LOGIX_STRING_HANDLE:
            return kind, [body.hex()]
        size = 4 + LOGIX_STRING_LEN + 2  # DINT LEN, SINT[82] DATA, padded to 4 bytes
        out = []
        for i in range(count):
            rec = body[i * size : (i + 1) * size]
            length = max(0, min(struct.unpack_from("<i", rec, 0)[0], LOGIX_STRING_LEN))
            out.append(rec[4 : 4 + length].decode("latin-1"))
        return kind, out
    kind, body = TypeInfo(code), data[2:]
    if code in (CIP_STRING, SHORT_STRING):
        out, at = [], 0
        width = 2 if code == CIP_STRING else 1
        for _ in range(count):
            length = int.from_bytes(body[at : at + width], "little")
            if at + width + length > len(body):
                raise ValueError(f"the reply ends inside string {len(out) + 1} of {count}")
            out.append(body[at + width : at + width + length].decode("latin-1"))
            at += width + length + (length % 2 if code == CIP_STRING else 0)
        return kind, out
    if code not in ATOMIC:
        return kind, [body.hex()]
    name, fmt = ATOMIC[code]
    size = struct.calcsize(fmt)
    if len(body) < size * count:  # a cut reply: never a shorter array taken for the whole
        raise ValueError(f"{len(body)} bytes of data for {count} {name} values")
    if name == "REAL":
        return kind, [_float32(body[i * 4 : i * 4 + 4]) for i in range(count)]
    values = [v for (v,) in struct.iter_unpack(fmt, body[: size * count])]
    if name == "BOOL":
        return kind, [v != 0 for v in values]
    if name == "LREAL":
        return kind, [None if v != v or v in (float("inf"), float("-inf")) else v for v in values]
    return kind, values


def encode_values(kind: TypeInfo, values: Iterable[Any]) -> bytes:
    """Write Tag data for `values` of the type `kind` (values already checked to fit)."""
    items = list(values)
    out = kind.header() + struct.pack("<H", len(items))
    for v in items:
        if kind.code in ATOMIC:
            name, fmt = ATOMIC[kind.code]
            out += struct.pack(fmt, int(bool(v)) if name == "BOOL" else v)
        elif kind.code == CIP_STRING:
            raw = v.encode("latin-1")
            out += struct.pack("<H", len(raw)) + raw + b"\0" * (len(raw) % 2)  # even length
        elif kind.code == SHORT_STRING:
            raw = v.encode("latin-1")
            out += struct.pack("<B", len(raw)) + raw
        else:  # the Logix STRING structure
            raw = v.encode("latin-1")
            out += struct.pack("<i", len(raw)) + raw.ljust(LOGIX_STRING_LEN + 2, b"\0")
    return out


def write_service(path: bytes, kind: TypeInfo, values: Iterable[Any]) -> bytes:
    return struct.pack("<BB", WRITE_TAG, len(path) // 2) + path + encode_values(kind, values)


def bit_write_service(path: bytes, kind: TypeInfo, bit: int, value: bool) -> bytes:
    """Read-Modify-Write of one bit of an integer tag (the PLC does it atomically)."""
    size = struct.calcsize(ATOMIC[kind.code][1])
    ones = (1 << (8 * size)) - 1
    or_mask, and_mask = (1 << bit, ones) if value else (0, ones & ~(1 << bit))
    masks = or_mask.to_bytes(size, "little") + and_mask.to_bytes(size, "little")
    return struct.pack("<BB", RMW_TAG, len(path) // 2) + path + struct.pack("<H", size) + masks


def string_capacity(kind: TypeInfo) -> int:
    if kind.code == SHORT_STRING:
        return 255
    if kind.code == STRUCT:
        return LOGIX_STRING_LEN
    return 65_535
