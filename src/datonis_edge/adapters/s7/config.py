"""The s7 configuration: PLCs (rack/slot or TSAP), tags by Siemens address or spelled out the
Datonis way, and the read planning knobs."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import AliasChoices, Field, PrivateAttr, field_validator, model_validator

from ...config.instructions import check_no_writes_to
from ...config.models import Base, ServiceBase, check_tag_sources
from .address import S7Address, parse_address, spelled_address

CONNECTION_TYPES = {"PG": 1, "OP": 2, "S7_BASIC": 3}


def parse_tsap(value: Any) -> int:
    """A TSAP as 0x0102, 01.02 (the way TIA Portal and NetPro show it), or a number."""
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    else:
        text = str(value).strip().lower()
        try:
            if "." in text:
                high, low = text.split(".")
                number = int(high, 16) << 8 | int(low, 16)
            else:
                number = int(text, 16) if text.startswith("0x") else int(text)
        except ValueError:
            number = -1
    if not 0 <= number <= 0xFFFF:
        raise ValueError(f"'{value}' is not a TSAP; write it like 0x0102 or 01.02")
    return number


class S7Device(Base):
    name: str = Field(min_length=1)
    host: str = "127.0.0.1"
    port: int = Field(102, ge=1, le=65_535)
    rack: int = Field(0, ge=0, le=7)
    slot: int = Field(1, ge=0, le=31)
    # instead of rack/slot: the TSAPs of the connection (both)
    local_tsap: int | None = None
    remote_tsap: int | None = None
    connection_type: Literal["PG", "OP", "S7_BASIC"] = "PG"
    pdu_size: int = Field(480, ge=240, le=960)  # asked for; the PLC may grant less
    timeout_ms: int = Field(2000, ge=10, le=60_000)

    @field_validator("local_tsap", "remote_tsap", mode="before")
    @classmethod
    def _tsap(cls, v: Any) -> int | None:
        return None if v is None else parse_tsap(v)

    @model_validator(mode="after")
    def _connection(self) -> S7Device:
        tsaps = (self.local_tsap is None, self.remote_tsap is None)
        if tsaps[0] != tsaps[1]:
            raise ValueError("local_tsap: give both local_tsap and remote_tsap, or neither")
        if not tsaps[0] and {"rack", "slot"} & self.model_fields_set:
            raise ValueError(
                "remote_tsap: give rack/slot or local_tsap/remote_tsap, not both "
                "(the remote TSAP already names rack and slot)"
            )
        return self

    def tsaps(self) -> tuple[int, int]:
        """(local, remote): from rack/slot as the S7 connection types define them."""
        if self.local_tsap is not None and self.remote_tsap is not None:
            return self.local_tsap, self.remote_tsap
        kind = CONNECTION_TYPES[self.connection_type]
        return 0x0100, kind << 8 | self.rack << 5 | self.slot


class S7Tag(Base):
    """One value: `address: DB1.DBD0` (with `type` for another type of the same width), or
    spelled out: `area: DB, db: 1, offset: 0, type: REAL` (`bit` for a BOOL)."""

    name: str = Field(min_length=1)
    device: str = ""  # a device name; empty: the service's first device
    address: str | None = Field(None, validation_alias=AliasChoices("address", "addr"))
    area: str | None = None
    db: int | None = Field(None, ge=0, le=65_535, validation_alias=AliasChoices("db", "db_number"))
    offset: int | None = Field(
        None, ge=0, le=65_535, validation_alias=AliasChoices("offset", "start", "byte")
    )
    bit: int | None = Field(None, ge=0, le=7)
    type: str | None = Field(None, validation_alias=AliasChoices("type", "data_type", "valType"))
    length: int | None = None  # STRING: the declared maximum length (default 254)
    _address: S7Address = PrivateAttr()

    @model_validator(mode="after")
    def _resolve(self) -> S7Tag:
        spelled = {"area": self.area, "db": self.db, "offset": self.offset, "bit": self.bit}
        given = [k for k, v in spelled.items() if v is not None]
        if self.address is not None:
            if given:
                raise ValueError(
                    f"{given[0]}: give either address (DB1.DBD0) or area/db/offset, not both"
                )
            try:
                self._address = parse_address(self.address, self.type, self.length)
            except ValueError as exc:
                raise ValueError(_on_address(str(exc))) from None
            return self
        if self.area is None or self.offset is None:
            raise ValueError(
                "address: give address (like DB1.DBD0, MW10, I0.1) or area, offset and "
                "type (like area: DB, db: 1, offset: 0, type: REAL)"
            )
        if self.type is None:
            raise ValueError(
                "type: give the S7 type (BOOL, BYTE, INT, DINT, WORD, DWORD, REAL, LREAL, STRING)"
            )
        self._address = spelled_address(
            self.area, self.db, self.offset, self.bit, self.type, self.length
        )
        return self

    @property
    def s7(self) -> S7Address:
        return self._address


def _on_address(message: str) -> str:
    """A parse error under the key it is about: `type:`/`length:` say so; the rest is the
    address's."""
    if message.startswith(("type:", "length:")):
        return message
    return "address: " + message.removeprefix("offset: ")


class S7Service(ServiceBase):
    type: Literal["s7"]
    devices: list[S7Device] = Field(min_length=1)
    tags: list[S7Tag] = Field(default_factory=list)
    # tags closer than this many bytes are read as one range
    max_gap: int = Field(16, ge=0, le=512)
    retry_max_backoff_ms: int = Field(30_000, ge=100)

    @model_validator(mode="after")
    def _references(self) -> S7Service:
        check_tag_sources(self.tags, self.devices, self.things)
        check_no_writes_to(
            self.things,
            {t.name for t in self.tags if t.s7.area == "I"},
            "an input (I area), which the PLC overwrites every cycle; write a Q, M or DB address",
        )
        return self
