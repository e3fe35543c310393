"""S7 addresses: Siemens notation (DB1.DBD0, DB1.DBX6.3, MW10, M0.1, IW4, Q0.0, QB1, and the
German E/A for I/Q) and the Datonis gateway's spelled-out form (area, db, offset, bit, type),
resolved to one `S7Address`. Pure functions that import nothing of the package; a bad
address raises ValueError with a sentence naming the fix."""

from __future__ import annotations

import re
from dataclasses import dataclass

# the S7 area codes on the wire (S7 protocol, "Any" pointer syntax)
AREA_CODES = {"DB": 0x84, "M": 0x83, "I": 0x81, "Q": 0x82}
AREAS = {
    "db": "DB", "data_block": "DB",
    "m": "M", "mk": "M", "merker": "M", "flag": "M", "flags": "M", "memory": "M",
    "i": "I", "e": "I", "pe": "I", "input": "I", "inputs": "I",
    "q": "Q", "a": "Q", "pa": "Q", "output": "Q", "outputs": "Q",
}  # fmt: skip

# type -> bytes it occupies (STRING: its length + 2, set from `length`)
TYPE_SIZES = {"BOOL": 1, "BYTE": 1, "SINT": 1, "USINT": 1, "INT": 2, "UINT": 2, "WORD": 2,
              "DINT": 4, "UDINT": 4, "DWORD": 4, "REAL": 4, "LREAL": 8, "STRING": 0}  # fmt: skip
TYPES = {t.lower(): t for t in TYPE_SIZES} | {
    "bit": "BOOL", "boolean": "BOOL", "int8": "SINT", "uint8": "BYTE", "int16": "INT",
    "uint16": "WORD", "int32": "DINT", "uint32": "DWORD", "float": "REAL", "float32": "REAL",
    "float64": "LREAL", "double": "LREAL", "str": "STRING",
}  # fmt: skip
# the size letter of a Siemens address -> its default type and the types of that width
_LETTERS = {"X": ("BOOL", {"BOOL"}),
            "B": ("BYTE", {"BYTE", "SINT", "USINT", "LREAL", "STRING"}),
            "W": ("WORD", {"WORD", "INT", "UINT"}),
            "D": ("DWORD", {"DWORD", "DINT", "UDINT", "REAL"})}  # fmt: skip
STRING_MAX = 254
MAX_OFFSET = 65_535  # the byte offsets an S7 CPU's areas reach
EXAMPLES = "DB1.DBD0, DB1.DBX6.3, DB1.DBW2, MW10, M0.1, I0.1, IW4, Q0.0 or QB1"

_DB = re.compile(r"^DB(\d+)\.DB([XBWD])(\d+)(?:\.(\d+))?$")
_AREA = re.compile(r"^([MIEQA])([XBWD]?)(\d+)(?:\.(\d+))?$")


@dataclass(frozen=True)
class S7Address:
    area: str  # DB, M, I, Q
    db: int  # the data block number; 0 outside DB
    offset: int  # byte offset in the area
    bit: int  # 0-7 for BOOL, else 0
    data_type: str  # one of TYPE_SIZES
    length: int  # STRING: the declared maximum length; else 0

    @property
    def size(self) -> int:
        """Bytes the value occupies (a BOOL reads its byte)."""
        return self.length + 2 if self.data_type == "STRING" else TYPE_SIZES[self.data_type]

    @property
    def area_code(self) -> int:
        return AREA_CODES[self.area]

    def __str__(self) -> str:
        """In Siemens notation: DB1.DBX6.3, MW10, DB1.DBD0 (REAL), DB1.DBB26 (STRING[20])."""
        where = f"DB{self.db}.DB" if self.area == "DB" else self.area
        if self.data_type == "BOOL":
            return f"{where}{'X' if self.area == 'DB' else ''}{self.offset}.{self.bit}"
        letter = {2: "W", 4: "D"}.get(self.size, "B")
        name = f"{where}{letter}{self.offset}"
        if self.data_type == "STRING":
            return f"{name} (STRING[{self.length}])"
        return name if self.data_type == _LETTERS[letter][0] else f"{name} ({self.data_type})"


def _either(words: list[str]) -> str:
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} or {words[-1]}"


def normalize_type(value: str) -> str:
    key = str(value).strip().lower()
    if key not in TYPES:
        raise ValueError(
            f"type: '{value}' is not an S7 data type; use one of {', '.join(TYPE_SIZES)}"
        )
    return TYPES[key]


def normalize_area(value: str) -> str:
    key = str(value).strip().lower()
    if key not in AREAS:
        raise ValueError(f"area: '{value}' is not an S7 area; use DB, M, I or Q")
    return AREAS[key]


def parse_address(text: str, data_type: str | None = None, length: int | None = None) -> S7Address:
    """A Siemens-style address; `data_type` may name a type of the address's width (INT for
    a W, REAL or DINT for a D; LREAL and STRING start at a B)."""
    raw = str(text).strip()
    compact = raw.upper().replace(" ", "")
    m = _DB.match(compact)
    if m:
        area, db, letter, offset, bit = "DB", int(m[1]), m[2], int(m[3]), m[4]
        if db < 1 or db > 65_535:
            raise ValueError(f"'{raw}': data block numbers run from 1 to 65535")
    else:
        m = _AREA.match(compact)
        if not m:
            raise ValueError(f"'{raw}' is not an S7 address; write it like {EXAMPLES}")
        area, db, letter, offset, bit = AREAS[m[1].lower()], 0, m[2], int(m[3]), m[4]
        if not letter:  # M0.1, I0.1: a bit without the X
            if bit is None:
                raise ValueError(
                    f"'{raw}' names no size; write a bit as {m[1]}{offset}.0 or a byte, word, "
                    f"double word as {m[1]}B{offset}, {m[1]}W{offset}, {m[1]}D{offset}"
                )
            letter = "X"
    if letter == "X":
        if bit is None:
            raise ValueError(f"'{raw}' is a bit address without its bit; write it like {raw}.0")
        if int(bit) > 7:
            raise ValueError(f"'{raw}': bit {bit} is not 0-7 (a byte has eight bits)")
    elif bit is not None:
        raise ValueError(
            f"'{raw}': only a bit address (DB1.DBX6.3, M0.1) takes a bit number; drop '.{bit}'"
        )
    byte_address = f"DB{db}.DBB{offset}" if area == "DB" else f"{m[1]}B{offset}"
    default, allowed = _LETTERS[letter]
    chosen = normalize_type(data_type) if data_type else default
    if chosen not in allowed:
        raise ValueError(
            f"'{raw}' holds a {default} and cannot be read as {chosen}; use "
            f"{_either(sorted(allowed - {'LREAL', 'STRING'}))} here"
            + (
                f", or give an LREAL or a STRING its byte address ({byte_address})"
                if letter != "B"
                else ""
            )
        )
    return _checked(area, db, offset, int(bit or 0), chosen, length)


def spelled_address(
    area: str, db: int | None, offset: int, bit: int | None, data_type: str, length: int | None
) -> S7Address:
    """The Datonis form: area: DB, db: 1, offset: 0, type: REAL (bit: 3 for a BOOL)."""
    area = normalize_area(area)
    data_type = normalize_type(data_type)
    if area == "DB" and not db:
        raise ValueError("db: area DB needs db, the data block number (e.g. db: 1)")
    if area != "DB" and db:
        raise ValueError(f"db: only area DB has data blocks; drop db for area {area}")
    if data_type == "BOOL" and bit is None:
        raise ValueError("bit: a BOOL needs bit, 0-7 (e.g. bit: 3)")
    if data_type != "BOOL" and bit is not None:
        raise ValueError(f"bit: only a BOOL takes bit; drop it for type {data_type}")
    return _checked(area, db or 0, offset, bit or 0, data_type, length)


def _checked(
    area: str, db: int, offset: int, bit: int, data_type: str, length: int | None
) -> S7Address:
    if data_type == "STRING":
        if length is None:
            length = STRING_MAX
        if not 1 <= length <= STRING_MAX:
            raise ValueError(
                f"length: an S7 STRING holds 1 to {STRING_MAX} characters, not {length}"
            )
    elif length is not None:
        raise ValueError(f"length: only a STRING takes length; drop it for type {data_type}")
    address = S7Address(area, db, offset, bit, data_type, length or 0)
    if offset + address.size - 1 > MAX_OFFSET:
        raise ValueError(f"offset: {offset} + {address.size} bytes runs past byte {MAX_OFFSET}")
    return address
