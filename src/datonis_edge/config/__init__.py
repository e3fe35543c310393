"""The configuration file: loading, environment expansion and readable errors.

A bad config is answered with one line per problem, each naming the field path
(`services[0].things[1].metrics[2].tag: ...`) and what to do; the CLI exits with status 2.
A secret's value is never part of such a line.

A config cannot be turned against the gateway: a file over 64 MiB, values nested over 64 levels
deep, a YAML alias that contains itself, or aliases that expand to over 1,000,000 values (a
"billion laughs" of a few hundred bytes) are each refused with one line before anything walks
the values. Aliases are measured, not forbidden: `<<: *defaults` merge keys and a few shared
lists are ordinary YAML, and the expanded size is what costs time and memory. Top-level keys
that start with `x-` are ignored, as in Compose files: the place for such anchors.

`models` holds what every protocol shares (outbox, thing, metric, service and cloud bases);
each protocol's own model lives in its folder; the root model that combines them is built
from the registries in `root_config.py`, one floor up. Nothing here imports a protocol.
"""

from __future__ import annotations

import os
import re
from functools import cache
from pathlib import Path
from typing import Any, TypeVar, get_args

import yaml
from pydantic import BaseModel, SecretStr, ValidationError

from .models import Base, ConnectionLimits, ConsoleConfig, MetricConfig, OutboxConfig, ThingConfig
from .yaml_values import load_yaml


class ConfigError(Exception):
    """The config cannot be used; `problems` holds one readable line per problem."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


M = TypeVar("M", bound=BaseModel)

MAX_FILE_BYTES = 64 << 20
MAX_VALUES = 1_000_000
MAX_DEPTH = 64


def _check_shape(data: Any, source: str) -> None:
    """Refuse a document whose aliases expand past MAX_VALUES values, that nests deeper than
    MAX_DEPTH, or that contains itself; before anything walks it value by value.

    YAML loading shares one object for every alias of an anchor, so the expanded size and
    depth are computed once per distinct list or mapping (iteratively: no recursion limit).
    """
    size: dict[int, int] = {}  # id -> values in the expanded subtree
    height: dict[int, int] = {}  # id -> levels below and including it
    open_ids: set[int] = set()  # the lists and mappings being measured: the ancestors
    stack: list[tuple[Any, int, bool]] = [(data, 1, False)]
    while stack:
        node, depth, measured = stack.pop()
        key = id(node)
        if not measured and key in size:  # a second alias of an anchor measured already
            continue
        children = list(node.values() if isinstance(node, dict) else node)
        containers = [c for c in children if isinstance(c, dict | list)]
        if measured:
            open_ids.discard(key)
            size[key] = len(children) + 1 + sum(size[id(c)] - 1 for c in containers)
            height[key] = 1 + max((height[id(c)] for c in containers), default=0)
            if size[key] > MAX_VALUES:
                raise ConfigError(
                    [
                        f"{source}: its YAML aliases (*name) expand it to more than "
                        f"{MAX_VALUES:,} values; a config is far smaller, so check the "
                        "anchors (&name) and aliases"
                    ]
                )
            continue
        open_ids.add(key)
        stack.append((node, depth, True))
        for child in containers:
            ckey = id(child)
            if ckey in open_ids:
                raise ConfigError(
                    [
                        f"{source}: a YAML alias (*name) stands for a list or mapping that "
                        "contains the alias itself; a config cannot contain itself"
                    ]
                )
            if depth + height.get(ckey, 1) > MAX_DEPTH:
                raise ConfigError(
                    [
                        f"{source}: values nest more than {MAX_DEPTH} levels deep; "
                        "a config needs far fewer"
                    ]
                )
            if ckey not in size:
                stack.append((child, depth + 1, False))


_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _expand_env(node: Any, path: str, problems: list[str]) -> Any:
    """Replace ${VAR} and ${VAR:-default} in strings: secrets and ports from the environment.
    What holds no reference is returned as it is, not copied (a plant-sized config is ~10 MB
    of values)."""
    if isinstance(node, dict):
        changed = {}
        for k, v in node.items():
            new = _expand_env(v, f"{path}.{k}" if path else str(k), problems)
            if new is not v:
                changed[k] = new
        return {**node, **changed} if changed else node
    if isinstance(node, list):
        items = [_expand_env(v, f"{path}[{i}]", problems) for i, v in enumerate(node)]
        return items if any(new is not old for new, old in zip(items, node, strict=True)) else node
    if isinstance(node, str) and "${" in node:

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


@cache
def _secret_names(model: type[BaseModel]) -> frozenset[str]:
    """The names of every SecretStr field of `model` and the models inside it."""
    names: set[str] = set()
    seen: set[type[BaseModel]] = set()

    def walk(annotation: Any) -> set[type]:
        args = get_args(annotation)
        return set().union(*(walk(a) for a in args)) if args else {annotation}

    pending = [model]
    while pending:
        current = pending.pop()
        if current in seen:
            continue
        seen.add(current)
        for name, field in current.model_fields.items():
            for leaf in walk(field.annotation):
                if leaf is SecretStr:
                    names.add(name)
                elif isinstance(leaf, type) and issubclass(leaf, BaseModel):
                    pending.append(leaf)
    return frozenset(names)


def format_errors(exc: ValidationError, model: type[BaseModel]) -> list[str]:
    """One line per problem: its path, what is wrong, what to do; never a secret's value."""
    secrets = _secret_names(model)
    lines = []
    for err in exc.errors(include_url=False):
        path = _loc_to_path(tuple(err["loc"]))
        etype = err["type"]
        secret = bool(err["loc"]) and err["loc"][-1] in secrets
        if secret and etype == "string_type" and isinstance(err.get("input"), int | float):
            # refused, not coerced: YAML turns 0123, 1e3, 1_000 or yes into other "digits"
            msg = (
                "YAML read this secret as a number or true/false, which can change it; "
                f'put it in quotes, like {err["loc"][-1]}: "0123" (got ***)'
            )
        elif etype in _FRIENDLY:
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
                msg += " (got ***)" if secret else f" (got {err['input']!r})"
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
    _check_shape(data, source)
    # top-level x-... keys are the author's: a place for anchors to merge (<<: *defaults)
    data = {k: v for k, v in data.items() if not (isinstance(k, str) and k.startswith("x-"))}
    problems: list[str] = []
    data = _expand_env(data, "", problems)
    if problems:
        raise ConfigError(problems)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_errors(exc, model)) from None


def load_config(path: str | os.PathLike[str], model: type[M]) -> M:
    """Read, parse and validate a YAML file against the root `model`."""
    p = Path(path)
    try:
        with p.open("rb") as f:
            raw = f.read(MAX_FILE_BYTES + 1)  # bounded: a device or a growing file is no config
        if len(raw) > MAX_FILE_BYTES:
            raise ConfigError(
                [f"{p}: larger than {MAX_FILE_BYTES >> 20} MiB; a config file is far smaller"]
            )
        text = raw.decode("utf-8")
    except FileNotFoundError:
        raise ConfigError([f"{p}: no such file; pass the path of your edge.yaml"]) from None
    except IsADirectoryError:
        raise ConfigError([f"{p}: a directory; pass the path of your edge.yaml"]) from None
    except OSError as exc:
        raise ConfigError([f"{p}: cannot read it ({exc.strerror})"]) from None
    except UnicodeDecodeError:
        raise ConfigError([f"{p}: not UTF-8 text; save it as UTF-8"]) from None
    try:
        data = load_yaml(text)  # values straight from the parser: no node graph
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
    "ConnectionLimits",
    "ConsoleConfig",
    "MetricConfig",
    "OutboxConfig",
    "ThingConfig",
    "dump_config_yaml",
    "format_errors",
    "load_config",
    "parse_config",
]
