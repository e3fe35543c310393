"""The modbus_rtu configuration: one serial line (port, baud rate, framing, timing) and the
units on it. Tags are modbus_tcp's tag model, validated by the same code (ModbusTag)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, AliasChoices, Field, field_validator, model_validator

from ...config.models import Base, ServiceBase
from ..modbus_tcp.config import ModbusTag, settle_tags

PARITIES = {"n": "N", "none": "N", "e": "E", "even": "E", "o": "O", "odd": "O"}
BAUDRATES = (300, 600, 1200, 2400, 4800, 9600, 14400, 19200, 38400, 57600, 115200, 230400)


class ModbusRtuUnit(Base):
    """One device on the line, known by its unit id (1-247; 0 is broadcast on a bus)."""

    name: str = Field(min_length=1)
    unit_id: int = Field(validation_alias=AliasChoices("unit_id", "deviceId"))

    @field_validator("unit_id")
    @classmethod
    def _unit_id(cls, v: int) -> int:
        if not 1 <= v <= 247:
            raise ValueError(
                f"{v} is not a unit id on a serial line; use 1 to 247 (0 is broadcast)"
            )
        return v


class ModbusRtuService(ServiceBase):
    type: Literal["modbus_rtu"]
    port: str = Field(min_length=1)  # /dev/ttyUSB0, /dev/ttyS1, /dev/serial/by-id/...
    baudrate: int = Field(9600, validation_alias=AliasChoices("baudrate", "baud_rate", "baud"))
    parity: str = "N"
    stopbits: int = Field(1, validation_alias=AliasChoices("stopbits", "stop_bits"))
    bytesize: int = Field(8, validation_alias=AliasChoices("bytesize", "data_bits"))
    # silence between frames; default 3.5 character times (1.75 ms above 19200 baud, as the
    # Modbus serial line spec fixes it)
    inter_frame_ms: float | None = Field(None, ge=0, le=1000)
    timeout_ms: int = Field(1000, ge=10, le=60_000)  # how long a unit may take to answer
    devices: list[ModbusRtuUnit] = Field(
        min_length=1, validation_alias=AliasChoices("devices", "units")
    )
    tags: list[Annotated[ModbusTag, AfterValidator(ModbusTag.record)]] = Field(default_factory=list)
    max_gap: int = Field(16, ge=0, le=2000)
    retry_max_backoff_ms: int = Field(30_000, ge=100)

    @field_validator("baudrate")
    @classmethod
    def _baudrate(cls, v: int) -> int:
        if v not in BAUDRATES:
            raise ValueError(
                f"{v} is not a serial baud rate; use one of {', '.join(map(str, BAUDRATES))}"
            )
        return v

    @field_validator("parity", mode="before")
    @classmethod
    def _parity(cls, v: object) -> str:
        key = str(v).strip().lower()
        if key not in PARITIES:
            raise ValueError(f"'{v}' is not a parity; use N (none), E (even) or O (odd)")
        return PARITIES[key]

    @field_validator("stopbits")
    @classmethod
    def _stopbits(cls, v: int) -> int:
        if v not in (1, 2):
            raise ValueError(f"{v} stop bits; use 1 or 2")
        return v

    @field_validator("bytesize")
    @classmethod
    def _bytesize(cls, v: int) -> int:
        if v not in (7, 8):
            raise ValueError(f"{v} data bits; Modbus RTU uses 8 (7 only for odd devices)")
        return v

    @model_validator(mode="after")
    def _references(self) -> ModbusRtuService:
        units = [d.unit_id for d in self.devices]
        if len(set(units)) != len(units):
            raise ValueError("devices: two devices have the same unit_id on one line")
        settle_tags(self.devices, self.tags, self.things)
        return self

    @property
    def bits_per_char(self) -> int:
        """Bits on the wire per byte: start bit, data bits, parity bit, stop bits."""
        return 1 + self.bytesize + (0 if self.parity == "N" else 1) + self.stopbits

    @property
    def inter_frame_s(self) -> float:
        if self.inter_frame_ms is not None:
            return self.inter_frame_ms / 1000
        if self.baudrate > 19200:
            return 0.00175
        return 3.5 * self.bits_per_char / self.baudrate
