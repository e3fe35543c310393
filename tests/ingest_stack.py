"""One gateway with both listeners (http_listener and mqtt_listener) in front of the platform
simulator and a real mosquitto: what the ingestion tests throw bad input at."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from helpers import Gateway, Mosquitto, PlatformSim, base_config, free_port, wait_until

MQTT_SERVICE = "plant-mqtt"
TOPIC = "plant/{}/data"  # the thing_key is topic level 1


class IngestStack:
    def __init__(
        self,
        platform: PlatformSim,
        mosquitto: Mosquitto,
        gateway_factory: Callable[..., Gateway],
        **cloud: Any,
    ) -> None:
        self.platform = platform
        self.http_port = free_port()
        config = base_config(platform, **cloud)
        config["services"] = [
            {"name": "push", "type": "http_listener", "host": "127.0.0.1", "port": self.http_port},
            {
                "name": MQTT_SERVICE,
                "type": "mqtt_listener",
                "host": "127.0.0.1",
                "port": mosquitto.port,
                "topics": ["plant/+/data"],
                "thing_key_topic_level": 1,
            },
        ]
        self.gw = gateway_factory(config).start()
        self.url = f"http://127.0.0.1:{self.http_port}/api/v3/things/event.json"
        self.http = httpx.Client(timeout=30)
        self.pub = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2)
        self.pub.connect("127.0.0.1", mosquitto.port)
        self.pub.loop_start()

    @property
    def datadir(self) -> Path:
        return self.gw.datadir

    def close(self) -> None:
        self.pub.loop_stop()
        self.pub.disconnect()
        self.http.close()

    def post(self, body: bytes | dict[str, Any]) -> httpx.Response:
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        return self.http.post(self.url, content=content)

    def publish(self, thing_key: str, payload: bytes | dict[str, Any]) -> None:
        """QoS 1; returns once the broker has it (the broker's PUBACK)."""
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        self.pub.publish(TOPIC.format(thing_key), data, qos=1).wait_for_publish(10)

    def service(self, name: str) -> dict[str, Any]:
        return next(s for s in self.gw.status()["services"] if s["name"] == name)

    def malformed_count(self) -> int:
        return self.service(MQTT_SERVICE)["counters"].get("malformed", 0)

    def malformed_records(self) -> list[dict[str, Any]]:
        path = self.datadir / "malformed" / f"{MQTT_SERVICE}.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines()]

    def seqs_delivered(self, thing_key: str | None = None) -> set[Any]:
        return {
            seq
            for e in self.platform.events()
            if type(seq := e["data"].get("seq")) in (int, str)
            and thing_key in (None, e["thing_key"])
        }

    def wait_delivered(self, seqs: set[Any], thing_key: str | None = None, **kw: Any) -> None:
        wait_until(
            lambda: seqs <= self.seqs_delivered(thing_key),
            what=f"readings {sorted(seqs, key=str)[:10]}... delivered",
            **kw,
        )

    def wait_drained(self, timeout: float = 30) -> dict[str, Any]:
        """Until the outbox is empty; the status then."""
        return wait_until(
            lambda: (st := self.gw.status())["outbox"]["pending"] == 0 and st,
            timeout,
            "the outbox to drain",
        )


def reading(thing_key: str, seq: Any, **data: Any) -> dict[str, Any]:
    return {"thing_key": thing_key, "timestamp": 1_700_000_000_000, "data": {"seq": seq, **data}}
