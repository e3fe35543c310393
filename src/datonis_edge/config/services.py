"""One model per southbound adapter type (the `services` list), discriminated by `type`."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import (
    AliasChoices,
    Discriminator,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)

from ..modbus_types import DATA_TYPES, ENDIANS, REGISTER_KINDS, REGISTERS_NEEDED, normalize
from ..waveforms import TagError, parse_tag
from .models import ThingConfig, _Base


class _ServiceBase(_Base):
    name: str = ""
    enabled: bool = True
    scan_interval_ms: int = Field(1000, ge=10, le=86_400_000)
    send_interval_ms: int = Field(0, ge=0)
    things: list[ThingConfig] = Field(default_factory=list)


class SimulatorService(_ServiceBase):
    type: Literal["simulator"]

    @model_validator(mode="after")
    def _check_tags(self) -> SimulatorService:
        for ti, thing in enumerate(self.things):
            names = {m.name for m in thing.metrics}
            for mi, metric in enumerate(thing.metrics):
                if metric.tag:
                    try:
                        parse_tag(metric.tag)
                    except TagError as exc:
                        raise ValueError(f"things[{ti}].metrics[{mi}].tag: {exc}") from None
                for ii, name in enumerate(metric.inputs):
                    if name not in names:
                        raise ValueError(
                            f"things[{ti}].metrics[{mi}].inputs[{ii}]: '{name}' is not a metric of this thing"
                        )
        return self


class _Listener(_ServiceBase):
    @model_validator(mode="after")
    def _no_send_interval(self) -> _Listener:
        if self.send_interval_ms:
            raise ValueError(
                "send_interval_ms: a listener acknowledges each reading once it is durable, so it "
                "cannot hold readings back; send_interval_ms is for polled adapters"
            )
        return self


class SignatureKey(_Base):
    access_key: str = Field(min_length=1)
    secret_key: SecretStr


class ConnectionLimits(_Base):
    """What one HTTP server (the console, an http_listener) lets a client hold; the reasons
    for the defaults are in serving.py."""

    max_connections: int = Field(1000, ge=1, le=100_000)
    header_timeout_ms: int = Field(10_000, ge=100, le=600_000)
    body_timeout_ms: int = Field(30_000, ge=100, le=3_600_000)
    idle_timeout_ms: int = Field(60_000, ge=100, le=3_600_000)
    max_header_bytes: int = Field(32 << 10, ge=1024, le=1 << 20)


class HttpListenerService(_Listener):
    type: Literal["http_listener"]
    host: str = "0.0.0.0"
    port: int = Field(8081, ge=1, le=65_535)
    max_body_bytes: int = Field(16 << 20, ge=1024)
    limits: ConnectionLimits = Field(default_factory=ConnectionLimits)
    # When set, every request must carry X-Access-Key and a valid X-Dtn-Signature.
    keys: list[SignatureKey] = Field(default_factory=list)


class MqttListenerService(_Listener):
    type: Literal["mqtt_listener"]
    host: str = "127.0.0.1"
    port: int = Field(1883, ge=1, le=65_535)
    client_id: str = ""
    username: str = ""
    password: SecretStr = SecretStr("")
    topics: list[str] = Field(default_factory=lambda: ["datonis-edge/+/data"], min_length=1)
    # Which topic level (0-based) holds the thing_key; None: the payload's "thing_key".
    thing_key_topic_level: int | None = Field(None, ge=0)
    qos: Literal[0, 1] = 1

    @field_validator("topics")
    @classmethod
    def _topics_valid(cls, topics: list[str]) -> list[str]:
        for t in topics:
            if not t or ("#" in t and not t.endswith("#")):
                raise ValueError(f"'{t}' is not a valid MQTT topic filter ('#' only at the end)")
        return topics


class ModbusDevice(_Base):
    name: str = Field(min_length=1)
    host: str = "127.0.0.1"
    port: int = Field(502, ge=1, le=65_535)
    unit_id: int = Field(1, ge=0, le=255, validation_alias=AliasChoices("unit_id", "deviceId"))
    timeout_ms: int = Field(1000, ge=10, le=60_000)


class ModbusTag(_Base):
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


class ModbusTcpService(_ServiceBase):
    type: Literal["modbus_tcp"]
    devices: list[ModbusDevice] = Field(min_length=1)
    tags: list[ModbusTag] = Field(default_factory=list)
    # tags closer than this many addresses are read in one request
    max_gap: int = Field(16, ge=0, le=2000)
    retry_max_backoff_ms: int = Field(30_000, ge=100)

    @model_validator(mode="after")
    def _references(self) -> ModbusTcpService:
        devices = {d.name: d for d in self.devices}
        if len(devices) != len(self.devices):
            raise ValueError("devices: two devices have the same name; names must be unique")
        _check_tag_references(self.tags, self.things)
        for i, tag in enumerate(self.tags):
            if not tag.device:
                tag.device = self.devices[0].name
            elif tag.device not in devices:
                raise ValueError(
                    f"tags[{i}].device: no device named '{tag.device}' (devices: {', '.join(devices)})"
                )
        return self


_NODE_ID = re.compile(r"^(ns=\d+;)?[isgb]=.+$")


class OpcUaTag(_Base):
    name: str = Field(min_length=1)
    node_id: str = Field(validation_alias=AliasChoices("node_id", "nodeId"))

    @field_validator("node_id")
    @classmethod
    def _node_id(cls, v: str) -> str:
        if not _NODE_ID.match(v.strip()):
            raise ValueError(
                f"'{v}' is not an OPC UA node id; write it like ns=2;s=Channel1.Machine1.Tag1 or ns=3;i=1001"
            )
        return v.strip()


class OpcUaService(_ServiceBase):
    type: Literal["opcua"]
    endpoint: str
    mode: Literal["subscription", "polling"] = "subscription"
    sampling_interval_ms: int | None = Field(None, ge=0)
    security_policy: Literal["None", "Basic256Sha256"] = "None"
    security_mode: Literal["None", "Sign", "SignAndEncrypt"] | None = None
    username: str = ""
    password: SecretStr = SecretStr("")
    timeout_ms: int = Field(5000, ge=100, le=120_000)
    retry_max_backoff_ms: int = Field(30_000, ge=100)
    tags: list[OpcUaTag] = Field(default_factory=list)

    @model_validator(mode="after")
    def _check(self) -> OpcUaService:
        if not self.endpoint.startswith("opc.tcp://"):
            raise ValueError(f"endpoint: '{self.endpoint}' is not an opc.tcp:// URL")
        if self.security_mode is None:
            self.security_mode = "None" if self.security_policy == "None" else "SignAndEncrypt"
        if (self.security_policy == "None") != (self.security_mode == "None"):
            raise ValueError(
                "security_mode: with security_policy None use mode None; with Basic256Sha256 use Sign or SignAndEncrypt"
            )
        _check_tag_references(self.tags, self.things)
        return self


def _check_tag_references(tags: list[Any], things: list[ThingConfig]) -> set[str]:
    seen: set[str] = set()
    for i, tag in enumerate(tags):
        if tag.name in seen:
            raise ValueError(
                f"tags[{i}].name: '{tag.name}' is used twice; tag names must be unique"
            )
        seen.add(tag.name)
    for ti, thing in enumerate(things):
        names = {m.name for m in thing.metrics}
        for mi, metric in enumerate(thing.metrics):
            if metric.tag and metric.tag not in seen:
                raise ValueError(
                    f"things[{ti}].metrics[{mi}].tag: no tag named '{metric.tag}' in this service's tags"
                )
            for ii, name in enumerate(metric.inputs):
                if name not in seen and name not in names:
                    raise ValueError(
                        f"things[{ti}].metrics[{mi}].inputs[{ii}]: '{name}' is neither a metric of this thing nor a tag"
                    )
    return seen


ServiceConfig = Annotated[
    SimulatorService | HttpListenerService | MqttListenerService | ModbusTcpService | OpcUaService,
    Discriminator("type"),
]
SERVICE_TYPES = ("simulator", "http_listener", "mqtt_listener", "modbus_tcp", "opcua")
