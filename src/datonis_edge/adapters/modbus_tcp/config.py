"""The modbus_tcp configuration: devices, tags (with the Datonis gateway's key names as
aliases) and the read planning knobs."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, Literal, Protocol

from pydantic import AfterValidator, AliasChoices, Field, field_validator, model_validator

from ...config.models import Base, ServiceBase, check_tag_sources
from .codec import TagSpec
from .vocabulary import DATA_TYPES, ENDIANS, REGISTER_KINDS, REGISTERS_NEEDED, normalize


class ModbusDevice(Base):
    name: str = Field(min_length=1)
    host: str = "127.0.0.1"
    port: int = Field(502, ge=1, le=65_535)
    unit_id: int = Field(1, ge=0, le=255, validation_alias=AliasChoices("unit_id", "deviceId"))
    timeout_ms: int = Field(1000, ge=10, le=60_000)


class ModbusTag(Base):
    """One value on a device. Datonis gateway names are accepted as aliases."""

    name: str = Field(min_length=1)
    device: str = ""  # a device name; empty: the service's first device
    unit_id: int | None = Field(
        None, ge=0, le=255, validation_alias=AliasChoices("unit_id", "deviceId")
    )
    register_kind: str = Field(validation_alias=AliasChoices("register", "type", "register_kind"))
    address: int = Field(ge=0, le=65_535, validation_alias=AliasChoices("address", "refAddr"))
    count: int | None = Field(
        None, ge=1, le=125, validation_alias=AliasChoices("count", "readCount")
    )
    data_type: str = Field("", validation_alias=AliasChoices("data_type", "valType"))
    endian: str = Field("ABCD", validation_alias=AliasChoices("endian", "byte_order", "word_order"))
    bit_index: int | None = Field(
        None, ge=0, le=15, validation_alias=AliasChoices("bit_index", "bitIndex")
    )

    @field_validator("register_kind")
    @classmethod
    def _register(cls, v: str) -> str:
        return normalize(REGISTER_KINDS, v, "register type")

    @field_validator("endian")
    @classmethod
    def _endian(cls, v: str) -> str:
        return normalize(ENDIANS, v, "byte/word order")

    @model_validator(mode="after")
    def _shape(self) -> ModbusTag:
        bits = self.register_kind in ("coil", "discrete")
        if not self.data_type:
            self.data_type = "bool" if bits else "uint16"
        else:
            self.data_type = normalize(DATA_TYPES, self.data_type, "data type")
        if bits and self.data_type != "bool":
            raise ValueError(
                f"data_type: a {self.register_kind} holds one bit; use bool (got {self.data_type})"
            )
        if self.bit_index is not None and (bits or self.data_type != "bool"):
            raise ValueError(
                "bit_index: only for data_type bool read from a holding or input register"
            )
        if self.data_type == "string":
            if self.count is None:
                raise ValueError(
                    "count: a string needs count (registers to read, 2 characters each)"
                )
        else:
            need = 1 if bits else REGISTERS_NEEDED[self.data_type]
            if self.count is not None and self.count < need:
                raise ValueError(
                    f"count: data_type {self.data_type} needs {need} registers, count is {self.count}"
                )
            self.count = need
        if self.address + self.count > 65_536:
            raise ValueError(
                f"address: {self.address} + {self.count} registers runs past the last address 65535"
            )
        return self

    def record(self) -> TagSpec:
        """The tag as the adapter keeps it (its device and unit_id are settled by the service)."""
        assert self.count is not None  # set by _shape
        return TagSpec(
            self.name,
            self.device,
            self.unit_id,  # type: ignore[arg-type]
            self.register_kind,
            self.address,
            self.count,
            self.data_type,
            self.endian,
            self.bit_index,
        )


class ModbusTcpService(ServiceBase):
    type: Literal["modbus_tcp"]
    devices: list[ModbusDevice] = Field(min_length=1)
    # each validated as a ModbusTag and kept as a TagSpec record (the same attribute names):
    # 15,000 tags never exist as pydantic models at once
    tags: list[Annotated[ModbusTag, AfterValidator(ModbusTag.record)]] = Field(default_factory=list)
    # tags closer than this many addresses are read in one request
    max_gap: int = Field(16, ge=0, le=2000)
    retry_max_backoff_ms: int = Field(30_000, ge=100)

    @model_validator(mode="after")
    def _references(self) -> ModbusTcpService:
        settle_tags(self.devices, self.tags, self.things)
        return self


class _HasUnit(Protocol):
    name: str
    unit_id: int


def settle_tags(devices: Sequence[_HasUnit], tags: list[TagSpec], things: list[Any]) -> None:
    """Check the tags' devices and things, and give each tag its device and unit_id (the
    service's first device, the device's unit_id, when it names none). Shared by modbus_rtu."""
    by_name = check_tag_sources(tags, devices, things)
    for tag in tags:
        if tag.unit_id is None:
            tag.unit_id = by_name[tag.device].unit_id
