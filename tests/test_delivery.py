"""Readings travel from real adapters to the platform simulator (which checks every HMAC)."""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path

import httpx
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from helpers import base_config, simulator_service, wait_until


def test_simulator_readings_reach_platform_with_valid_signatures(platform, gateway_factory) -> None:
    config = base_config(platform)
    config["services"] = [
        simulator_service(
            "press-1",
            {"name": "strokes", "tag": "counter(0, 1)"},
            {"name": "temperature", "tag": "sine(20, 5, 60s)"},
            {"name": "pressure_bar", "tag": "const(2000)", "scale": 0.01},
            name="press-line",
        )
    ]
    gw = gateway_factory(config).start()
    events = wait_until(
        lambda: (e := platform.events()) and len(e) >= 10 and e, what="10 events at the platform"
    )
    assert platform.stats()["by_status"].get("401", 0) == 0  # every request's signature was valid
    strokes = [e["data"]["strokes"] for e in events if e["thing_key"] == "press-1"]
    assert strokes[:10] == list(range(10))  # in order, none missing
    assert all(e["data"]["pressure_bar"] == 20.0 for e in events)
    assert all(15 <= e["data"]["temperature"] <= 25 for e in events)
    assert {e["epoch"] for e in events} == {gw.status()["epoch"]}


def test_the_signature_is_hmac_sha256_of_the_exact_body(platform) -> None:
    body = json.dumps({"thing_key": "t", "data": {"v": 1}}).encode()
    good = hmac.new(platform.secret_key.encode(), body, hashlib.sha256).hexdigest()
    url = f"{platform.url}/api/v3/things/event.json"
    ok = httpx.post(
        url, content=body, headers={"X-Access-Key": platform.access_key, "X-Dtn-Signature": good}
    )
    bad = httpx.post(
        url,
        content=body + b" ",
        headers={"X-Access-Key": platform.access_key, "X-Dtn-Signature": good},
    )
    assert ok.status_code == 200
    assert bad.status_code == 401


def test_mqtt_listener_readings_reach_platform(platform, mosquitto, gateway_factory) -> None:
    config = base_config(platform)
    config["services"] = [
        {
            "name": "line-mqtt",
            "type": "mqtt_listener",
            "host": "127.0.0.1",
            "port": mosquitto.port,
            "topics": ["plant/+/data"],
            "thing_key_topic_level": 1,
            "things": [
                {
                    "thing_key": "oven-7",
                    "metrics": [{"name": "temperature", "tag": "temp", "scale": 0.1}],
                }
            ],
        }
    ]
    gw = gateway_factory(config).start()
    wait_until(
        lambda: gw.status()["services"][0]["state"] == "connected", what="mqtt_listener connected"
    )
    pub = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2)
    pub.connect("127.0.0.1", mosquitto.port)
    pub.loop_start()
    try:
        for i in range(20):
            pub.publish(
                "plant/oven-7/data",
                json.dumps({"temp": 1000 + i, "timestamp": 1_700_000_000_000 + i}),
                qos=1,
            ).wait_for_publish(5)
        pub.publish(
            "plant/mixer-2/data", json.dumps({"data": {"rpm": 1200}}), qos=1
        ).wait_for_publish(5)
        pub.publish("plant/mixer-2/data", b"not json", qos=1).wait_for_publish(5)
    finally:
        pub.loop_stop()
        pub.disconnect()
    events = wait_until(lambda: (e := platform.events()) and len(e) >= 21 and e, what="21 events")
    oven = sorted(e["data"]["temperature"] for e in events if e["thing_key"] == "oven-7")
    assert oven == [round((1000 + i) * 0.1, 9) for i in range(20)]
    assert [e["data"] for e in events if e["thing_key"] == "mixer-2"] == [{"rpm": 1200}]
    svc = wait_until(
        lambda: (s := gw.status()["services"][0])["counters"].get("malformed") and s,
        what="malformed counted",
    )
    assert "not JSON" in svc["last_error"]
    assert platform.stats()["by_status"].get("401", 0) == 0


def test_mqtt_uplink_delivers_to_a_broker_on_puback(
    mosquitto, gateway_factory, tmp_path: Path
) -> None:
    received: list[dict] = []
    sub = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2)
    sub.on_message = lambda _c, _u, msg: received.append(
        {"topic": msg.topic, **json.loads(msg.payload)}
    )
    sub.connect("127.0.0.1", mosquitto.port)
    sub.subscribe("edge/#", qos=1)
    sub.loop_start()
    try:
        config = base_config(
            None,
            protocol="mqtt_broker",
            endpoint=f"mqtt://127.0.0.1:{mosquitto.port}",
            topic="edge/{thing_key}/events",
        )
        config["services"] = [
            {"name": "push", "type": "http_listener", "host": "127.0.0.1", "port": (lp := _port())}
        ]
        gw = gateway_factory(config).start()
        events = [
            {"thing_key": f"t{i % 3}", "timestamp": 1000 + i, "data": {"n": i}} for i in range(30)
        ]
        r = httpx.post(f"http://127.0.0.1:{lp}/api/v3/things/event.json", json={"events": events})
        assert r.status_code == 200
        wait_until(
            lambda: sum(len(m["events"]) for m in received) >= 30, what="30 events at the broker"
        )
        assert {m["topic"] for m in received} == {
            "edge/t0/events",
            "edge/t1/events",
            "edge/t2/events",
        }
        got = sorted(e["data"]["n"] for m in received for e in m["events"])
        assert got == list(range(30))
        wait_until(lambda: gw.status()["counters"]["delivered"] == 30, what="30 counted delivered")
    finally:
        sub.loop_stop()
        sub.disconnect()


def _port() -> int:
    from helpers import free_port

    return free_port()


def test_csv_replay_and_heartbeats(platform, gateway_factory, tmp_path: Path) -> None:
    csv_file = tmp_path / "shift.csv"
    csv_file.write_text("time,speed,state\n0,10.5,run\n1,11,run\n2,0,stop\n")
    config = base_config(platform, heartbeat_interval_ms=200)
    config["services"] = [
        {
            "name": "replay",
            "type": "simulator",
            "scan_interval_ms": 50,
            "things": [
                {
                    "thing_key": "line-2",
                    "metrics": [
                        {"name": "speed", "tag": f"csv({csv_file}, speed)"},
                        {"name": "state", "tag": f"csv({csv_file}, state)"},
                    ],
                }
            ],
        }
    ]
    gateway_factory(config).start()
    events = wait_until(lambda: (e := platform.events()) and len(e) >= 6 and e, what="6 events")
    assert [(e["data"]["speed"], e["data"]["state"]) for e in events[:6]] == [
        (10.5, "run"),
        (11.0, "run"),
        (0.0, "stop"),
        (10.5, "run"),
        (11.0, "run"),
        (0.0, "stop"),
    ]  # the rows in order, looping
    wait_until(lambda: platform.stats()["heartbeats"] >= 2, what="signed heartbeats accepted")
