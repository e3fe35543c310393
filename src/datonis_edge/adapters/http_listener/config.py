"""The http_listener's configuration: where it listens, how big a body may be, which keys sign."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr

from ...config.models import Base, ConnectionLimits, ListenerBase


class SignatureKey(Base):
    access_key: str = Field(min_length=1)
    secret_key: SecretStr


class HttpListenerService(ListenerBase):
    type: Literal["http_listener"]
    host: str = "0.0.0.0"
    port: int = Field(8081, ge=1, le=65_535)
    max_body_bytes: int = Field(16 << 20, ge=1024)
    limits: ConnectionLimits = Field(default_factory=ConnectionLimits)
    # When set, every request must carry X-Access-Key and a valid X-Dtn-Signature.
    keys: list[SignatureKey] = Field(default_factory=list)
