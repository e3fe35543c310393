"""readings.py, the one validation of a reading: every limit on both sides of its bound, the
path each reason names, and the fast path for parsed JSON proven equal to the exact check."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import math
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from datonis_edge.adapters.http_listener import adapter as http_listener
from datonis_edge.adapters.http_listener.adapter import BadRequest, parse_events
from datonis_edge.adapters.mqtt_listener import adapter as mqtt_listener
from datonis_edge.adapters.mqtt_listener.adapter import (
    MalformedFile,
    malformed_record,
    parse_payload,
)
from datonis_edge.readings import (
    INT64_MAX,
    INT64_MIN,
    MAX_DEPTH,
    MAX_ITEMS,
    MAX_NAME_LENGTH,
    MAX_STRING_LENGTH,
    MAX_THING_KEY_LENGTH,
    MAX_TIMESTAMP_MS,
    MIN_TIMESTAMP_MS,
    InvalidReading,
    check_json_readings,
    check_reading,
    check_readings,
    readings_json,
)

NOW = 1_700_000_000_000


def ev(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"thing_key": "press-1", "timestamp": NOW, "data": {"v": 1}}
    base.update(fields)
    return {k: v for k, v in base.items() if v is not ...}


def nested(levels: int, leaf: Any = 1) -> Any:
    """`levels` arrays one inside the other around `leaf`."""
    for _ in range(levels):
        leaf = [leaf]
    return leaf


def refused(obj: Any, where: str = "event") -> str:
    with pytest.raises(InvalidReading) as info:
        check_reading(obj, NOW, where)
    reason = info.value.reason
    assert "\n" not in reason
    return reason


# ---------------------------------------------------------------------- timestamp


@pytest.mark.parametrize(
    "ts, stored",
    [
        (MIN_TIMESTAMP_MS, MIN_TIMESTAMP_MS),
        (MAX_TIMESTAMP_MS - 1, MAX_TIMESTAMP_MS - 1),
        (NOW + 0.9, NOW),  # a float is truncated to whole milliseconds
        (0.5, 0),
        (None, NOW),  # null: the time of arrival
    ],
)
def test_timestamps_within_the_range_are_accepted(ts: Any, stored: int) -> None:
    assert check_reading(ev(timestamp=ts), NOW)["timestamp"] == stored


def test_a_missing_timestamp_becomes_now() -> None:
    assert check_reading(ev(timestamp=...), NOW)["timestamp"] == NOW


@pytest.mark.parametrize(
    "ts, words",
    [
        (MIN_TIMESTAMP_MS - 1, "out of range"),
        (-5, "out of range"),
        (MAX_TIMESTAMP_MS, "out of range"),
        (1e30, "out of range"),
        (float(2**64), "out of range"),
        (2**64, "out of range"),
        (-0.0 - 1.5, "out of range"),
        (math.nan, "not a number of milliseconds"),
        (math.inf, "not a number of milliseconds"),
        (True, "not true/false"),
        ("1700000000000", "not a string"),
        ([NOW], "not an array"),
    ],
)
def test_timestamps_outside_the_range_are_refused_naming_the_field(ts: Any, words: str) -> None:
    reason = refused(ev(timestamp=ts), "events[3]")
    assert reason.startswith("events[3].timestamp: ")
    assert words in reason


# ---------------------------------------------------------------------- thing_key


def test_thing_key_length_bound() -> None:
    ok = "k" * MAX_THING_KEY_LENGTH
    assert check_reading(ev(thing_key=ok), NOW)["thing_key"] == ok
    reason = refused(ev(thing_key=ok + "k"))
    assert reason == (
        f"event.thing_key: {MAX_THING_KEY_LENGTH + 1} characters long; "
        f"at most {MAX_THING_KEY_LENGTH} are accepted"
    )


@pytest.mark.parametrize(
    "key, words",
    [
        (..., "required, a non-empty string"),
        ("", "required, a non-empty string"),
        (None, "required, a non-empty string"),
        (42, "required, a non-empty string"),
        ("press\n1", "unprintable"),
        ("press\x00", "unprintable"),
        ("plant/+/x", "MQTT topic"),
        ("line#2", "MQTT topic"),
    ],
)
def test_bad_thing_keys_are_refused(key: Any, words: str) -> None:
    reason = refused(ev(thing_key=key))
    assert reason.startswith("event.thing_key: ") and words in reason


def test_unicode_thing_keys_are_accepted() -> None:
    assert check_reading(ev(thing_key="presse-ü 東京"), NOW)["thing_key"] == "presse-ü 東京"


# ---------------------------------------------------------------------- data and names


@pytest.mark.parametrize(
    "data, words",
    [
        (..., "required, an object of metric: value"),
        (5, "not the number 5"),
        ([1], "not an array"),
        ({}, "empty"),
    ],
)
def test_data_must_be_a_non_empty_object(data: Any, words: str) -> None:
    reason = refused(ev(data=data))
    assert reason.startswith("event.data: ") and words in reason


def test_number_of_metrics_bound() -> None:
    full = {f"m{i}": i for i in range(MAX_ITEMS)}
    assert check_reading(ev(data=full), NOW)["data"] == full
    reason = refused(ev(data={**full, "one-more": 1}))
    assert reason == f"event.data: has {MAX_ITEMS + 1} metrics; at most {MAX_ITEMS} are accepted"


def test_metric_name_bounds() -> None:
    ok = "n" * MAX_NAME_LENGTH
    assert check_reading(ev(data={ok: 1}), NOW)
    assert f"at most {MAX_NAME_LENGTH} are accepted" in refused(ev(data={ok + "n": 1}))
    assert refused(ev(data={"": 1})) == "event.data: a name must not be empty"
    assert "must be a string" in refused(ev(data={7: 1}))  # from a polled adapter
    assert "lone surrogate" in refused(ev(data={"bad\ud800": 1}))
    assert check_reading(ev(data={"Kühlung ❄": 1}), NOW)


def test_other_fields_are_not_kept_and_a_waypoint_is() -> None:
    r = check_reading(ev(hash="ab" * 32, access_key="ak", waypoint=[18.5, 73.8]), NOW)
    assert r == {
        "thing_key": "press-1",
        "timestamp": NOW,
        "data": {"v": 1},
        "waypoint": [18.5, 73.8],
    }
    for bad in ([91, 0], [0, 181], [1], "here", [True, 1], [math.nan, 1]):
        assert refused(ev(waypoint=bad)).startswith("event.waypoint: must be [latitude")


# ---------------------------------------------------------------------- values


@pytest.mark.parametrize(
    "value", [INT64_MIN, INT64_MAX, 0, -1.5, 1e308, True, None, "", "x" * MAX_STRING_LENGTH]
)
def test_values_at_their_bounds_are_accepted(value: Any) -> None:
    assert check_reading(ev(data={"v": value}), NOW)["data"] == {"v": value}
    assert check_reading(ev(data={"v": [{"w": value}]}), NOW)["data"] == {"v": [{"w": value}]}


@pytest.mark.parametrize(
    "value, words",
    [
        (INT64_MAX + 1, "out of range; integers of 64 bits"),
        (INT64_MIN - 1, "out of range; integers of 64 bits"),
        (2**64 - 1, "out of range"),  # orjson reads it, the platform could not
        (10**400, "an integer of 1329 bits"),
        (math.nan, "not a number"),
        (math.inf, "not a number"),
        (-math.inf, "not a number"),
        ("x" * (MAX_STRING_LENGTH + 1), f"at most {MAX_STRING_LENGTH} are accepted"),
        ("bad\udc80", "lone surrogate"),
        (b"bytes", "a bytes is not a JSON value"),
        (dt.datetime(2024, 1, 1), "a datetime is not a JSON value"),
        ((1, 2), "a tuple is not a JSON value"),
        ({1, 2}, "a set is not a JSON value"),
    ],
)
def test_values_beyond_their_bounds_are_refused_naming_the_metric(value: Any, words: str) -> None:
    reason = refused(ev(data={"ok": 1, "temp": value}), "events[2]")
    assert reason.startswith("events[2].data.temp: "), reason
    assert words in reason


def test_the_reason_names_the_path_down_to_a_nested_fault() -> None:
    data = {"temp": {"a": [1, 2, {"deep": math.nan}]}, "odd name": {"x": [2**70]}}
    assert refused(ev(data=data), "events[7]").startswith(
        "events[7].data.temp.a[2].deep: nan is not a number"
    )
    del data["temp"]
    assert refused(ev(data=data)).startswith('event.data["odd name"].x[0]: the integer')


def test_nesting_depth_bound() -> None:
    # data is level 1: a value of MAX_DEPTH - 1 arrays reaches level MAX_DEPTH
    assert check_reading(ev(data={"temp": nested(MAX_DEPTH - 1)}), NOW)
    assert check_reading(ev(data={"temp": {"a": nested(MAX_DEPTH - 2)}}), NOW)
    reason = refused(ev(data={"temp": nested(MAX_DEPTH)}), "events[3]")
    assert reason == (
        f"events[3].data.temp: nested more than {MAX_DEPTH} levels deep; "
        f"at most {MAX_DEPTH} are accepted"
    )


def test_nesting_as_deep_as_orjson_reads_is_refused_without_recursing() -> None:
    body = b'{"thing_key":"k","data":{"temp":' + b"[" * 1020 + b"]" * 1020 + b"}}"
    obj = orjson.loads(body)  # orjson reads it; it could not write it back
    assert "nested more than" in refused(obj)
    with pytest.raises(InvalidReading, match="nested more than"):
        check_json_readings([obj], NOW)


def test_nested_entries_bound() -> None:
    assert check_reading(ev(data={"v": list(range(MAX_ITEMS))}), NOW)
    assert check_reading(ev(data={"v": {str(i): i for i in range(MAX_ITEMS)}}), NOW)
    reason = refused(ev(data={"v": list(range(MAX_ITEMS + 1))}))
    assert reason == f"event.data.v: has {MAX_ITEMS + 1} entries; at most {MAX_ITEMS} are accepted"
    assert "has 1025 entries" in refused(ev(data={"v": {str(i): i for i in range(MAX_ITEMS + 1)}}))
    assert "a name must not be empty" in refused(ev(data={"v": {"": 1}}))


def test_a_reason_stays_one_short_line_whatever_the_input() -> None:
    reason = refused(ev(thing_key="\n" + "x" * 200))
    assert "\n" not in reason and len(reason) < 200
    reason = refused(ev(data={"y" * 5000: 1}))
    assert len(reason) < 200


# ---------------------------------------------------------------------- lists


def test_check_readings_names_the_index_and_refuses_what_is_no_list() -> None:
    good = [ev(), ev(timestamp=NOW + 1)]
    assert check_readings(good, NOW) == good
    with pytest.raises(InvalidReading, match=r"^events\[1\]\.data\.v: "):
        check_readings([ev(), ev(data={"v": math.inf})], NOW)
    with pytest.raises(InvalidReading, match=r"^events: empty"):
        check_readings([], NOW)
    with pytest.raises(InvalidReading, match=r"^events: must be a list of events, not an object"):
        check_readings({"a": 1}, NOW)
    with pytest.raises(InvalidReading, match=r"^events\[0\]: must be an object"):
        check_readings([5], NOW)


def test_the_fast_path_returns_the_parsed_list_itself_completing_timestamps() -> None:
    stamped = orjson.loads(orjson.dumps([ev(), ev(data={"s": "run", "n": None, "b": True})]))
    out, payload = check_json_readings(stamped, NOW)
    assert out is stamped and payload == readings_json(stamped)
    unstamped = orjson.loads(orjson.dumps([ev(timestamp=...), ev(timestamp=...)]))
    out, payload = check_json_readings(unstamped, NOW)
    assert out is unstamped and all(r["timestamp"] == NOW for r in out)
    assert orjson.loads(payload) == out


def test_integers_beyond_53_bits_take_the_exact_path() -> None:
    for value, ok in [(2**53, True), (INT64_MAX, True), (INT64_MAX + 1, False), (2**64 - 1, False)]:
        items = orjson.loads(orjson.dumps([ev(data={"v": value})]))
        if ok:
            assert check_json_readings(items, NOW)[0] == items
        else:
            with pytest.raises(InvalidReading, match=r"events\[0\]\.data\.v: the integer"):
                check_json_readings(items, NOW)


def test_readings_json_is_the_array_the_outbox_stores() -> None:
    readings = check_readings([ev(), ev(data={"s": "Kühlung ❄", "v": [1, {"a": None}]})], NOW)
    assert orjson.loads(readings_json(readings)) == readings
    with pytest.raises(InvalidReading, match="cannot be stored as JSON"):
        readings_json([{"data": {"v": 2**64}}])  # had it not been checked


# ---------------------------------------------------------------------- the fast path = the exact check

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63) - 10, max_value=2**64 - 1)
    | st.sampled_from([INT64_MAX, INT64_MAX + 1, INT64_MIN, 2**64 - 1, 9.3e18, -9.3e18])
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
    | st.sampled_from(["x" * MAX_STRING_LENGTH, "x" * (MAX_STRING_LENGTH + 1), ""])
)
names = st.text(max_size=8) | st.sampled_from(["n" * MAX_NAME_LENGTH, "n" * 257, ""])
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(names, inner, max_size=4),
    max_leaves=20,
)
thing_keys = st.sampled_from(["press-1", "m2", "presse-ü", "k" * MAX_THING_KEY_LENGTH])
stamps = st.integers(min_value=MIN_TIMESTAMP_MS, max_value=MAX_TIMESTAMP_MS - 1)
valid_events = st.fixed_dictionaries(
    {
        "thing_key": thing_keys,
        "data": st.dictionaries(st.text(min_size=1, max_size=8), json_scalars, min_size=1)
        | st.dictionaries(st.text(min_size=1, max_size=8), json_values, min_size=1),
    },
    optional={"timestamp": stamps},
)
any_events = st.fixed_dictionaries(
    {},
    optional={
        "thing_key": thing_keys | st.sampled_from(["", "a+b", "x" * 257, "a\nb"]) | json_values,
        "timestamp": stamps
        | st.sampled_from([-5, 1e30, 2**63, MAX_TIMESTAMP_MS, None, 1.5, True])
        | json_values,
        "data": st.dictionaries(names, json_values, max_size=5) | json_values,
        "waypoint": st.sampled_from([[1.0, 2.0], [100, 0]]),
        "extra": json_values,
    },
)


@st.composite
def mutated_events(draw: st.DrawFn) -> dict[str, Any]:
    """A valid event with one field replaced, dropped or added."""
    event = dict(draw(valid_events))
    field = draw(st.sampled_from(["thing_key", "timestamp", "data", "waypoint", "extra"]))
    if draw(st.booleans()):
        event.pop(field, None)
    else:
        event[field] = draw(any_events.map(lambda e: e.get(field)) | json_values)
    return event


event_lists = (
    st.lists(valid_events, min_size=1, max_size=6)
    | st.lists(st.builds(dict, valid_events, timestamp=stamps), min_size=1, max_size=6)
    | st.lists(valid_events | mutated_events(), min_size=1, max_size=6)
    | st.lists(any_events, max_size=4)
    | json_values
)


def _outcome(fn: Any, items: Any) -> Any:
    try:
        return ("ok", fn(items, NOW))
    except InvalidReading as exc:
        return ("refused", exc.reason)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(event_lists)
def test_the_fast_path_decides_exactly_as_the_exact_check(items: Any) -> None:
    """Whatever orjson can read: the same readings accepted, or the same reason given."""
    try:
        parsed = orjson.loads(orjson.dumps(items))
    except orjson.JSONEncodeError:
        return  # not something a body could hold
    exact = _outcome(check_readings, orjson.loads(orjson.dumps(items)))
    fast = _outcome(check_json_readings, parsed)
    if exact[0] == "ok":  # the same readings, stored as JSON that reads back as them
        assert fast[0] == "ok" and fast[1][0] == exact[1]
        assert orjson.loads(fast[1][1]) == exact[1] == orjson.loads(readings_json(exact[1]))
    else:
        assert fast == exact


# ---------------------------------------------------------------------- the http_listener's body


def body_status(body: bytes) -> tuple[int, str]:
    try:
        parse_events(body, NOW)
    except BadRequest as exc:
        return exc.status, exc.reason
    return 200, ""


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b'{"thing_key": "k", "data": {"v": 1}',  # truncated
        b'{"thing_key": "k\xff", "data": {"v": 1}}',  # not UTF-8
        b'{"thing_key": "\\ud800", "data": {"v": 1}}',  # a lone surrogate
        b'{"thing_key": "k", "data": {"v": NaN}}',
        b'{"thing_key": "k", "data": {"v": 1e400}}',
        b"",
    ],
)
def test_every_kind_of_unreadable_body_is_a_400(body: bytes) -> None:
    status, reason = body_status(body)
    assert status == 400 and reason.startswith("the body is not valid JSON")


@pytest.mark.parametrize(
    "body, words",
    [
        (b'{"thing_key": "k", "timestamp": 1e30, "data": {"v": 1}}', "event.timestamp: 1e+30"),
        (
            b'{"events": [{"thing_key": "k", "timestamp": 18446744073709551616, "data": {"v": 1}}]}',
            "events[0].timestamp",
        ),
        (
            b'{"thing_key": "k", "data": {"v": ' + b"[" * 1000 + b"]" * 1000 + b"}}",
            "event.data.v: nested",
        ),
        (
            b'{"thing_key": "k", "timestamp": -5, "data": {"v": 1}}',
            "event.timestamp: -5 is out of range",
        ),
        (b"[1, 2]", "must be a JSON object"),
        (b'"text"', "must be a JSON object"),
        (b'{"events": {"thing_key": "k"}}', "events: must be a list"),
    ],
)
def test_bodies_outside_the_limits_are_a_422_naming_the_fault(body: bytes, words: str) -> None:
    status, reason = body_status(body)
    assert status == 422 and words in reason, reason


def test_a_body_deeper_than_orjson_reads_is_a_422_too() -> None:
    for levels in (1023, 1024, 5000):  # data of that depth: orjson reads the first only
        deep = b"[" * (levels - 1) + b"]" * (levels - 1)
        body = b'{"thing_key": "k", "timestamp": 1, "data": {"v": ' + deep + b"}}"
        status, reason = body_status(body)
        assert status == 422 and "nested" in reason, reason
    assert body_status(b"[" * 2000 + b"]" * 2000)[0] == 422


def test_a_body_with_the_events_key_twice_is_refused() -> None:
    one = b'{"thing_key": "a", "timestamp": 1, "data": {"v": 1}}'
    two = b'{"thing_key": "b", "timestamp": 2, "data": {"v": 2}}'
    status, reason = body_status(b'{"events": [' + one + b'], "events": [' + two + b"]}")
    assert status == 422 and '"events" more than once' in reason
    # the text "events" elsewhere (a metric named so) is no repetition
    named = b'{"events": [{"thing_key": "a", "timestamp": 1, "data": {"events": 3}}]}'
    assert parse_events(named, NOW)[0] == [
        {"thing_key": "a", "timestamp": 1, "data": {"events": 3}}
    ]


def test_a_repeated_events_key_around_nesting_deeper_than_json_reads_is_a_422() -> None:
    deep = b"[" * 1010 + b"]" * 1010
    body = b'{"events": ' + deep + b', "events": [{"thing_key": "b", "data": {"v": 2}}]}'
    assert body_status(body)[0] == 422


def test_the_listener_stores_what_was_checked_not_the_body() -> None:
    assert not hasattr(http_listener, "_events_json")
    body = b'{"events": [{"thing_key": "a", "timestamp": 1, "data": {"v": 1}, "x": [[[]]]}]}'
    events, payload = parse_events(body, NOW)
    assert payload == readings_json(events) == b'[{"thing_key":"a","timestamp":1,"data":{"v":1}}]'


# ---------------------------------------------------------------------- the mqtt_listener's payload


def test_mqtt_payload_shapes_share_the_one_validation() -> None:
    assert parse_payload("p/oven/data", b'{"temp": 1, "timestamp": 5}', 1, NOW) == {
        "thing_key": "oven",
        "timestamp": 5,
        "data": {"temp": 1},
    }
    assert parse_payload("t", b'{"thing_key": "k", "data": {"v": 1}, "hash": "x"}', None, NOW) == {
        "thing_key": "k",
        "timestamp": NOW,
        "data": {"v": 1},
    }
    for payload, words in [
        (b'{"timestamp": 1e30, "temp": 1}', "payload.timestamp: 1e+30 is out of range"),
        (b'{"timestamp": -5, "temp": 1}', "payload.timestamp: -5 is out of range"),
        (b'{"temp": ' + b"[" * 1000 + b"]" * 1000 + b"}", "payload.data.temp: nested"),
        (b"not json", "payload is not JSON"),
        (b"[1]", "must be a JSON object"),
        (b'{"timestamp": 5}', "payload.data: empty"),
    ]:
        with pytest.raises(InvalidReading) as info:
            parse_payload("p/oven/data", payload, 1, NOW)
        assert words in info.value.reason
    with pytest.raises(InvalidReading, match="no thing_key"):
        parse_payload("t", b'{"temp": 1}', None, NOW)
    with pytest.raises(InvalidReading, match="no level 3"):
        parse_payload("p/oven/data", b'{"temp": 1}', 3, NOW)


def test_malformed_records_keep_text_or_base64_and_cut_huge_payloads() -> None:
    text = malformed_record("a/b", b'{"v": 1e30}', "why", NOW)
    assert text["payload"] == '{"v": 1e30}' and "payload_encoding" not in text
    assert text["time"] == "2023-11-14T22:13:20.000+00:00" and text["reason"] == "why"
    binary = malformed_record("a/b", b"\xff\xfe", "why", NOW)
    assert binary["payload"] == "//4=" and binary["payload_encoding"] == "base64"
    big = malformed_record("a/b", b"x" * (mqtt_listener.MALFORMED_MAX_PAYLOAD + 10), "why", NOW)
    assert len(big["payload"]) == mqtt_listener.MALFORMED_MAX_PAYLOAD
    assert big["payload_bytes"] == mqtt_listener.MALFORMED_MAX_PAYLOAD + 10


def test_malformed_lines_split_right_in_every_line_reader(tmp_path: Path) -> None:
    f = MalformedFile(tmp_path / "m.jsonl")
    odd = "a\u2028b\u2029c\x85d\ne\x1cf"  # line ends to str.splitlines() and JavaScript
    f.append([malformed_record("t", odd.encode(), odd, NOW), {"reason": "second"}])
    lines = f.path.read_text().splitlines()
    assert len(lines) == 2 and json.loads(lines[0])["payload"] == odd


def test_the_malformed_file_rotates_keeping_one_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(mqtt_listener, "MALFORMED_MAX_BYTES", 1000)
    f = MalformedFile(tmp_path / "malformed" / "line.jsonl")
    record = {"topic": "t", "payload": "", "reason": "r"}
    record["payload"] = "p" * (250 - len(orjson.dumps(record)) - 1)  # lines of 250 bytes
    for i in range(10):
        f.append([{**record, "reason": str(i)}])
    current = (tmp_path / "malformed" / "line.jsonl").read_text().splitlines()
    old = (tmp_path / "malformed" / "line.jsonl.1").read_text().splitlines()
    # 4 lines fill 1000 bytes: 0-3 rotated away, 4-7 kept as .1, 8-9 current
    assert [json.loads(line)["reason"] for line in old] == ["4", "5", "6", "7"]
    assert [json.loads(line)["reason"] for line in current] == ["8", "9"]
    assert sorted(p.name for p in (tmp_path / "malformed").iterdir()) == [
        "line.jsonl",
        "line.jsonl.1",
    ]


# ---------------------------------------------------------------------- a bug is contained


async def _asgi_post(app: Any, body: bytes) -> tuple[int, dict[str, Any]]:
    sent: list[dict[str, Any]] = []
    chunks = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive() -> dict[str, Any]:
        return chunks.pop(0)

    async def send(msg: dict[str, Any]) -> None:
        sent.append(msg)

    scope = {"type": "http", "path": "/api/v3/things/event.json", "method": "POST", "headers": []}
    await app(scope, receive, send)
    return sent[0]["status"], orjson.loads(sent[1]["body"])


async def test_a_failing_sink_is_a_one_line_500_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from datonis_edge.adapters.base import Rejected
    from datonis_edge.adapters.http_listener.config import HttpListenerService

    async def broken_sink(
        readings: list[dict[str, Any]], raw: bytes | None = None, checked: bool = False
    ) -> int:
        raise RuntimeError("boom")

    adapter = http_listener.HttpListenerAdapter(
        HttpListenerService(type="http_listener", name="push"), broken_sink
    )
    body = orjson.dumps(ev())
    for _ in range(3):
        status, answer = await _asgi_post(adapter.app, body)
        assert status == 500
        assert answer["reason"] == "internal error (RuntimeError); see the gateway log"
    errors = [r for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "boom" in errors[0].getMessage()
    assert adapter.status.counters["internal_errors"] == 3

    async def full_sink(
        readings: list[dict[str, Any]], raw: bytes | None = None, checked: bool = False
    ) -> int:
        raise Rejected("the outbox is full")

    adapter.sink = full_sink
    status, answer = await _asgi_post(adapter.app, body)
    assert status == 503 and answer["reason"] == "the outbox is full"


class _Client:
    def __init__(self) -> None:
        self.acked: list[int] = []

    def ack(self, mid: int, qos: int) -> None:
        self.acked.append(mid)


def _message(mid: int, payload: bytes, topic: bytes = b"plant/oven/data") -> Any:
    import paho.mqtt.client as mqtt

    msg = mqtt.MQTTMessage(mid=mid, topic=topic)
    msg.payload, msg.qos = payload, 1
    return msg


async def test_a_message_whose_storing_fails_is_set_aside_and_the_rest_stored(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from datonis_edge.adapters.mqtt_listener.config import MqttListenerService

    stored: list[dict[str, Any]] = []

    async def picky_sink(
        readings: list[dict[str, Any]], raw: bytes | None = None, checked: bool = False
    ) -> int:
        if any(r["data"].get("poison") for r in readings):
            raise TypeError("cannot store this one")
        stored.extend(readings)
        return len(readings)

    config = MqttListenerService(
        type="mqtt_listener", name="line/1", topics=["plant/+/data"], thing_key_topic_level=1
    )
    adapter = mqtt_listener.MqttListenerAdapter(config, picky_sink, workdir=tmp_path)
    client = _Client()
    batch = [
        _message(1, b'{"v": 1}'),
        _message(2, b'{"poison": true}'),
        _message(3, b'{"timestamp": 1e30, "v": 3}'),
        _message(4, b'{"v": 4}'),
    ]
    await adapter._store(client, batch)  # type: ignore[arg-type]
    assert client.acked == [1, 2, 3, 4]  # every one: the broker sends none of them again
    assert [r["data"]["v"] for r in stored] == [1, 4]
    assert adapter.status.counters == {"messages": 2, "malformed": 2}
    lines = (tmp_path / "malformed" / "line_1.jsonl").read_text().splitlines()
    reasons = [json.loads(line)["reason"] for line in lines]
    assert reasons == [
        "TypeError: cannot store this one",
        "payload.timestamp: 1e+30 is out of range; epoch milliseconds from 0 (1970) to before "
        "253402300800000 (year 10000) are accepted",
    ]  # in the order they came
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "line/1" in warnings[0]  # one line a minute, not one each
    # the same batch again: counted, kept, but no new warning line within the minute
    await adapter._store(client, [_message(5, b"not json")])
    assert len([r for r in caplog.records if r.levelname == "WARNING"]) == 1
    assert adapter.status.counters["malformed"] == 3


async def test_a_malformed_message_that_cannot_be_kept_is_still_acked_and_said_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from datonis_edge.adapters.mqtt_listener.config import MqttListenerService

    async def sink(
        readings: list[dict[str, Any]], raw: bytes | None = None, checked: bool = False
    ) -> int:
        return len(readings)

    (tmp_path / "malformed").write_text("a file where the directory should be")
    config = MqttListenerService(type="mqtt_listener", name="m", thing_key_topic_level=1)
    adapter = mqtt_listener.MqttListenerAdapter(config, sink, workdir=tmp_path)
    client = _Client()
    await adapter._store(client, [_message(1, b"nope"), _message(2, b'{"v": 2}')])  # type: ignore[arg-type]
    await adapter._store(client, [_message(3, b"nope")])  # type: ignore[arg-type]
    assert client.acked == [1, 2, 3]
    assert adapter.status.counters == {"messages": 1, "malformed": 2}
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "cannot keep malformed messages" in errors[0]


async def test_batches_stored_meanwhile_are_acked_in_order_and_only_once_stored(
    tmp_path: Path,
) -> None:
    """The listener stores a batch while the one before waits for its commit; a later batch
    whose commit comes first waits for the earlier one's PUBACK."""
    from datonis_edge.adapters.mqtt_listener.config import MqttListenerService

    commits: dict[int, asyncio.Future[None]] = {}

    async def slow_sink(
        readings: list[dict[str, Any]], raw: bytes | None = None, checked: bool = False
    ) -> int:
        v = readings[0]["data"]["v"]
        commits[v] = asyncio.get_running_loop().create_future()
        await commits[v]
        return len(readings)

    config = MqttListenerService(type="mqtt_listener", name="m", thing_key_topic_level=1)
    adapter = mqtt_listener.MqttListenerAdapter(config, slow_sink, workdir=tmp_path)
    client = _Client()
    first = asyncio.create_task(adapter._store(client, [_message(1, b'{"v": 1}')]))  # type: ignore[arg-type]
    second = asyncio.create_task(adapter._store(client, [_message(2, b'{"v": 2}')], first))  # type: ignore[arg-type]
    while len(commits) < 2:  # both are being stored at once
        await asyncio.sleep(0)
    commits[2].set_result(None)
    await asyncio.sleep(0.01)
    assert client.acked == []  # stored, but the message before it is not: no PUBACK yet
    commits[1].set_result(None)
    await asyncio.gather(first, second)
    assert client.acked == [1, 2]


async def test_a_bug_in_storing_a_batch_fails_the_listener_so_that_it_restarts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Batches are stored in tasks of their own; a bug in one must not be swallowed there (its
    messages would stay unacknowledged until a reconnect): run() fails with it, as before."""
    from datonis_edge.adapters.mqtt_listener.config import MqttListenerService
    from helpers import free_port

    async def sink(
        readings: list[dict[str, Any]], raw: bytes | None = None, checked: bool = False
    ) -> int:
        return len(readings)

    async def broken_store(*_args: Any) -> None:
        raise RuntimeError("a bug")

    config = MqttListenerService(
        type="mqtt_listener", name="m", port=free_port(), thing_key_topic_level=1
    )
    adapter = mqtt_listener.MqttListenerAdapter(config, sink, workdir=tmp_path)
    monkeypatch.setattr(adapter, "_store", broken_store)
    adapter._inbox.put_nowait(_message(1, b'{"v": 1}'))
    with pytest.raises(RuntimeError, match="a bug"):
        await asyncio.wait_for(adapter.run(), 20)
