"""What every protocol shares: the base model, the outbox, things and metrics, the common
keys of a service and of a listener, the tag cross-check. Imports no protocol."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    model_validator,
)

from ..things.expressions import Expression, ExpressionError
from .instructions import InstructionRule, check_instruction_targets


class Base(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=False)

    @model_validator(mode="before")
    @classmethod
    def _hyphen_aliases(cls, data: Any) -> Any:
        # The Datonis gateway writes keys like `scan-interval-ms`; accept them as aliases.
        if isinstance(data, dict):
            return {(k.replace("-", "_") if isinstance(k, str) else k): v for k, v in data.items()}
        return data


class CloudBase(Base):
    """What every uplink shares: batching, timing and retries (the forwarder reads these).
    Each transport's model (uplinks/<transport>/config.py) adds its endpoint and keys."""

    bulk_max_elements: int = Field(25, ge=1, le=10_000)
    bulk_transmit_interval_ms: int = Field(1000, ge=0, le=3_600_000)
    heartbeat_interval_ms: int = Field(120_000, ge=0)
    request_timeout_ms: int = Field(10_000, ge=100, le=600_000)
    retry_max_backoff_ms: int = Field(60_000, ge=100)
    # batches on the wire at once; 1 keeps strict arrival order at the platform
    max_inflight_batches: int = Field(4, ge=1, le=64)


class ConnectionLimits(Base):
    """What one HTTP server (the console, an http_listener) lets a client hold; the reasons
    for the defaults are in serving.py."""

    max_connections: int = Field(1000, ge=1, le=100_000)
    header_timeout_ms: int = Field(10_000, ge=100, le=600_000)
    body_timeout_ms: int = Field(30_000, ge=100, le=3_600_000)
    idle_timeout_ms: int = Field(60_000, ge=100, le=3_600_000)
    max_header_bytes: int = Field(32 << 10, ge=1024, le=1 << 20)


class ConsoleConfig(Base):
    """The console's server and its security (docs/console.md). `--http-port` / `--http-host`
    (or their environment variables) win over `port` / `host`."""

    host: str | None = None
    port: int | None = Field(None, ge=1, le=65_535)
    # HTTPS when both are set: PEM files, the key unencrypted
    tls_cert: str | None = None
    tls_key: str | None = None
    # /metrics needs an API token (any role) when true
    metrics_auth: bool = False
    session_hours: float = Field(12.0, gt=0, le=24 * 30)
    limits: ConnectionLimits = Field(default_factory=ConnectionLimits)

    @model_validator(mode="after")
    def _tls_pair(self) -> ConsoleConfig:
        if bool(self.tls_cert) != bool(self.tls_key):
            missing = "tls_key" if self.tls_cert else "tls_cert"
            raise ValueError(
                f"{missing}: HTTPS needs both tls_cert and tls_key (PEM files); give both, or neither for HTTP"
            )
        return self


class OutboxConfig(Base):
    max_bytes: int = Field(1 << 30, ge=65_536)
    policy: Literal["drop_oldest", "reject_new"] = "drop_oldest"


@dataclass(slots=True)
class MetricRecord:
    """A validated metric as the running gateway keeps it (ThingConfig turns each MetricConfig
    into one): ~0.1 kB where a pydantic model takes ~0.6 kB, which counts with 15,000 metrics."""

    name: str
    tag: str
    expression: str
    inputs: tuple[str, ...]
    scale: float | None
    offset: float | None
    diff: bool
    deadband: float


class MetricConfig(Base):
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

    def record(self) -> MetricRecord:
        return MetricRecord(
            self.name,
            self.tag,
            self.expression,
            tuple(self.inputs),
            self.scale,
            self.offset,
            self.diff,
            self.deadband,
        )


class ThingConfig(Base):
    thing_key: str = Field(min_length=1)
    thing_name: str = ""
    # each validated as a MetricConfig and kept as a MetricRecord (the same attribute names)
    metrics: list[Annotated[MetricConfig, AfterValidator(MetricConfig.record)]] = Field(
        default_factory=list
    )
    instructions: list[InstructionRule] = Field(default_factory=list)  # config/instructions.py

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


class ServiceBase(Base):
    name: str = ""
    enabled: bool = True
    scan_interval_ms: int = Field(1000, ge=10, le=86_400_000)
    send_interval_ms: int = Field(0, ge=0)
    things: list[ThingConfig] = Field(default_factory=list)

    @model_validator(mode="after")
    def _instruction_targets(self) -> ServiceBase:
        check_instruction_targets(
            getattr(self, "type", ""), getattr(self, "tags", None), self.things
        )
        return self


class ListenerBase(ServiceBase):
    @model_validator(mode="after")
    def _no_send_interval(self) -> ListenerBase:
        if self.send_interval_ms:
            raise ValueError(
                "send_interval_ms: a listener acknowledges each reading once it is durable, so it "
                "cannot hold readings back; send_interval_ms is for polled adapters"
            )
        return self


def check_tag_references(tags: list[Any], things: list[ThingConfig]) -> set[str]:
    """Tag names unique; every metric tag and expression input names a tag or a metric."""
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


def check_tag_sources(
    tags: list[Any], sources: Sequence[Any], things: list[ThingConfig], field: str = "device"
) -> dict[str, Any]:
    """What every protocol with several devices (or agents) checks: their names unique,
    the tags' references (check_tag_references), and each tag's `field` naming one of them (a
    tag that names none is on the first). Returns the sources by name."""
    by_name = {s.name: s for s in sources}
    plural = f"{field}s"
    if len(by_name) != len(sources):
        raise ValueError(f"{plural}: two {plural} have the same name; names must be unique")
    check_tag_references(tags, things)
    for i, tag in enumerate(tags):
        name = getattr(tag, field)
        if not name:
            setattr(tag, field, sources[0].name)
        elif name not in by_name:
            raise ValueError(
                f"tags[{i}].{field}: no {field} named '{name}' ({plural}: {', '.join(by_name)})"
            )
    return by_name
