"""The configuration file: loading, environment expansion and readable errors.

A bad config is answered with one line per problem, each naming the field path
(`services[0].things[1].metrics[2].tag: ...`) and what to do; the CLI exits with status 2.

`models` holds what every protocol shares (outbox, thing, metric, service and cloud bases);
each protocol's own model lives in its folder; the root model that combines them is built
from the registries in `root_config.py`, one floor up. Nothing here imports a protocol.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, SecretStr, ValidationError

from .models import Base, MetricConfig, OutboxConfig, ThingConfig


class ConfigError(Exception):
    """The config cannot be used; `problems` holds one readable line per problem."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


# libyaml's loader when present: a plant-sized config (10,000 metrics) parses in a fraction
# of the time and memory of the pure-Python one
M = TypeVar("M", bound=BaseModel)

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
        # drop the discriminator tag pydantic inserts after services[i] and after cloud
        if (i >= 2 and parts[i - 2] == "services" and isinstance(parts[i - 1], int)) or (
            i == 1 and parts[0] == "cloud"
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
        elif etype in ("union_tag_invalid", "union_tag_not_found"):
            ctx = err.get("ctx") or {}
            key = "protocol" if path == "cloud" else "type"
            choices = ctx.get("expected_tags", "").replace("'", "")
            what = "cloud protocol" if key == "protocol" else "service type"
            msg = (
                f"unknown {what} '{ctx.get('tag', '?')}'; use one of {choices}"
                if etype == "union_tag_invalid"
                else f"required key is missing; use one of {choices}"
            )
            path += f".{key}"
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


def parse_config(data: Any, model: type[M], source: str = "config") -> M:
    """Validate `data` (a parsed YAML document) against the root `model`."""
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
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_errors(exc)) from None


def load_config(path: str | os.PathLike[str], model: type[M]) -> M:
    """Read, parse and validate a YAML file against the root `model`."""
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
    return parse_config(data, model, str(p))


def dump_config_yaml(config: BaseModel) -> str:
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
    "Base",
    "ConfigError",
    "MetricConfig",
    "OutboxConfig",
    "ThingConfig",
    "dump_config_yaml",
    "format_errors",
    "load_config",
    "parse_config",
]
