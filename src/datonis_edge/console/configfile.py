"""The configuration file as the console edits it: secrets masked for display (a mask left in
place keeps the stored value), a problem's field path found at its line, the previous version
kept in DIR/config/history/ when a new one is saved."""

from __future__ import annotations

import contextlib
import difflib
import os
import re
import time
from pathlib import Path
from typing import Any

import yaml

from ..config import ConfigError, _secret_names
from ..config.yaml_values import load_yaml
from ..root_config import Config, parse_config
from ..store.durable import write_durably

MASK = "********"
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: ~10x faster on big files
KEEP_VERSIONS = 50
_PATH_PART = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def _compose(text: str) -> yaml.Node | None:
    try:
        return yaml.compose(text, Loader=_LOADER)
    except yaml.YAMLError:
        return None


def _secret_spans(text: str) -> list[tuple[list[Any], int, int]]:
    """(path, start, end) of every scalar value under a secret key (access_key, secret_key ...)."""
    secrets = _secret_names(Config)
    root = _compose(text)
    out: list[tuple[list[Any], int, int]] = []
    stack: list[tuple[yaml.Node, list[Any]]] = [(root, [])] if root is not None else []
    while stack:
        node, path = stack.pop()
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                here = [*path, key.value]
                if key.value in secrets and isinstance(value, yaml.ScalarNode) and value.value:
                    out.append((here, value.start_mark.index, value.end_mark.index))
                else:
                    stack.append((value, here))
        elif isinstance(node, yaml.SequenceNode):
            stack.extend((item, [*path, i]) for i, item in enumerate(node.value))
    return sorted(out, key=lambda s: s[1])


def _splice(text: str, spans: list[tuple[int, int, str]]) -> str:
    for start, end, new in sorted(spans, reverse=True):
        text = text[:start] + new + text[end:]
    return text


def mask_secrets(text: str) -> str:
    """`text` with every secret's value written as the mask."""
    return _splice(text, [(s, e, f'"{MASK}"') for _, s, e in _secret_spans(text)])


def unmask(new: str, stored: str) -> str:
    """`new` with every secret still written as the mask given its stored value (same path)."""
    old = {tuple(p): stored[s:e] for p, s, e in _secret_spans(stored)}
    spans = []
    for path, start, end in _secret_spans(new):
        if new[start:end].strip("'\"") == MASK and tuple(path) in old:
            spans.append((start, end, old[tuple(path)]))
    return _splice(new, spans)


def line_of(text: str, problem: str) -> int | None:
    """The 1-based line of the field a problem ("services[0].things[1].name: ...") names, or
    of a YAML syntax error ("... at line 7, column 3 ..."); None if not found."""
    m = re.search(r"at line (\d+)", problem)
    if m:
        return int(m.group(1))
    node = _compose(text)
    if node is None:
        return None
    line = node.start_mark.line + 1
    for name, index in _PATH_PART.findall(problem.partition(": ")[0]):
        if index and isinstance(node, yaml.SequenceNode) and int(index) < len(node.value):
            node = node.value[int(index)]
        elif name and isinstance(node, yaml.MappingNode):
            match = [(k, v) for k, v in node.value if k.value == name]
            if not match:
                break
            node = match[0][1]
            line = match[0][0].start_mark.line + 1
            continue
        else:
            break
        line = node.start_mark.line + 1
    return line


def validate(text: str) -> Config:
    """The edited text as a Config, or ConfigError (YAML syntax errors name line and column)."""
    try:
        data = load_yaml(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "somewhere"
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError([f"YAML syntax error at {where}: {problem}"]) from None
    return parse_config(data, "edited configuration")


def diff(old: str, new: str) -> str:
    return "".join(
        difflib.unified_diff(
            old.splitlines(keepends=True), new.splitlines(keepends=True), "stored", "edited"
        )
    )


def save_version(path: Path, text: str) -> Path | None:
    """Write `text` as `path` (durably), the version it replaces first copied to
    config/history/edge-<UTC time>.yaml (the newest KEEP_VERSIONS kept). Returns that copy."""
    history = path.parent / "history"
    kept: Path | None = None
    with contextlib.suppress(FileNotFoundError):
        previous = path.read_bytes()
        history.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        kept = history / f"edge-{stamp}-{time.time_ns() % 1_000_000_000:09d}.yaml"
        write_durably(kept, previous, durable=True, mode=0o600)
    write_durably(path, text.encode("utf-8"), durable=True, mode=0o600)
    versions = sorted(history.glob("edge-*.yaml")) if history.is_dir() else []
    for old in versions[:-KEEP_VERSIONS]:
        with contextlib.suppress(OSError):
            os.unlink(old)
    return kept


def set_enabled(text: str, service: str, enabled: bool) -> str:
    """`text` with `enabled: <enabled>` for the service named `service` (the key replaced if
    there, else added under its `name:`); the rest of the file as it was. KeyError: no such."""
    root = _compose(text)
    services = None
    if isinstance(root, yaml.MappingNode):
        services = next((v for k, v in root.value if k.value == "services"), None)
    if isinstance(services, yaml.SequenceNode):
        for item in services.value:
            if not isinstance(item, yaml.MappingNode):
                continue
            keys = {k.value: (k, v) for k, v in item.value}
            if "name" not in keys or keys["name"][1].value != service:
                continue
            word = "true" if enabled else "false"
            if "enabled" in keys:
                value = keys["enabled"][1]
                return _splice(text, [(value.start_mark.index, value.end_mark.index, word)])
            name_key, name_value = keys["name"]
            if name_key.start_mark.line == name_value.end_mark.line:  # `name: x` on one line
                end = text.find("\n", name_value.end_mark.index)
                end = len(text) if end < 0 else end
                indent = " " * name_key.start_mark.column
                return text[:end] + f"\n{indent}enabled: {word}" + text[end:]
    raise KeyError(service)
