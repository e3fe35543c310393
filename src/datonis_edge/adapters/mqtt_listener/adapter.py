"""The mqtt_listener adapter: subscribes on a broker and maps JSON payloads to things.

QoS 1 with manual acknowledgement: the PUBACK goes back to the broker only after the reading
is durable in the outbox, and the session is persistent (clean_session off, a stable client
id), so a message the gateway had not stored yet is redelivered after a crash or a failover.

Payloads: an event `{"thing_key"?, "timestamp"?, "data": {...}}`, or a flat object of
`tag: value` (with an optional "timestamp"). The thing_key comes from the payload, or from a
topic level (`thing_key_topic_level`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from ..base import Adapter, ReadingSink, Rejected, reading
from .config import MqttListenerService


class PayloadError(ValueError):
    pass


def parse_payload(
    topic: str, payload: bytes, topic_level: int | None, now_ms: int
) -> dict[str, Any]:
    try:
        obj = orjson.loads(payload)
    except orjson.JSONDecodeError:
        raise PayloadError("payload is not JSON") from None
    if not isinstance(obj, dict):
        raise PayloadError("payload must be a JSON object")
    if topic_level is not None:
        levels = topic.split("/")
        if topic_level >= len(levels) or not levels[topic_level]:
            raise PayloadError(f"topic has no level {topic_level} to take the thing_key from")
        thing_key = levels[topic_level]
    else:
        thing_key = obj.get("thing_key")
        if not isinstance(thing_key, str) or not thing_key:
            raise PayloadError("payload has no thing_key (or set thing_key_topic_level)")
    ts = obj.get("timestamp", now_ms)
    if isinstance(ts, bool) or not isinstance(ts, int | float):
        raise PayloadError("timestamp must be epoch milliseconds")
    if "data" in obj:
        data = obj["data"]
        if not isinstance(data, dict):
            raise PayloadError("'data' must be an object of tag: value")
    else:
        data = {k: v for k, v in obj.items() if k not in ("thing_key", "timestamp")}
    if not data:
        raise PayloadError("payload carries no values")
    return reading(thing_key, int(ts), data)


class MqttListenerAdapter(Adapter):
    type = "mqtt_listener"

    def __init__(
        self, config: MqttListenerService, sink: ReadingSink, workdir: Path | None = None
    ) -> None:
        super().__init__(config, sink, workdir)
        self.config: MqttListenerService = config
        self._loop: asyncio.AbstractEventLoop | None = None
        self._inbox: asyncio.Queue[mqtt.MQTTMessage] = asyncio.Queue()
        self._subscribed = asyncio.Event()
        self.status.details.update(
            {"broker": f"{config.host}:{config.port}", "topics": list(config.topics)}
        )

    async def ready(self) -> None:
        await self._subscribed.wait()

    def _client(self) -> mqtt.Client:
        cfg = self.config
        client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=cfg.client_id or f"datonis-edge-{cfg.name}",
            clean_session=False,
            manual_ack=True,
        )
        if cfg.username:
            client.username_pw_set(cfg.username, cfg.password.get_secret_value())
        client.reconnect_delay_set(min_delay=1, max_delay=30)
        client.max_inflight_messages_set(1000)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        return client

    # paho callbacks run on paho's network thread: hand everything to the event loop
    def _on_connect(self, client: mqtt.Client, _u: Any, _f: Any, rc: Any, _p: Any = None) -> None:
        if rc.is_failure:
            self._call(self.status.error, f"broker refused the connection: {rc}", "disconnected")
            return
        self._call(self.status.ok, "connected")
        client.subscribe([(t, self.config.qos) for t in self.config.topics])

    def _on_subscribe(self, *_args: Any) -> None:
        self._call(self._subscribed.set)

    def _on_disconnect(self, _c: Any, _u: Any, _f: Any, rc: Any, _p: Any = None) -> None:
        self._call(
            self.status.error, f"disconnected from broker ({rc}); reconnecting", "disconnected"
        )

    def _on_message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        self._call(self._inbox.put_nowait, msg)

    def _call(self, fn: Any, *args: Any) -> None:
        if self._loop is not None:
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(fn, *args)

    async def run(self) -> None:
        self._loop = asyncio.get_running_loop()
        client = self._client()
        cfg = self.config
        self.status.state = "connecting"
        client.connect_async(cfg.host, cfg.port, keepalive=30)
        client.loop_start()
        try:
            while True:
                first = await self._inbox.get()
                batch = [first]
                while not self._inbox.empty() and len(batch) < 5000:
                    batch.append(self._inbox.get_nowait())
                await self._store(client, batch)
        finally:
            client.disconnect()
            client.loop_stop()

    async def _store(self, client: mqtt.Client, batch: list[mqtt.MQTTMessage]) -> None:
        now = int(time.time() * 1000)
        readings = []
        bad: list[mqtt.MQTTMessage] = []
        for msg in batch:
            try:
                readings.append(
                    parse_payload(msg.topic, msg.payload, self.config.thing_key_topic_level, now)
                )
            except PayloadError as exc:
                bad.append(msg)
                self.status.count("malformed")
                self.status.error(f"topic {msg.topic}: {exc}")
        while readings:
            try:
                await self.sink(readings)
                self.status.count("messages", len(readings))
                self.status.ok()
                break
            except Rejected as exc:
                # not stored: keep it unacknowledged and try again, the broker holds it meanwhile
                self.status.error(exc.reason)
                if not exc.retryable:
                    raise
                await asyncio.sleep(1)
        for msg in batch:  # stored or malformed: acknowledge
            if msg.qos > 0:
                client.ack(msg.mid, msg.qos)
