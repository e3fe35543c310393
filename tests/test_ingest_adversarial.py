"""The four findings of the adversarial pass (issue 8), each against a real gateway process with
both listeners, the platform simulator and mosquitto: bad input gets a clear refusal, is never
stored in a form that blocks delivery, and the readings that follow it are delivered."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from helpers import wait_until
from ingest_stack import MQTT_SERVICE, IngestStack, reading

THING = "press-1"


@pytest.fixture
def stack(platform, mosquitto, gateway_factory) -> Iterator[IngestStack]:
    s = IngestStack(platform, mosquitto, gateway_factory)
    yield s
    s.close()


def deep(levels: int) -> str:
    return "[" * levels + "]" * levels


def test_a_bulk_body_with_the_events_key_twice_is_refused_and_later_readings_flow(
    stack: IngestStack,
) -> None:
    one, two = json.dumps(reading(THING, 1)), json.dumps(reading(THING, 2))
    r = stack.post(f'{{"events": [{one}], "events": [{two}]}}'.encode())
    assert r.status_code == 422
    assert (
        r.json()["reason"] == 'the body has the key "events" more than once; send one "events" list'
    )
    r = stack.post({"events": [reading(THING, s) for s in range(10, 20)]})
    assert r.status_code == 200 and r.json()["accepted"] == 10
    stack.wait_delivered(set(range(10, 20)))
    st = stack.wait_drained()
    assert st["counters"]["declined"] == 0
    assert stack.seqs_delivered() == set(range(10, 20))  # nothing of the refused body


@pytest.mark.parametrize("levels", [40, 254, 300, 1023])
def test_deep_nesting_is_refused_over_http_and_set_aside_over_mqtt(
    stack: IngestStack, levels: int
) -> None:
    """orjson reads 1024 levels and writes 254: anything over 32 is refused at the edge."""
    event = json.dumps(reading(THING, "deep")).replace('"seq": "deep"', f'"seq": {deep(levels)}')
    r = stack.post(event.encode())
    assert r.status_code == 422
    assert r.json()["reason"] in (
        "event.data.seq: nested more than 32 levels deep; at most 32 are accepted",
        "the body is nested too deep; at most 32 levels are accepted in data",
    )
    stack.publish(THING, f'{{"timestamp": 1700000000000, "temp": {deep(levels)}}}'.encode())
    for seq in range(5):
        stack.publish(THING, {"seq": seq})
    assert stack.post({"events": [reading(THING, s) for s in range(5, 10)]}).status_code == 200
    stack.wait_delivered(set(range(10)))
    wait_until(lambda: stack.malformed_count() == 1, what="the deep message counted malformed")
    [record] = stack.malformed_records()
    assert record["topic"] == f"plant/{THING}/data" and "nested" in record["reason"]
    st = stack.wait_drained()
    assert st["counters"]["declined"] == 0


def test_an_mqtt_timestamp_of_1e30_is_acked_set_aside_and_later_messages_flow(
    stack: IngestStack,
) -> None:
    stack.publish(THING, b'{"timestamp": 1e30, "temp": 21.5}')
    for seq in range(20):
        stack.publish(THING, {"seq": seq, "timestamp": 1_700_000_000_000 + seq})
    stack.wait_delivered(set(range(20)))
    wait_until(lambda: stack.malformed_count() == 1, what="malformed counted")
    svc = stack.service(MQTT_SERVICE)
    assert svc["counters"]["messages"] == 20
    assert svc["state"] == "connected"
    assert "payload.timestamp: 1e+30 is out of range" in svc["last_error"]
    [record] = stack.malformed_records()
    assert record["payload"] == '{"timestamp": 1e30, "temp": 21.5}'
    assert record["topic"] == f"plant/{THING}/data"
    assert record["reason"].startswith("payload.timestamp: 1e+30 is out of range")
    assert "time" in record
    # acknowledged: after a restart the broker (persistent session) sends nothing of it again
    stack.gw.stop()
    stack.gw.start()
    stack.publish(THING, {"seq": "after restart"})
    stack.wait_delivered({"after restart"})
    assert stack.malformed_count() == 0  # the new process saw no redelivery
    assert len(stack.malformed_records()) == 1


@pytest.mark.parametrize(
    "body, words",
    [
        ('{"thing_key": "m", "timestamp": 1e30, "data": {"v": 1}}', "event.timestamp: 1e+30"),
        (
            '{"events": [{"thing_key": "m", "timestamp": 18446744073709551616, "data": {"v": 1}}]}',
            "events[0].timestamp: 1.8446744073709552e+19 is out of range",
        ),
        (
            '{"events": [{"thing_key": "m", "timestamp": 18446744073709551615, "data": {"v": 1}}]}',
            "events[0].timestamp: 18446744073709551615 is out of range",
        ),
        ('{"thing_key": "m", "data": {"v": ' + deep(300) + "}}", "event.data.v: nested"),
        # 1024 levels in all: as deep as orjson reads
        ('{"thing_key": "m", "data": {"v": ' + deep(1021) + "}}", "event.data.v: nested"),
        ('{"thing_key": "m", "data": {"v": ' + deep(2000) + "}}", "nested too deep"),
        ('{"thing_key": "m", "data": {"v": 18446744073709551615}}', "event.data.v: the integer"),
    ],
)
def test_http_answers_4xx_with_the_reason_never_500(
    stack: IngestStack, body: str, words: str
) -> None:
    r = stack.post(body.encode())
    assert r.status_code == 422, r.text
    assert words in r.json()["reason"]
    assert stack.post(reading(THING, 1)).status_code == 200
    stack.wait_delivered({1})


def test_a_negative_timestamp_is_refused_the_same_way_on_both_listeners(
    stack: IngestStack,
) -> None:
    r = stack.post({"thing_key": THING, "timestamp": -5, "data": {"temp": 1}})
    assert r.status_code == 422
    http_reason = r.json()["reason"]
    assert http_reason.startswith("event.timestamp: -5 is out of range")
    stack.publish(THING, {"timestamp": -5, "temp": 1})
    stack.publish(THING, {"seq": 1})
    stack.wait_delivered({1})
    wait_until(lambda: stack.malformed_count() == 1, what="malformed counted")
    [record] = stack.malformed_records()
    assert record["reason"].removeprefix("payload.") == http_reason.removeprefix("event.")
    assert not [e for e in stack.platform.events() if e["timestamp"] < 0]
