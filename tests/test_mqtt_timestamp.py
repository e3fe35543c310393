"""The mqtt_listener's timestamp key and unit: ThingsBoard's `ts` is the event time, never a
datapoint, in its flat form and under `values`; `timestamp_unit` converts to epoch ms."""

from __future__ import annotations

import json

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from datonis_edge.adapters.mqtt_listener.adapter import parse_payload
from datonis_edge.readings import InvalidReading
from helpers import base_config, wait_until

NOW = 1_800_000_000_000
TS = 1_700_000_000_123
TB = {"timestamp_key": "ts", "data_key": "values"}  # ThingsBoard's keys


def _parse(payload: dict | bytes, **keys: str) -> dict:
    raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return parse_payload("plant/oven/data", raw, 1, NOW, **keys)


def test_thingsboard_flat_ts_is_the_time_not_a_datapoint() -> None:
    assert _parse({"ts": TS, "temperature": 21.5, "running": True}, **TB) == {
        "thing_key": "oven",
        "timestamp": TS,
        "data": {"temperature": 21.5, "running": True},
    }


def test_thingsboard_ts_with_values_is_one_reading_at_that_time() -> None:
    assert _parse({"ts": TS, "values": {"temperature": 21.5}}, **TB) == {
        "thing_key": "oven",
        "timestamp": TS,
        "data": {"temperature": 21.5},
    }


def test_without_the_key_configured_ts_stays_a_datapoint_as_before() -> None:
    assert _parse({"ts": TS, "temperature": 21.5})["data"] == {"ts": TS, "temperature": 21.5}


def test_a_missing_time_is_the_time_of_arrival() -> None:
    assert _parse({"temperature": 21.5}, **TB)["timestamp"] == NOW


@pytest.mark.parametrize(
    ("unit", "sent", "ms"),
    [
        ("s", 1_700_000_000, 1_700_000_000_000),
        ("s", 1_700_000_000.123, 1_700_000_000_123),
        ("ms", TS, TS),
        ("us", TS * 1000 + 999, TS),
        ("ns", TS * 1_000_000 + 999_999, TS),
        ("ns", float(TS * 1_000_000), TS),
    ],
)
def test_timestamp_unit_converts_to_epoch_ms(unit: str, sent: float, ms: int) -> None:
    reading = _parse({"ts": sent, "temperature": 1}, timestamp_key="ts", timestamp_unit=unit)
    assert reading["timestamp"] == ms


@pytest.mark.parametrize(
    ("sent", "words"),
    [
        (b'{"ts": "yesterday", "v": 1}', "must be epoch milliseconds"),
        (b'{"ts": true, "v": 1}', "must be epoch milliseconds"),
        (b'{"ts": -1, "v": 1}', "out of range"),
        (b'{"ts": 1e300, "v": 1}', "out of range"),
    ],
)
def test_a_bad_time_in_seconds_is_refused_by_the_one_check(sent: bytes, words: str) -> None:
    with pytest.raises(InvalidReading) as info:
        _parse(sent, timestamp_key="ts", timestamp_unit="s")
    assert info.value.reason.startswith("payload.ts (in s, as epoch ms): ")  # the key sent
    assert words in info.value.reason


def test_thingsboard_style_messages_reach_the_platform_at_their_time(
    platform, mosquitto, gateway_factory
) -> None:
    config = base_config(platform)
    config["services"] = [
        {
            "name": "tb",
            "type": "mqtt_listener",
            "host": "127.0.0.1",
            "port": mosquitto.port,
            "topics": ["plant/+/telemetry"],
            "thing_key_topic_level": 1,
            "timestamp_key": "ts",
            "timestamp_unit": "s",
            "data_key": "values",
        }
    ]
    gw = gateway_factory(config).start()
    wait_until(lambda: gw.status()["services"][0]["state"] == "connected", what="connected")
    pub = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2)
    pub.connect("127.0.0.1", mosquitto.port)
    pub.loop_start()
    try:
        for payload in (
            {"ts": 1_700_000_000, "temperature": 21.5},
            {"ts": 1_700_000_001.5, "values": {"temperature": 22.0}},
        ):
            pub.publish("plant/oven-7/telemetry", json.dumps(payload), qos=1).wait_for_publish(5)
    finally:
        pub.loop_stop()
        pub.disconnect()
    events = wait_until(lambda: (e := platform.events()) and len(e) >= 2 and e, what="2 events")
    assert sorted((e["timestamp"], e["data"]) for e in events) == [
        (1_700_000_000_000, {"temperature": 21.5}),
        (1_700_000_001_500, {"temperature": 22.0}),
    ]


class _Msg:
    def __init__(self, topic: str, payload: bytes) -> None:
        self.topic, self.payload = topic, payload


PAYLOADS = [
    b'{"ts": 1700000000123, "temperature": 21.5, "running": true}',
    b'{"ts": 1700000000.5, "values": {"t": 1}}',
    b'{"ts": 1700000000123, "values": {"t": 1}, "other": 2}',
    b'{"timestamp": 1700000000123, "data": {"t": 1}, "thing_key": "k"}',
    b'{"thing_key": "k", "t": 1, "s": "x"}',
    b'{"temperature": 21.5}',
    b'{"data": {"t": [1, {"a": 2}]}}',
    b'{"ts": "yesterday", "t": 1}',
    b'{"values": null}',
    b'{"t": 1e400}',
    b'{"t": 99999999999999999999}',
    b"[1, 2]",
    b"not json",
    b"{}",
]
KEYS = [
    {},
    TB,
    {"timestamp_key": "ts", "timestamp_unit": "s"},
    {"timestamp_key": "ts", "timestamp_unit": "us"},
]


@pytest.mark.parametrize("keys", KEYS)
@pytest.mark.parametrize("topic_level", [1, None])
def test_a_batch_read_at_once_is_read_as_each_message_alone(
    keys: dict[str, str], topic_level: int | None
) -> None:
    """parse_plain (the whole batch at once) gives what parse_payload gives each message, or
    None when any message needs the exact path."""
    from datonis_edge.adapters.mqtt_listener.payload import parse_plain

    read_at_once = 0
    for payload in PAYLOADS:
        msgs = [_Msg("plant/oven/data", payload), _Msg("plant/press/data", PAYLOADS[4])]
        try:
            each = [parse_payload(m.topic, m.payload, topic_level, NOW, **keys) for m in msgs]
        except InvalidReading:
            each = None
        plain = parse_plain(msgs, topic_level, NOW, **keys)
        if each is None:
            assert plain is None, payload
        elif plain is not None:  # None is allowed: the exact path then reads them
            readings, raw = plain
            assert readings == each, payload
            assert json.loads(raw) == each, payload
            read_at_once += 1
    assert read_at_once >= 2  # the usual payloads take the fast path
