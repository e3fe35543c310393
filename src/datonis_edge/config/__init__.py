"""The configuration file: pydantic models, loading and readable errors.

A bad config is answered with one line per problem, each naming the field path
(`services[0].things[1].metrics[2].tag: ...`) and what to do; the CLI exits with status 2.

`models` holds the cloud, outbox, thing and metric models; `services` one model per adapter
type; this module the root model, loading and error formatting.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, SecretStr, ValidationError, model_validator

from .models import CloudConfig, MetricConfig, OutboxConfig, ThingConfig, _Base
from .services import (
    SERVICE_TYPES,
    HttpListenerService,
    ModbusDevice,
    ModbusTag,
    ModbusTcpService,
    MqttListenerService,
    OpcUaService,
    OpcUaTag,
    ServiceConfig,
    SignatureKey,
    SimulatorService,
)


class ConfigError(Exception):
    """The config cannot be used; `problems` holds one readable line per problem."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


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


__all__ = [
    "SERVICE_TYPES",
    "CloudConfig",
    "Config",
    "ConfigError",
    "HttpListenerService",
    "MetricConfig",
    "ModbusDevice",
    "ModbusTag",
    "ModbusTcpService",
    "MqttListenerService",
    "OpcUaService",
    "OpcUaTag",
    "OutboxConfig",
    "ServiceConfig",
    "SignatureKey",
    "SimulatorService",
    "ThingConfig",
    "dump_config_yaml",
    "format_errors",
    "load_config",
    "parse_config",
]
