"""The mqtt_listener's payloads: one message's JSON to one checked reading."""

from __future__ import annotations

from typing import Any

import orjson

from ...readings import MAX_DEPTH, InvalidReading, check_json_readings, check_reading

TO_MS: dict[str, float] = {"s": 1000, "ms": 1, "us": 1 / 1000, "ns": 1 / 1_000_000}
"""What one unit of `timestamp_unit` is in milliseconds."""


def to_ms(ts: Any, unit: str) -> Any:
    """A payload's time in `unit` as epoch ms; anything but a number is left to the check."""
    if unit == "ms" or type(ts) not in (int, float):
        return ts
    if type(ts) is int and unit != "s":
        return ts // (1000 if unit == "us" else 1_000_000)  # exact, even beyond 2**53
    ms = ts * TO_MS[unit]
    return int(ms) if -1e300 < ms < 1e300 else ms  # inf/nan: the check says what is wrong


def parse_payload(
    topic: str,
    payload: bytes | bytearray,
    topic_level: int | None,
    now_ms: int,
    timestamp_key: str = "timestamp",
    timestamp_unit: str = "ms",
    data_key: str = "data",
) -> dict[str, Any]:
    """The reading in one message, checked by `readings.check_reading`; raises InvalidReading.

    The time is the payload's `timestamp_key` in `timestamp_unit` (ThingsBoard: `ts`, ms),
    never a datapoint; the values are under `data_key` (ThingsBoard: `values`), or, without
    it, every other key of the object."""
    try:
        obj = orjson.loads(payload)
    except (ValueError, RecursionError) as exc:
        if isinstance(exc, RecursionError) or "depth limit" in str(exc):
            raise InvalidReading(
                f"payload is nested too deep; at most {MAX_DEPTH} levels are accepted in data"
            ) from None
        raise InvalidReading(f"payload is not JSON ({exc})") from None
    if type(obj) is not dict:
        raise InvalidReading("payload must be a JSON object: an event, or tag: value pairs")
    thing_key: Any
    if topic_level is not None:
        levels = topic.split("/")
        if topic_level >= len(levels) or not levels[topic_level]:
            raise InvalidReading(f"topic has no level {topic_level} to take the thing_key from")
        thing_key = levels[topic_level]
    else:
        thing_key = obj.get("thing_key")
        if thing_key is None:
            raise InvalidReading("payload has no thing_key (or set thing_key_topic_level)")
    ts = to_ms(obj.get(timestamp_key), timestamp_unit)
    if data_key in obj:
        data = obj[data_key]
    else:
        data = {k: v for k, v in obj.items() if k != "thing_key" and k != timestamp_key}
    try:
        return check_reading(
            {"thing_key": thing_key, "timestamp": ts, "data": data}, now_ms, where="payload"
        )
    except InvalidReading as exc:
        if timestamp_key == "timestamp" and timestamp_unit == "ms":
            raise
        if not exc.reason.startswith("payload.timestamp:"):
            raise
        # name the key the producer sent, and the unit it was read in
        why = exc.reason.removeprefix("payload.timestamp:")
        raise InvalidReading(
            f"payload.{timestamp_key} (in {timestamp_unit}, as epoch ms):{why}"
        ) from None


def parse_plain(
    messages: list[Any],
    topic_level: int | None,
    now_ms: int,
    timestamp_key: str = "timestamp",
    timestamp_unit: str = "ms",
    data_key: str = "data",
) -> tuple[list[dict[str, Any]], bytes] | None:
    """The readings of a batch of messages (`.topic`, `.payload`) and their JSON bytes, when
    every one is plainly valid: checked on the whole batch at once by
    `readings.check_json_readings`. None: look at each one (`parse_payload` names the fault)."""
    if data_key in (timestamp_key, "thing_key") or timestamp_key == "thing_key":
        return None  # odd keys: parse_payload's exact reading
    readings: list[dict[str, Any]] = []
    thing_keys: dict[str, str] = {}
    loads = orjson.loads
    try:
        for msg in messages:
            obj = loads(msg.payload)
            if type(obj) is not dict:
                return None
            key = obj.pop("thing_key", None)
            if topic_level is not None:
                key = thing_keys.get(msg.topic)
                if key is None:
                    levels = msg.topic.split("/")
                    if topic_level >= len(levels) or not levels[topic_level]:
                        return None
                    key = thing_keys[msg.topic] = levels[topic_level]
            ts = obj.pop(timestamp_key, None)
            data = obj.get(data_key, obj)
            if ts is None:
                readings.append({"thing_key": key, "data": data})
            else:
                ts = to_ms(ts, timestamp_unit)
                readings.append({"thing_key": key, "timestamp": ts, "data": data})
        return check_json_readings(readings, now_ms, "payload")
    except (ValueError, RecursionError):  # InvalidReading is a ValueError
        return None
