"""The mtconnect configuration: agents, the data items read as tags, streaming or polling."""

from __future__ import annotations

from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import AliasChoices, Field, field_validator, model_validator

from ...config.models import Base, ServiceBase, check_tag_sources

READ_ONLY = (
    "MTConnect agents are read-only: an agent reports what a machine does and takes no "
    "writes; put the thing's instructions under a service that can write (modbus_tcp, opcua)"
)


class MtconnectAgent(Base):
    name: str = Field(min_length=1)
    url: str  # http://10.0.4.20:5000 (the agent's base URL, with a path prefix if it has one)
    device: str = ""  # a device name or uuid when the agent serves several; empty: all
    timeout_ms: int = Field(5000, ge=100, le=120_000)

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        parts = urlsplit(v.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(
                f"'{v}' is not an agent URL; write it like http://10.0.4.20:5000 (no /probe or /current)"
            )
        if parts.path.rstrip("/").rsplit("/", 1)[-1] in ("probe", "current", "sample"):
            raise ValueError(
                f"'{v}' names a request; give the agent's base URL, like http://10.0.4.20:5000"
            )
        return v.strip().rstrip("/")


class MtconnectTag(Base):
    """One data item of an agent, by its id (or its name when that is unique)."""

    name: str = Field(min_length=1)
    agent: str = ""  # an agent name; empty: the service's first agent
    data_item: str = Field(
        min_length=1, validation_alias=AliasChoices("data_item", "dataItemId", "data_item_id")
    )
    # what of the observation: its value (a CONDITION's level), or a CONDITION's native code or text
    field: Literal["value", "native_code", "message"] = "value"


class MtconnectService(ServiceBase):
    type: Literal["mtconnect"]
    agents: list[MtconnectAgent] = Field(min_length=1)
    tags: list[MtconnectTag] = Field(default_factory=list)
    mode: Literal["streaming", "polling"] = "streaming"
    count: int = Field(1000, ge=1, le=100_000)  # most observations asked for in one request
    heartbeat_ms: int = Field(10_000, ge=100, le=600_000)
    max_document_bytes: int = Field(16 << 20, ge=65_536, le=1 << 30)
    retry_max_backoff_ms: int = Field(30_000, ge=100)

    @model_validator(mode="before")
    @classmethod
    def _read_only(cls, data: Any) -> Any:
        things = data.get("things") if isinstance(data, dict) else None
        for ti, thing in enumerate(things if isinstance(things, list) else []):
            if isinstance(thing, dict) and thing.get("instructions"):
                raise ValueError(f"things[{ti}].instructions: {READ_ONLY}")
        return data

    @model_validator(mode="after")
    def _references(self) -> MtconnectService:
        check_tag_sources(self.tags, self.agents, self.things, field="agent")
        return self
