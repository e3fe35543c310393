"""The opcua configuration: endpoint, subscription or polling, security, node ids."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator

from ...config.models import Base, ServiceBase, check_tag_references

_NODE_ID = re.compile(r"^(ns=\d+;)?[isgb]=.+$")


class OpcUaTag(Base):
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


class OpcUaService(ServiceBase):
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
            raise ValueError(
                f"endpoint: '{self.endpoint}' is not an OPC UA URL; write it like opc.tcp://10.0.3.30:4840"
            )
        if self.security_mode is None:
            self.security_mode = "None" if self.security_policy == "None" else "SignAndEncrypt"
        if (self.security_policy == "None") != (self.security_mode == "None"):
            raise ValueError(
                "security_mode: with security_policy None use mode None; with Basic256Sha256 use Sign or SignAndEncrypt"
            )
        check_tag_references(self.tags, self.things)
        return self
