"""The root configuration model, assembled from the registries: `cloud` is one of the uplinks'
models (chosen by `protocol`), each of `services` one of the adapters' models (chosen by
`type`). Adding a protocol adds its registry line; nothing here names a protocol.
"""

from __future__ import annotations

import os
from typing import Annotated, Any, Union

from pydantic import Discriminator, Field, Tag, model_validator

from .adapters.base import REGISTRY as ADAPTERS
from .config import ConfigError, ConsoleConfig, OutboxConfig
from .config import load_config as _load
from .config import parse_config as _parse
from .config.models import Base
from .uplinks.base import REGISTRY as UPLINKS

DEFAULT_PROTOCOL = "https"


def _tagged_union(registry: dict[str, Any], discriminator: Any) -> Any:
    models = [Annotated[p.config_model(), Tag(name)] for name, p in registry.items()]
    return Annotated[Union[tuple(models)], Discriminator(discriminator)]  # noqa: UP007


def _protocol_of(value: Any) -> str | None:
    if isinstance(value, dict):
        protocol = value.get("protocol", DEFAULT_PROTOCOL)
        return protocol if isinstance(protocol, str) else None
    return getattr(value, "protocol", None)


CloudConfig = _tagged_union(UPLINKS, _protocol_of)
ServiceConfig = _tagged_union(ADAPTERS, "type")
SERVICE_TYPES = tuple(ADAPTERS)


class Config(Base):
    cloud: CloudConfig  # type: ignore[valid-type]
    outbox: OutboxConfig = Field(default_factory=OutboxConfig)
    console: ConsoleConfig = Field(default_factory=ConsoleConfig)
    services: list[ServiceConfig] = Field(default_factory=list)  # type: ignore[valid-type]

    @model_validator(mode="after")
    def _names(self) -> Config:
        seen: dict[str, int] = {}
        for i, svc in enumerate(self.services):
            if not svc.name:
                svc.name = f"{svc.type}-{i}"
            if svc.name in seen:
                raise ValueError(
                    f"services[{i}].name: '{svc.name}' is already the name of "
                    f"services[{seen[svc.name]}]; give every service its own name"
                )
            seen[svc.name] = i
        return self

    def thing_keys(self) -> list[str]:
        return sorted({t.thing_key for s in self.services for t in s.things})


def parse_config(data: Any, source: str = "config") -> Config:
    return _parse(data, Config, source)


def load_config(path: str | os.PathLike[str]) -> Config:
    return _load(path, Config)


__all__ = ["SERVICE_TYPES", "Config", "ConfigError", "load_config", "parse_config"]
