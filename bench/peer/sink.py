"""The sink on the northbound broker, one process: counts distinct datapoints and duplicates in
both gateways' output, and answers ThingsBoard's session-limits RPC.

- this gateway (`cloud.protocol: mqtt_broker`): `{"events": [{"thing_key", "timestamp",
  "data": {...}}, ...], ...}` on `edge/events`;
- ThingsBoard IoT Gateway: `{"<device>": [{"ts", "values": {...}}, ...]}` on `v1/gateway/telemetry`;
- ThingsBoard asks `getSessionLimits` on `v1/devices/me/rpc/request/<id>` when it first connects
  and sends nothing before the answer on `v1/devices/me/rpc/response/<id>`: no rate limits,
  a 64 KiB payload and 100 messages in flight (ThingsBoard's transport defaults).

A datapoint is (device, ts, key); the load generator makes ts unique per device. Counts are kept
per step: a device is named `<step>-p<publisher>-d<j>`. The sink subscribes with a
persistent session (clean_session false) and reconnects every 0.1 s while its broker is down, so
what a gateway publishes right after a restart waits for it in the broker.

Every 0.1 s it writes its state (JSON) to the given file: per step `distinct`, `total`,
`first_at`, `last_at` (time.time() of the first and the latest new datapoint), and `connects`:
[connected at, first data after that] for each connection.
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from load import TS_BASE
from paho.mqtt.enums import CallbackAPIVersion

SESSION_LIMITS = {
    "maxPayloadSize": 65536,
    "maxInflightMessages": 100,
    "rateLimits": {},
    "gatewayRateLimits": {},
}


class Step:
    def __init__(self) -> None:
        self.seen: dict[tuple[str, str], bytearray] = {}  # (device, key): count by ts - TS_BASE
        self.distinct = 0
        self.total = 0
        self.first_at = 0.0
        self.last_at = 0.0

    def add(self, device: str, ts: int, keys: Any, now: float) -> None:
        at = ts - TS_BASE
        if at < 0:
            return
        for key in keys:
            counts = self.seen.get((device, key))
            if counts is None:
                counts = self.seen[(device, key)] = bytearray()
            if at >= len(counts):
                counts.extend(bytes(max(at + 1 - len(counts), 4096)))
            if counts[at] == 0:
                self.distinct += 1
                self.last_at = now
                self.first_at = self.first_at or now
            counts[at] = min(255, counts[at] + 1)
            self.total += 1


class Sink:
    def __init__(self, port: int, state: Path) -> None:
        self.port = port
        self.state = state
        self.steps: dict[str, Step] = {}
        self.connects: list[list[float]] = []
        self.lock = threading.Lock()
        self.client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id="bench-sink",
            clean_session=False,
        )
        self.client.reconnect_delay_set(0.1, 0.1)  # type: ignore[arg-type]
        self.client.max_inflight_messages_set(1000)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message

    def _on_connect(self, client: mqtt.Client, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        with self.lock:
            self.connects.append([time.time(), 0.0])
        client.subscribe(
            [("edge/events", 1), ("v1/gateway/telemetry", 1), ("v1/devices/me/rpc/request/+", 1)]
        )

    def _on_message(self, client: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        now = time.time()
        if msg.topic.startswith("v1/devices/me/rpc/request/"):
            request = json.loads(msg.payload)
            if request.get("method") == "getSessionLimits":
                request_id = msg.topic.rsplit("/", 1)[1]
                client.publish(
                    f"v1/devices/me/rpc/response/{request_id}", json.dumps(SESSION_LIMITS), qos=1
                )
            return
        body = json.loads(msg.payload)
        with self.lock:
            if self.connects and not self.connects[-1][1]:
                self.connects[-1][1] = now
            if msg.topic == "edge/events":
                for event in body["events"]:
                    self._add(event["thing_key"], event["timestamp"], event["data"], now)
            else:
                for device, records in body.items():
                    for record in records:
                        self._add(device, record["ts"], record["values"], now)

    def _add(self, device: str, ts: int, keys: Any, now: float) -> None:
        prefix = device.split("-", 1)[0]
        step = self.steps.get(prefix)
        if step is None:
            step = self.steps[prefix] = Step()
        step.add(device, int(ts), keys, now)

    def write_state(self) -> None:
        with self.lock:
            state = {
                "steps": {
                    name: {
                        "distinct": s.distinct,
                        "total": s.total,
                        "first_at": s.first_at,
                        "last_at": s.last_at,
                    }
                    for name, s in self.steps.items()
                },
                "connects": self.connects,
            }
        tmp = self.state.with_suffix(".tmp")
        tmp.write_text(json.dumps(state))
        os.replace(tmp, self.state)

    def run(self) -> None:
        self.client.connect("127.0.0.1", self.port)
        self.client.loop_start()
        while True:
            self.write_state()
            time.sleep(0.1)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Counts datapoints on the northbound broker.")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--state", type=Path, required=True)
    args = parser.parse_args()
    Sink(args.port, args.state).run()
