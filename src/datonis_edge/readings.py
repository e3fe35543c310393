"""The one validation of a reading: every way in (HTTP, MQTT, polled adapters) checks here.

A reading is `{"thing_key": str, "timestamp": int epoch ms, "data": {metric: value}}`. It is
checked once, at the edge, against the limits below: limits that every later part (things,
the outbox, orjson, the uplinks, the platform) is guaranteed to handle, so that a reading
that was accepted can always be stored and delivered. What fails is refused with a reason that
names the path, e.g. `events[3].data.temp: nested more than 32 levels deep; at most 32 are
accepted`.

`check_reading` returns a new dict holding only what a reading is (thing_key, timestamp, data,
and a Datonis `waypoint` when one is sent); other fields of an event (the envelope keys an
agent adds, say) are not part of a reading and are not kept. A missing timestamp becomes
`now_ms`, a float one is truncated to whole milliseconds.
"""

from __future__ import annotations

import json
from itertools import chain, repeat
from typing import Any

import orjson

MIN_TIMESTAMP_MS = 0
"""The earliest timestamp accepted: the epoch itself. A negative time is a clock or unit fault."""

MAX_TIMESTAMP_MS = 253_402_300_800_000
"""The first timestamp refused: 10000-01-01T00:00:00Z in ms. Every later part (Python's
datetime, Java's Instant, the platform's date fields) can represent anything below it, and it is
far inside int64."""

MAX_THING_KEY_LENGTH = 256
"""Longest thing_key, in characters. Datonis keys are 10 characters; a thing_key also becomes
an MQTT topic level and a label value."""

MAX_NAME_LENGTH = 256
"""Longest metric name, and longest key of an object nested in a value, in characters."""

MAX_STRING_LENGTH = 65_536
"""Longest string value, in characters: a text value, not a file."""

MAX_ITEMS = 1024
"""Most metrics in one `data` object, and most entries of an object or array nested in a value."""

MAX_DEPTH = 32
"""Deepest nesting of objects and arrays, counting `data` itself as level 1. orjson reads 1024
levels but writes only 254 (the event and the outbox's array add two): 32 leaves a wide margin."""

INT64_MIN = -(2**63)
"""Smallest integer value accepted: orjson writes integers of 64 bits at most, the platform
reads signed 64-bit numbers."""

INT64_MAX = 2**63 - 1
"""Largest integer value accepted (see INT64_MIN)."""

_INF = float("inf")
_JSON_SCALARS = {int, float, bool, str, type(None)}


class InvalidReading(ValueError):
    """A reading (or a list of them) that the gateway refuses; `reason` is one line for the
    producer, naming the path, the cause and what is accepted."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _Fault(Exception):
    """Raised deep in a check; the path is collected on the way up, so a valid reading never
    pays for building one."""

    def __init__(self, reason: str, *path: str | int, at_metric: bool = False) -> None:
        self.reason = reason
        self.path = list(path)  # innermost first: each level appends its own on the way up
        self.at_metric = at_metric  # name only the metric (a too deep path is no help)


def check_reading(obj: Any, now_ms: int, where: str = "event") -> dict[str, Any]:
    """The reading `obj` checked and completed; raises InvalidReading naming `where` + path."""
    try:
        return _check(obj, now_ms)
    except _Fault as fault:
        raise InvalidReading(_reason(where, fault)) from None


def check_readings(items: Any, now_ms: int, where: str = "events") -> list[dict[str, Any]]:
    """Each of a list of readings checked as `check_reading` does; the first fault is raised,
    named `events[i]...`. The list itself must be a non-empty JSON array."""
    if type(items) is not list:
        raise InvalidReading(f"{where}: must be a list of events, not {_kind(items)}")
    if not items:
        raise InvalidReading(f"{where}: empty; send at least one event")
    i = 0
    try:
        out = []
        for i, obj in enumerate(items):  # noqa: B007 - i names the fault below
            out.append(_check(obj, now_ms))
        return out
    except _Fault as fault:
        raise InvalidReading(_reason(f"{where}[{i}]", fault)) from None


def check_json_readings(
    items: Any, now_ms: int, where: str = "events"
) -> tuple[list[dict[str, Any]], bytes]:
    """As check_readings, for a list fresh from `orjson.loads`, with the readings serialized as
    `readings_json` does; fast when the list is plainly valid.

    orjson's output can only hold JSON types, finite floats, valid strings and integers below
    2**64, so a list of events that hold exactly thing_key, timestamp and data is proven valid
    on the whole list at once, at C speed (integers by serializing with orjson's 53-bit limit),
    and returned itself, a missing timestamp completed in place. Anything else, or anything
    close to a limit, gets the exact check."""
    shape = _plain_shape(items) if type(items) is list and items else None
    if shape is not None:
        if shape == "unstamped":
            for item in items:
                item["timestamp"] = now_ms
        try:
            return items, orjson.dumps(items, option=orjson.OPT_STRICT_INTEGER)
        except orjson.JSONEncodeError:
            pass  # an integer of more than 53 bits: the exact check says if it is too large
    readings = check_readings(items, now_ms, where)
    return readings, readings_json(readings)


def _plain_shape(items: list[Any]) -> str | None:
    """How plainly valid the items are: "stamped" if every one is a reading within the limits,
    "unstamped" if every one is but for its missing timestamp; judged on the whole list by
    type, size, min and max (each distinct thing_key and name once). None means "look closer",
    not "invalid"; so does a TypeError, which is how a non-dict item or data shows here."""
    try:
        keys: list[Any] = list(map(dict.get, items, repeat("thing_key")))
        stamps: list[Any] = list(map(dict.get, items, repeat("timestamp")))
        datas: list[Any] = list(map(dict.get, items, repeat("data")))
        # with thing_key and data present, 3 fields are those and a timestamp (unless it is
        # null: then the third could be anything), 2 are those alone
        sizes = set(map(len, items))
        stamp_types = set(map(type, stamps))
        if stamp_types == {int} and sizes == {3}:
            if min(stamps) < MIN_TIMESTAMP_MS or max(stamps) >= MAX_TIMESTAMP_MS:
                return None
            shape = "stamped"
        elif stamp_types == {type(None)} and sizes == {2}:
            shape = "unstamped"
        else:
            return None  # a mix of present and missing timestamps, or anything else
        for key in set(keys):
            if type(key) is not str or not 0 < len(key) <= MAX_THING_KEY_LENGTH:
                return None
            if not key.isprintable() or "+" in key or "#" in key:
                return None
        sizes = set(map(len, datas))
        if min(sizes) == 0 or max(sizes) > MAX_ITEMS:
            return None
        return shape if _json_values_fit(datas) else None
    except TypeError:
        return None


def readings_json(readings: list[dict[str, Any]]) -> bytes:
    """Checked readings as the JSON array the outbox stores (orjson, once). Anything that passed
    `check_reading` serializes; should orjson still refuse, that is an InvalidReading too."""
    try:
        return orjson.dumps(readings)
    except orjson.JSONEncodeError as exc:
        raise InvalidReading(f"the events cannot be stored as JSON ({exc})") from None


# ---------------------------------------------------------------------- the checks


def _check(obj: Any, now: int) -> dict[str, Any]:
    reading = _check_head(obj, now)
    _check_values(reading["data"])
    return reading


def _check_head(obj: Any, now: int) -> dict[str, Any]:
    """All of a reading but the values inside `data`: the new dict, timestamp completed."""
    if type(obj) is not dict:
        raise _Fault(f'must be an object {{"thing_key", "timestamp", "data"}}, not {_kind(obj)}')
    key = obj.get("thing_key")
    if (
        type(key) is not str
        or not 0 < len(key) <= MAX_THING_KEY_LENGTH
        or not key.isprintable()
        or "+" in key
        or "#" in key
    ):
        _check_thing_key(key)
    ts = obj.get("timestamp")
    if ts is None:
        ts = now
    elif type(ts) is not int or not MIN_TIMESTAMP_MS <= ts < MAX_TIMESTAMP_MS:
        ts = _check_timestamp(ts)
    data = obj.get("data")
    if type(data) is not dict or not data or len(data) > MAX_ITEMS:
        _check_data_object(data)
    if "waypoint" in obj:
        return {
            "thing_key": key,
            "timestamp": ts,
            "data": data,
            "waypoint": _check_waypoint(obj["waypoint"]),
        }
    return {"thing_key": key, "timestamp": ts, "data": data}


def _check_values(data: dict[Any, Any]) -> None:
    for name, value in data.items():
        if type(name) is not str or not 0 < len(name) <= MAX_NAME_LENGTH or not name.isascii():
            _check_name(name, "data")
        # the common scalars inline, the rest in _check_value
        t = type(value)
        if t is float:
            if -_INF < value < _INF:
                continue
        elif t is int:
            if INT64_MIN <= value <= INT64_MAX:
                continue
        elif t is str:
            if len(value) <= MAX_STRING_LENGTH and value.isascii():
                continue
        elif t is bool or value is None:
            continue
        try:
            _check_value(value, 2)
        except _Fault as fault:
            fault.path.append(name)
            fault.path.append("data")
            raise


def _json_values_fit(datas: list[Any]) -> bool:
    """Whether these `data` objects, fresh from orjson.loads, hold values within the limits
    (integers aside), judged on all of them at once: the names once each, the values by type.
    False means "look closer" (check_readings finds the fault, or none). dict.values raises
    TypeError for what is no dict."""
    for name in set(chain.from_iterable(datas)):
        if type(name) is not str or not 0 < len(name) <= MAX_NAME_LENGTH:
            return False
    types = set(map(type, chain.from_iterable(map(dict.values, datas))))
    if not types <= _JSON_SCALARS:
        return False  # nested objects or arrays: their depth and sizes need the full walk
    if str in types:
        values = chain.from_iterable(map(dict.values, datas))
        if max(len(v) for v in values if type(v) is str) > MAX_STRING_LENGTH:
            return False
    return True


def _check_thing_key(key: Any) -> None:
    if type(key) is not str or not key:
        raise _Fault("required, a non-empty string", "thing_key")
    if len(key) > MAX_THING_KEY_LENGTH:
        raise _Fault(
            f"{len(key)} characters long; at most {MAX_THING_KEY_LENGTH} are accepted", "thing_key"
        )
    if not key.isprintable():
        raise _Fault(
            f"{_show(key)} has a control or unprintable character; use printable characters",
            "thing_key",
        )
    if "+" in key or "#" in key:
        raise _Fault(
            f"{_show(key)} has '+' or '#', which cannot be used in an MQTT topic", "thing_key"
        )


def _check_timestamp(ts: Any) -> int:
    sent = ts
    if type(ts) is float:
        if not -_INF < ts < _INF:
            raise _Fault(f"{_show(ts)} is not a number of milliseconds", "timestamp")
        ts = int(ts)
    elif type(ts) is not int:
        raise _Fault(
            f"must be epoch milliseconds (an integer), not {_kind(ts)}; leave it out to use the "
            "time of arrival",
            "timestamp",
        )
    if not MIN_TIMESTAMP_MS <= ts < MAX_TIMESTAMP_MS:
        raise _Fault(
            f"{_show(sent)} is out of range; epoch milliseconds from {MIN_TIMESTAMP_MS} (1970) "
            f"to before {MAX_TIMESTAMP_MS} (year 10000) are accepted",
            "timestamp",
        )
    return ts


def _check_data_object(data: Any) -> None:
    if type(data) is not dict:
        raise _Fault(f"required, an object of metric: value, not {_kind(data)}", "data")
    if not data:
        raise _Fault("empty; send at least one metric: value", "data")
    raise _Fault(f"has {len(data)} metrics; at most {MAX_ITEMS} are accepted", "data")


def _check_name(name: Any, *path: str | int) -> None:
    if type(name) is not str:
        raise _Fault(f"a name must be a string, not {_kind(name)}", *path)
    if not name:
        raise _Fault("a name must not be empty", *path)
    if len(name) > MAX_NAME_LENGTH:
        raise _Fault(
            f"the name {_show(name)} is {len(name)} characters long; at most {MAX_NAME_LENGTH} "
            "are accepted",
            *path,
        )
    if not name.isascii() and not _utf8(name):
        raise _Fault(f"the name {_show(name)} is not valid Unicode (a lone surrogate)", *path)


def _check_value(value: Any, depth: int) -> None:
    """Any value inside `data`, at nesting level `depth` (data's own values are at 2)."""
    t = type(value)
    if t is bool or value is None:
        return
    if t is int:
        if not INT64_MIN <= value <= INT64_MAX:
            raise _Fault(
                f"the integer {_show(value)} is out of range; integers of 64 bits "
                f"({INT64_MIN} to {INT64_MAX}) are accepted; send a larger one as a string"
            )
        return
    if t is float:
        if not -_INF < value < _INF:
            raise _Fault(f"{value} is not a number; send null for a missing value")
        return
    if t is str:
        if len(value) > MAX_STRING_LENGTH:
            raise _Fault(
                f"a string of {len(value)} characters; at most {MAX_STRING_LENGTH} are accepted"
            )
        if not value.isascii() and not _utf8(value):
            raise _Fault("the string is not valid Unicode (a lone surrogate)")
        return
    if t is not dict and t is not list:
        raise _Fault(f"{_kind(value)} is not a JSON value; send a number, string, true/false, null")
    if depth > MAX_DEPTH:
        raise _Fault(
            f"nested more than {MAX_DEPTH} levels deep; at most {MAX_DEPTH} are accepted",
            at_metric=True,
        )
    if len(value) > MAX_ITEMS:
        raise _Fault(f"has {len(value)} entries; at most {MAX_ITEMS} are accepted")
    if t is dict:
        for name, item in value.items():
            _check_name(name)
            try:
                _check_value(item, depth + 1)
            except _Fault as fault:
                if not fault.at_metric:
                    fault.path.append(name)
                raise
    else:
        for i, item in enumerate(value):
            try:
                _check_value(item, depth + 1)
            except _Fault as fault:
                if not fault.at_metric:
                    fault.path.append(i)
                raise


def _check_waypoint(waypoint: Any) -> list[float]:
    """Datonis's optional `[latitude, longitude]` of an event."""
    if (
        type(waypoint) is list
        and len(waypoint) == 2
        and all(type(v) in (int, float) and -_INF < v < _INF for v in waypoint)
        and -90 <= waypoint[0] <= 90
        and -180 <= waypoint[1] <= 180
    ):
        return waypoint
    raise _Fault("must be [latitude, longitude] in degrees", "waypoint")


# ---------------------------------------------------------------------- reasons


def _reason(where: str, fault: _Fault) -> str:
    path = where
    for seg in reversed(fault.path):
        if isinstance(seg, int):
            path += f"[{seg}]"
        elif seg.isidentifier():
            path += f".{seg}"
        else:
            path += f"[{_show(seg)}]"
    return f"{path}: {fault.reason}"


def _show(value: Any, limit: int = 40) -> str:
    """A value as it may appear in a one-line reason: JSON, ASCII-escaped, shortened."""
    if type(value) is float and not -_INF < value < _INF:
        return str(value)
    if type(value) is int and value.bit_length() > 256:
        return f"an integer of {value.bit_length()} bits"
    text = json.dumps(value) if type(value) in (str, int, float) else repr(value)
    return text if len(text) <= limit else f"{text[: limit - 5]}…({len(text)} chars)"


def _kind(value: Any) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "true/false"}
    if value is None:
        return "null"
    if type(value) in (int, float):
        return f"the number {_show(value)}"
    return names.get(type(value), f"a {type(value).__name__}")


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
