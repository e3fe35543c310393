"""The bacnet configuration: the gateway's own BACnet/IP address, devices by address and
instance, objects by id, COV and read-multiple switches."""

from __future__ import annotations

import ipaddress
from typing import Any, Literal

from pydantic import AliasChoices, Field, PrivateAttr, field_validator, model_validator

from ...config.instructions import check_no_writes_to
from ...config.models import Base, ServiceBase, check_tag_sources
from .objects import MAX_INSTANCE, ObjectId, parse_object_id

DEFAULT_PORT = 47808  # 0xBAC0


def parse_host_port(text: str, with_prefix: bool) -> tuple[str, int, int | None]:
    """`10.0.3.50`, `10.0.3.50:47809` (and with_prefix: `10.0.3.5/24:47808`) as (host, port,
    prefix length); ValueError naming the fix."""
    example = "10.0.3.5/24 or 10.0.3.5/24:47808" if with_prefix else "10.0.3.50 or 10.0.3.50:47808"
    where, _, port_text = str(text).strip().partition(":")
    host, slash, prefix_text = where.partition("/")
    try:
        ipaddress.IPv4Address(host)
        port = int(port_text) if port_text else DEFAULT_PORT
        prefix = int(prefix_text) if slash else None
    except ValueError:
        raise ValueError(f"'{text}' is not an IPv4 address; write it like {example}") from None
    if slash and not with_prefix:
        raise ValueError(f"'{text}': a device address has no /prefix; write it like {example}")
    if not 1 <= port <= 65_535 or (prefix is not None and not 0 <= prefix <= 32):
        raise ValueError(f"'{text}': port 1-65535, prefix 0-32; write it like {example}")
    return host, port, prefix


class BacnetDevice(Base):
    name: str = Field(min_length=1)
    address: str  # 10.0.3.50 or 10.0.3.50:47809
    instance: int = Field(
        ge=0, le=MAX_INSTANCE, validation_alias=AliasChoices("instance", "device_id")
    )
    # subscribe to changes where the device supports SubscribeCOV; false: always poll
    cov: bool = True
    cov_lifetime_s: int = Field(300, ge=2, le=86_400)
    # ReadPropertyMultiple where the device supports it; false: one ReadProperty per object
    read_multiple: bool = True
    # the largest answer to ask for; default: what the device says it accepts (≤ 1476)
    max_apdu: int | None = Field(None, ge=50, le=1476)

    @field_validator("address")
    @classmethod
    def _address(cls, v: str) -> str:
        host, port, _ = parse_host_port(v, with_prefix=False)
        return f"{host}:{port}"


class BacnetTag(Base):
    """One object's present-value: `object: analog-input,1` (or `AI:1`)."""

    name: str = Field(min_length=1)
    device: str = ""  # a device name; empty: the service's first device
    object: str = Field(validation_alias=AliasChoices("object", "object_id", "objectId"))
    priority: int = Field(16, ge=1, le=16)  # the priority writes use
    _id: ObjectId = PrivateAttr()

    @model_validator(mode="after")
    def _resolve(self) -> BacnetTag:
        try:
            self._id = parse_object_id(self.object)
        except ValueError as exc:
            raise ValueError(f"object: {exc}") from None
        if self.priority == 6:
            raise ValueError(
                "priority: 6 is reserved for minimum on/off time; use 1-5 or 7-16 (16 is the default)"
            )
        return self

    @property
    def object_id(self) -> ObjectId:
        return self._id


class BacnetService(ServiceBase):
    type: Literal["bacnet"]
    # the gateway's own BACnet/IP address and network prefix (its broadcast domain): required,
    # so the gateway never binds or broadcasts on an interface nobody chose
    local_address: str | None = None
    local_instance: int = Field(4_194_302, ge=0, le=MAX_INSTANCE)  # the gateway's device instance
    devices: list[BacnetDevice] = Field(min_length=1)
    tags: list[BacnetTag] = Field(default_factory=list)
    timeout_ms: int = Field(3000, ge=50, le=60_000)  # one request's answer (APDU timeout)
    retries: int = Field(1, ge=0, le=5)  # a request is sent again this many times
    retry_max_backoff_ms: int = Field(30_000, ge=100)

    @field_validator("local_address")
    @classmethod
    def _local(cls, v: str | None) -> str | None:
        if v is None:
            return None
        host, port, prefix = parse_host_port(v, with_prefix=True)
        if prefix is None:
            raise ValueError(
                f"'{v}': give the network prefix (the broadcast domain), like {host}/24:{port}"
            )
        return f"{host}/{prefix}:{port}"

    @model_validator(mode="after")
    def _references(self) -> BacnetService:
        if self.local_address is None:
            raise ValueError(
                "local_address: give this gateway's BACnet/IP address and network prefix, like "
                "10.0.3.5/24 (port 47808 by default); it binds and broadcasts only there"
            )
        check_tag_sources(self.tags, self.devices, self.things)
        seen: dict[tuple[str, Any], str] = {}
        for i, tag in enumerate(self.tags):
            key = (tag.device, tag.object_id)
            if key in seen:
                raise ValueError(
                    f"tags[{i}].object: {tag.object_id} of {tag.device} is already tag '{seen[key]}'"
                )
            seen[key] = tag.name
        check_no_writes_to(
            self.things,
            {t.name for t in self.tags if t.object_id.is_input},
            "an input object, whose present-value the device sets; write an output or value object",
        )
        return self
