"""YAML text → Python values, built straight from the parser's events.

PyYAML first composes the whole document into nodes (each with two position marks), then
constructs values from them: for a plant-sized config (15,000 tags, 1.9 MB) that node graph
is ~90 MB at its peak, and the freed memory stays with the process. Building the values
from the event stream keeps only the values; equal strings are stored once (a device name
written 300 times, a tag named by its metric).

The values are those `yaml.load(text, Loader=CSafeLoader)` gives, aliases included (an
alias is the same object as its anchor, which the size and depth checks rely on), and so is
every error: anything this builder does not handle itself (an explicit collection tag, a
mapping as a key, an undefined or repeated anchor, a scalar its constructor refuses, a
second document) hands the text to PyYAML's own loader, which raises its usual error.
"""

from __future__ import annotations

import sys
from typing import Any

import yaml
from yaml.events import (
    AliasEvent,
    MappingEndEvent,
    MappingStartEvent,
    ScalarEvent,
    SequenceEndEvent,
    SequenceStartEvent,
    StreamEndEvent,
)
from yaml.nodes import ScalarNode

# libyaml's loader when present: a plant-sized config parses in a fraction of the time
LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

_STR = "tag:yaml.org,2002:str"
_SEQ = "tag:yaml.org,2002:seq"
_MAP = "tag:yaml.org,2002:map"
_MERGE = "tag:yaml.org,2002:merge"
_VALUE = "tag:yaml.org,2002:value"
_NO_KEY = object()
_MERGE_KEY = object()


class _Unhandled(Exception):
    """Something PyYAML's own loader should answer (with its exact error)."""


class _Mapping:
    __slots__ = ("key", "merges", "value")

    def __init__(self, value: dict[Any, Any]) -> None:
        self.value = value
        self.key: Any = _NO_KEY
        self.merges: list[dict[Any, Any]] = []


def load_yaml(text: str) -> Any:
    """The single document in `text` as Python values (yaml.YAMLError if it is not YAML)."""
    loader = LOADER(text)
    try:
        return _build(loader)
    except _Unhandled:
        pass
    finally:
        loader.dispose()
    return yaml.load(text, Loader=LOADER)


def _scalar(loader: Any, event: ScalarEvent, as_key: bool) -> Any:
    tag = event.tag
    if tag is None or tag == "!":
        tag = loader.resolve(ScalarNode, event.value, event.implicit)
    if tag == _STR or (as_key and tag == _VALUE):
        return sys.intern(event.value)
    if as_key and tag == _MERGE:
        return _MERGE_KEY
    constructor = loader.yaml_constructors.get(tag)
    if constructor is None:
        raise _Unhandled
    node = ScalarNode(tag, event.value, event.start_mark, event.end_mark, event.style)
    try:
        return constructor(loader, node)
    except Exception:  # PyYAML's loader raises the same, with its own context
        raise _Unhandled from None


def _collection_tag(event: Any, default: str) -> None:
    tag = event.tag
    if tag is not None and tag != "!" and tag != default:
        raise _Unhandled  # !!omap, !!set, a custom tag: PyYAML's own constructors


def _merged(frame: _Mapping) -> None:
    """`<<: *defaults`: the merged keys first, the mapping's own keys win."""
    if len(frame.merges) > 1:
        raise _Unhandled  # which of several sources wins is PyYAML's own (version-dependent) rule
    own = dict(frame.value)
    frame.value.clear()
    frame.value.update(frame.merges[0])
    frame.value.update(own)


def _build(loader: Any) -> Any:
    loader.get_event()  # stream start
    if loader.check_event(StreamEndEvent):
        return None
    loader.get_event()  # document start
    anchors: dict[str, Any] = {}
    stack: list[Any] = []  # open lists and _Mapping frames
    root: Any = _NO_KEY
    while root is _NO_KEY:
        event = loader.get_event()
        done = stack.pop() if isinstance(event, SequenceEndEvent | MappingEndEvent) else None
        top = stack[-1] if stack else None
        as_key = isinstance(top, _Mapping) and top.key is _NO_KEY
        if done is not None:
            if isinstance(done, _Mapping):
                if done.merges:
                    _merged(done)
                done = done.value
            value, finished = done, True
        elif isinstance(event, AliasEvent):
            if event.anchor not in anchors:
                raise _Unhandled
            value, finished = anchors[event.anchor], True
        elif isinstance(event, ScalarEvent):
            value, finished = _scalar(loader, event, as_key), True
        elif isinstance(event, SequenceStartEvent | MappingStartEvent):
            if as_key:
                raise _Unhandled  # a list or mapping as a key: PyYAML says it is unhashable
            if isinstance(event, SequenceStartEvent):
                _collection_tag(event, _SEQ)
                value, frame = [], None
            else:
                _collection_tag(event, _MAP)
                value = {}
                frame = _Mapping(value)
            finished = False
        else:
            raise _Unhandled
        anchor = getattr(event, "anchor", None)
        if anchor is not None and not isinstance(event, AliasEvent):
            if anchor in anchors:
                raise _Unhandled
            anchors[anchor] = value
        if not finished:
            stack.append(value if frame is None else frame)
            continue
        if top is None:
            root = value
        elif isinstance(top, list):
            top.append(value)
        elif as_key:
            if isinstance(value, dict | list):
                raise _Unhandled  # an alias of a list or mapping as a key
            top.key = value
        elif top.key is _MERGE_KEY:
            sources = value if isinstance(value, list) else [value]
            if not all(isinstance(s, dict) for s in sources):
                raise _Unhandled
            top.merges.extend(sources)
            top.key = _NO_KEY
        else:
            top.value[top.key] = value
            top.key = _NO_KEY
    loader.get_event()  # document end
    if not loader.check_event(StreamEndEvent):
        raise _Unhandled  # a second document
    return root
