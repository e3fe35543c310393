"""The plain MQTT uplink against a real mosquitto: batches, alerts and heartbeats are published
and count as delivered only on their PUBACK; the broker's credentials never show."""

from __future__ import annotations

import json
import threading
from typing import Any

import httpx
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from datonis_edge.model import Batch, Outcome, OutcomeKind
from datonis_edge.uplinks.base import Uplink
from helpers import base_config, free_port, simulator_service, wait_until
from poison import append_segments, deep, event, segment


class Subscriber:
    """Every message the broker routes under `datonis-edge/#` and `plant/#`."""

    def __init__(self, port: int) -> None:
        self.messages: list[tuple[str, Any]] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2)
        self.client.on_connect = lambda c, *_: c.subscribe([("datonis-edge/#", 1), ("plant/#", 1)])
        self.client.on_subscribe = lambda *_: self._subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert self._subscribed.wait(10), "subscriber not subscribed"

    def _on_message(self, _c: Any, _u: Any, msg: Any) -> None:
        with self._lock:
            self.messages.append((msg.topic, json.loads(msg.payload)))

    def on(self, topic: str) -> list[Any]:
        with self._lock:
            return [p for t, p in self.messages if t == topic]

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def test_mqtt_uplink_publishes_alerts_and_heartbeats_and_hides_credentials(
    mosquitto, gateway_factory, tmp_path
) -> None:
    sub = Subscriber(mosquitto.port)
    port = free_port()
    config = base_config(
        None,
        protocol="mqtt_broker",
        endpoint=f"mqtt://edge:s3cret-pw@127.0.0.1:{mosquitto.port}",
        topic="plant/{thing_key}/events",
        bulk_max_elements=1,
        heartbeat_interval_ms=300,
    )
    config["services"] = [
        {"name": "push", "type": "http_listener", "host": "127.0.0.1", "port": port},
        simulator_service("press-1", scan_interval_ms=60_000),
    ]
    try:
        first = gateway_factory(config, datadir=tmp_path / "shared", name="a").start()
        assert first.stop() == 0
        # a reading too deep to encode (kept by an old version) and one behind it
        append_segments(first.datadir, [segment(event(0, shape=deep(300))), segment(event(1))])

        # another instance takes the data directory over: a failover alert
        gw = gateway_factory(config, datadir=tmp_path / "shared", name="b").start()
        wait_until(
            lambda: any(p["events"][0]["data"] == {"seq": 1} for p in sub.on("plant/m1/events")),
            what="the reading behind the poison one published",
        )
        alerts = wait_until(
            lambda: (a := sub.on("datonis-edge/alerts")) and len(a) >= 2 and a,
            what="the failover and decline alerts on the alerts topic",
        )
        assert any("failover" in a["message"] and a["level"] == "warning" for a in alerts)
        decline = next(a for a in alerts if "declined" in a["message"])
        assert decline["level"] == "error" and "could not be encoded" in decline["message"]
        beat = wait_until(lambda: sub.on("datonis-edge/heartbeat"), what="a heartbeat")[0]
        assert beat["thing_keys"] == ["press-1"]

        url = f"http://127.0.0.1:{port}/api/v3/things/event.json"
        assert httpx.post(url, json=event(2)).status_code == 200
        wait_until(
            lambda: any(p["events"][0]["data"] == {"seq": 2} for p in sub.on("plant/m1/events")),
            what="a new reading published",
        )
        st = gw.status()
        assert st["uplinks"][0]["name"] == f"mqtt mqtt://***@127.0.0.1:{mosquitto.port}"
        assert st["uplinks"][0]["state"] == "connected"  # the credentials were used
        assert "s3cret-pw" not in json.dumps(st)
        assert gw.stop() == 0
        assert "s3cret-pw" not in first.proc.log() + gw.proc.log()
    finally:
        sub.close()


async def test_an_uplink_without_alert_or_heartbeat_channels_says_not_sent() -> None:
    class Bare(Uplink):
        async def send(self, batch: Batch) -> Outcome:
            return Outcome.delivered()

    bare = Bare("bare")
    for outcome in (await bare.alert(None, "error", "x"), await bare.heartbeat(["m1"])):
        assert outcome.kind is OutcomeKind.DECLINED and outcome.reason.startswith("not sent")
