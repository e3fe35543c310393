"""Models of the cloud, outbox, thing and metric sections, and their shared base."""

from __future__ import annotations

from typing import Any, Literal
from urllib.parse import urlparse

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    model_validator,
)

from ..expressions import Expression, ExpressionError


class _Base(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=False)

    @model_validator(mode="before")
    @classmethod
    def _hyphen_aliases(cls, data: Any) -> Any:
        # The Datonis gateway writes keys like `scan-interval-ms`; accept them as aliases.
        if isinstance(data, dict):
            return {(k.replace("-", "_") if isinstance(k, str) else k): v for k, v in data.items()}
        return data


class CloudConfig(_Base):
    protocol: Literal["https", "http", "mqtt"] = "https"
    endpoint: str = "https://api.datonis.io"
    access_key: SecretStr = SecretStr("")
    secret_key: SecretStr = SecretStr("")
    bulk_max_elements: int = Field(25, ge=1, le=10_000)
    bulk_transmit_interval_ms: int = Field(1000, ge=0, le=3_600_000)
    heartbeat_interval_ms: int = Field(120_000, ge=0)
    request_timeout_ms: int = Field(10_000, ge=100, le=600_000)
    retry_max_backoff_ms: int = Field(60_000, ge=100)
    # batches on the wire at once; 1 keeps strict arrival order at the platform
    max_inflight_batches: int = Field(4, ge=1, le=64)
    # plain MQTT uplink (protocol: mqtt); endpoint is mqtt://host:port
    topic: str = "datonis-edge/{thing_key}/events"
    alerts_topic: str = Field("datonis-edge/alerts", min_length=1)
    heartbeat_topic: str = Field("datonis-edge/heartbeat", min_length=1)
    qos: Literal[0, 1] = 1
    client_id: str = ""
    username: str = ""
    password: SecretStr = SecretStr("")

    @model_validator(mode="after")
    def _check_protocol(self) -> CloudConfig:
        url = urlparse(self.endpoint)
        if self.protocol in ("http", "https"):
            if url.scheme not in ("http", "https") or not url.hostname:
                raise ValueError(
                    f"endpoint: '{self.endpoint}' is not an http(s) URL; "
                    "write it like https://api.datonis.io"
                )
            for key in ("access_key", "secret_key"):
                if not getattr(self, key).get_secret_value():
                    raise ValueError(
                        f"{key}: required for the Datonis platform; copy it from the "
                        "Datonis console (Settings → Access keys) or write ${ENV_VAR}"
                    )
        else:
            if url.scheme not in ("mqtt", "tcp") or not url.hostname:
                raise ValueError(
                    f"endpoint: '{self.endpoint}' is not an MQTT URL; write it like "
                    "mqtt://broker.example.com:1883"
                )
            if "{thing_key}" not in self.topic and not self.topic:
                raise ValueError("topic: empty; use a template like plant/{thing_key}/events")
        return self


class OutboxConfig(_Base):
    max_bytes: int = Field(1 << 30, ge=65_536)
    policy: Literal["drop_oldest", "reject_new"] = "drop_oldest"


class MetricConfig(_Base):
    name: str = Field(min_length=1)
    tag: str = ""
    # a derived metric: an expression over latestValue[i] / previousValue[i] of its inputs
    # (metric names of the same thing, or adapter tags)
    expression: str = ""
    inputs: list[str] = Field(default_factory=list)
    scale: float | None = None
    offset: float | None = None
    diff: bool = False
    deadband: float = Field(0.0, ge=0)

    @model_validator(mode="after")
    def _source(self) -> MetricConfig:
        if bool(self.tag) == bool(self.expression):
            raise ValueError("tag: give a metric either a tag or an expression (with inputs)")
        if self.expression:
            if not self.inputs:
                raise ValueError(
                    "inputs: an expression needs inputs (what latestValue[0], [1], ... are)"
                )
            try:
                Expression(self.expression, len(self.inputs))
            except ExpressionError as exc:
                raise ValueError(f"expression: {exc}") from None
        return self


class ThingConfig(_Base):
    thing_key: str = Field(min_length=1)
    thing_name: str = ""
    metrics: list[MetricConfig] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique_metrics(self) -> ThingConfig:
        seen: dict[str, int] = {}
        for i, m in enumerate(self.metrics):
            if m.name in seen:
                raise ValueError(
                    f"metrics[{i}].name: '{m.name}' is already the name of metrics[{seen[m.name]}]; "
                    "metric names must be unique within a thing"
                )
            seen[m.name] = i
        return self

    def tags_used(self) -> set[str]:
        """Adapter tags this thing reads: metric tags and expression inputs that are not metrics."""
        names = {m.name for m in self.metrics}
        used = {m.tag for m in self.metrics if m.tag}
        used |= {i for m in self.metrics for i in m.inputs if i not in names}
        return used
