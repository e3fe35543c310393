"""The ethernet_ip configuration: Logix PLCs (host, slot or route) and tags by name."""

from __future__ import annotations

import ipaddress
from typing import Literal

from pydantic import AliasChoices, Field, field_validator, model_validator

from ...config.models import Base, ServiceBase, check_tag_sources
from .tagpath import TagAddress, parse

ROUTE_EXAMPLE = "write it like 1/0 (backplane, slot 0) or 2/10.0.3.40/1/0 (out of port 2 to 10.0.3.40, then slot 0)"


def parse_route(route: str) -> list[tuple[int, int | str]]:
    """A route as port/link hops: `1/0` is backplane port 1, slot 0; `2/10.0.3.40` leaves
    an Ethernet module's port 2 for that address."""
    parts = [p.strip() for p in route.replace(",", "/").split("/") if p.strip()]
    if not parts or len(parts) % 2:
        raise ValueError(f"'{route}' is not a route of port/link pairs; {ROUTE_EXAMPLE}")
    hops: list[tuple[int, int | str]] = []
    for port, link in zip(parts[::2], parts[1::2], strict=True):
        if not port.isdigit() or not 1 <= int(port) <= 14:
            raise ValueError(f"'{route}': port '{port}' is not a port number 1-14; {ROUTE_EXAMPLE}")
        if link.isdigit() and int(link) <= 255:
            hops.append((int(port), int(link)))
            continue
        try:
            ipaddress.IPv4Address(link)
        except ValueError:
            raise ValueError(
                f"'{route}': link '{link}' is neither a slot 0-255 nor an IPv4 address; {ROUTE_EXAMPLE}"
            ) from None
        hops.append((int(port), link))
    return hops


class EnipDevice(Base):
    name: str = Field(min_length=1)
    host: str
    port: int = Field(44818, ge=1, le=65_535)
    slot: int = Field(0, ge=0, le=255)  # the controller's slot in the chassis (backplane port 1)
    route: str = Field("", validation_alias=AliasChoices("route", "path"))  # replaces slot
    micro800: bool = False  # Micro800 controllers take no route
    timeout_ms: int = Field(2000, ge=50, le=60_000)
    # bytes per request and reply; none: a Large Forward Open (4002), else 504
    connection_size: int | None = Field(None, ge=100, le=4002)

    @field_validator("route")
    @classmethod
    def _route(cls, v: str) -> str:
        if v.strip():
            parse_route(v)
        return v.strip()

    def hops(self) -> list[tuple[int, int | str]]:
        return parse_route(self.route)


class EnipTag(Base):
    name: str = Field(min_length=1)
    device: str = ""  # a device name; empty: the service's first device
    address: str = Field(validation_alias=AliasChoices("address", "tag", "tag_name"))
    # elements of an array from the address's index (or use a range, Recipe[0..9])
    count: int | None = Field(  # at most a reading's list (readings.MAX_ITEMS)
        None, ge=1, le=1024, validation_alias=AliasChoices("count", "elements")
    )

    def parsed(self) -> TagAddress:
        return parse(self.address, self.count)

    @model_validator(mode="after")
    def _address(self) -> EnipTag:
        try:
            self.parsed()
        except ValueError as exc:
            raise ValueError(f"address: {exc}") from None
        return self


class EthernetIpService(ServiceBase):
    type: Literal["ethernet_ip"]
    devices: list[EnipDevice] = Field(min_length=1)
    tags: list[EnipTag] = Field(default_factory=list)
    retry_max_backoff_ms: int = Field(30_000, ge=100)

    @model_validator(mode="after")
    def _references(self) -> EthernetIpService:
        for i, d in enumerate(self.devices):
            if d.micro800 and d.route:
                raise ValueError(
                    f"devices[{i}].route: a Micro800 takes no route; remove route or micro800"
                )
        check_tag_sources(self.tags, self.devices, self.things)
        return self
