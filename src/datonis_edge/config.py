"""The configuration file: pydantic models, loading and readable errors.

A bad config is answered with one line per problem, each naming the field path
(`services[0].things[1].metrics[2].tag: ...`) and what to do; the CLI exits with status 2.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlparse

import yaml
from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from .expressions import Expression, ExpressionError
from .modbus_types import DATA_TYPES, ENDIANS, REGISTER_KINDS, REGISTERS_NEEDED, normalize
from .waveforms import TagError, parse_tag


class ConfigError(Exception):
    """The config cannot be used; `problems` holds one readable line per problem."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


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


class HttpListenerService(_Listener):
    type: Literal["http_listener"]
    host: str = "0.0.0.0"
    port: int = Field(8081, ge=1, le=65_535)
    max_body_bytes: int = Field(16 << 20, ge=1024)
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
        seen: set[str] = set()
        for i, tag in enumerate(self.tags):
            if tag.name in seen:
                raise ValueError(
                    f"tags[{i}].name: '{tag.name}' is used twice; tag names must be unique"
                )
            seen.add(tag.name)
            if not tag.device:
                tag.device = self.devices[0].name
            elif tag.device not in devices:
                raise ValueError(
                    f"tags[{i}].device: no device named '{tag.device}' (devices: {', '.join(devices)})"
                )
        for ti, thing in enumerate(self.things):
            for mi, metric in enumerate(thing.metrics):
                if metric.tag not in seen:
                    raise ValueError(
                        f"things[{ti}].metrics[{mi}].tag: no tag named '{metric.tag}' in this service's tags"
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


class Config(_Base):
    cloud: CloudConfig
    outbox: OutboxConfig = Field(default_factory=OutboxConfig)
    services: list[ServiceConfig] = Field(default_factory=list)

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


# libyaml's loader when present: a plant-sized config (10,000 metrics) parses in a fraction
# of the time and memory of the pure-Python one
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _expand_env(node: Any, path: str, problems: list[str]) -> Any:
    """Replace ${VAR} and ${VAR:-default} in strings: secrets and ports from the environment."""
    if isinstance(node, dict):
        return {
            k: _expand_env(v, f"{path}.{k}" if path else str(k), problems) for k, v in node.items()
        }
    if isinstance(node, list):
        return [_expand_env(v, f"{path}[{i}]", problems) for i, v in enumerate(node)]
    if isinstance(node, str):

        def sub(m: re.Match[str]) -> str:
            if m.group(1) not in os.environ and m.group(2) is not None:
                return m.group(2)  # ${NAME:-default}
            if m.group(1) not in os.environ:
                problems.append(
                    f"{path}: environment variable {m.group(1)} is not set; set it or write the value"
                )
                return ""
            return os.environ[m.group(1)]

        return _ENV_REF.sub(sub, node)
    return node


_FRIENDLY = {
    "extra_forbidden": "unknown key; check its spelling (docs/configuration.md lists the keys)",
    "missing": "required key is missing",
}


def _loc_to_path(loc: tuple[Any, ...]) -> str:
    out = ""
    parts = list(loc)
    for i, part in enumerate(parts):
        if isinstance(part, int):
            out += f"[{part}]"
            continue
        # drop the discriminator tag pydantic inserts after services[i]
        if (
            i >= 2
            and parts[i - 2] == "services"
            and isinstance(parts[i - 1], int)
            and part in SERVICE_TYPES
        ):
            continue
        if part.startswith("function-") or part in ("function-after", "function-before"):
            continue
        out += f".{part}" if out else str(part)
    return out


def format_errors(exc: ValidationError) -> list[str]:
    lines = []
    for err in exc.errors(include_url=False):
        path = _loc_to_path(tuple(err["loc"]))
        etype = err["type"]
        if etype in _FRIENDLY:
            msg = _FRIENDLY[etype]
        elif etype == "union_tag_invalid":
            got = (err.get("ctx") or {}).get("tag", "?")
            msg = f"unknown service type '{got}'; use one of {', '.join(SERVICE_TYPES)}"
            path += ".type"
        elif etype == "union_tag_not_found":
            msg = f"required key is missing; use one of {', '.join(SERVICE_TYPES)}"
            path += ".type"
        else:
            msg = err["msg"]
            msg = msg.removeprefix("Value error, ")
            if (
                "input" in err
                and etype not in ("value_error",)
                and not isinstance(err["input"], dict | list)
            ):
                msg += f" (got {err['input']!r})"
        # a model validator may name a deeper path in its message: "things[0].metrics[1].tag: ..."
        m = re.match(r"^((?:[a-z_]+(?:\[\d+\])*\.?)+): (.*)$", msg)
        if m:
            sub, msg = m.group(1), m.group(2)
            if sub.startswith("services["):
                path = sub
            else:
                path = f"{path}.{sub}" if path else sub
        lines.append(f"{path or '<top>'}: {msg}")
    return lines


def parse_config(data: Any, source: str = "config") -> Config:
    if data is None:
        raise ConfigError([f"{source}: the file is empty; it needs at least a 'cloud' section"])
    if not isinstance(data, dict):
        raise ConfigError(
            [f"{source}: the top level must be a mapping with keys cloud, outbox, services"]
        )
    problems: list[str] = []
    data = _expand_env(data, "", problems)
    if problems:
        raise ConfigError(problems)
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_errors(exc)) from None


def load_config(path: str | os.PathLike[str]) -> Config:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([f"{p}: no such file; pass the path of your edge.yaml"]) from None
    except OSError as exc:
        raise ConfigError([f"{p}: cannot read it ({exc.strerror})"]) from None
    except UnicodeDecodeError:
        raise ConfigError([f"{p}: not UTF-8 text; save it as UTF-8"]) from None
    try:
        data = yaml.load(text, Loader=_LOADER)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "somewhere"
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError([f"{p}: YAML syntax error at {where}: {problem}"]) from None
    return parse_config(data, str(p))


def dump_config_yaml(config: Config) -> str:
    """The config as YAML with secrets written out (for the data directory copy only)."""

    def plain(v: Any) -> Any:
        if isinstance(v, SecretStr):
            return v.get_secret_value()
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        if isinstance(v, list):
            return [plain(x) for x in v]
        return v

    return yaml.safe_dump(plain(config.model_dump()), sort_keys=False)
