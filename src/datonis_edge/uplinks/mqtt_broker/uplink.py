"""A plain MQTT uplink: each batch published with QoS 1 to any broker, delivered on PUBACK.

The topic is a template; with `{thing_key}` in it a batch is split per thing (one message
per thing, all awaited). The payload is `{"events": [...], "epoch": e, "batch_id": id}`.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from typing import Any
from urllib.parse import urlparse

import orjson
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from ...model import Batch, Outcome, OutcomeKind
from ..base import Uplink
from .config import MqttBrokerCloud


class MqttBrokerUplink(Uplink):
    type = "mqtt"

    def __init__(self, cloud: MqttBrokerCloud) -> None:
        super().__init__(f"mqtt {cloud.endpoint}")
        self.cloud = cloud
        url = urlparse(cloud.endpoint)
        self.host = url.hostname or "127.0.0.1"
        self.port = url.port or 1883
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: mqtt.Client | None = None
        self._lock = threading.Lock()
        self._pending: dict[int, asyncio.Future[None]] = {}
        self._early: set[int] = set()
        self._abandoned: set[int] = set()
        self._connected = asyncio.Event()
        self.status.details["broker"] = f"{self.host}:{self.port}"

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=self.cloud.client_id or "",
            clean_session=True,
        )
        if self.cloud.username:
            client.username_pw_set(self.cloud.username, self.cloud.password.get_secret_value())
        client.max_inflight_messages_set(1000)
        client.max_queued_messages_set(0)
        client.reconnect_delay_set(min_delay=1, max_delay=30)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.connect_async(self.host, self.port, keepalive=30)
        client.loop_start()
        self._client = client
        self.status.state = "connecting"

    async def close(self) -> None:
        if self._client is not None:
            self._client.disconnect()
            self._client.loop_stop()
            self._client = None

    def _on_connect(self, _c: Any, _u: Any, _f: Any, rc: Any, _p: Any = None) -> None:
        assert self._loop is not None
        if rc.is_failure:
            self._loop.call_soon_threadsafe(
                self.status.error, f"broker refused: {rc}", "disconnected"
            )
            return
        self._loop.call_soon_threadsafe(self._connected.set)
        self._loop.call_soon_threadsafe(self.status.ok, "connected")

    def _on_disconnect(self, _c: Any, _u: Any, _f: Any, rc: Any, _p: Any = None) -> None:
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._connected.clear)
        self._loop.call_soon_threadsafe(self.status.error, f"disconnected ({rc})", "disconnected")

    def _on_publish(self, _c: Any, _u: Any, mid: int, _rc: Any, _p: Any = None) -> None:
        with self._lock:
            fut = self._pending.pop(mid, None)
            if fut is None:
                if mid in self._abandoned:  # a PUBACK after we gave up: that batch is retried
                    self._abandoned.discard(mid)
                else:
                    self._early.add(mid)
                return
        assert self._loop is not None
        self._loop.call_soon_threadsafe(_set_done, fut)

    async def send(self, batch: Batch) -> Outcome:
        client = self._client
        if client is None or not self._connected.is_set():
            # wait briefly for a connection before calling it a retry
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._connected.wait(), self.cloud.request_timeout_ms / 1000)
            if client is None or not self._connected.is_set():
                self.status.error("not connected to the broker", "disconnected")
                return Outcome(
                    OutcomeKind.RETRY, None, f"not connected to broker {self.host}:{self.port}"
                )
        groups: dict[str, list[Any]] = {}
        if "{thing_key}" in self.cloud.topic:
            for ev in batch.events:
                groups.setdefault(
                    self.cloud.topic.replace("{thing_key}", ev["thing_key"]), []
                ).append(ev)
        else:
            groups[self.cloud.topic] = batch.events
        assert self._loop is not None
        futures = []
        mids: list[int] = []
        for topic, events in groups.items():
            payload = orjson.dumps(
                {"events": events, "epoch": batch.epoch, "batch_id": batch.batch_id}
            )
            fut: asyncio.Future[None] = self._loop.create_future()
            # never hold our lock while calling paho: its thread holds its own lock while it
            # calls on_publish, which takes ours
            info = client.publish(topic, payload, qos=self.cloud.qos)
            if info.rc != mqtt.MQTT_ERR_SUCCESS:
                return Outcome(
                    OutcomeKind.RETRY, None, f"publish failed: {mqtt.error_string(info.rc)}"
                )
            with self._lock:
                if self.cloud.qos == 0 or info.mid in self._early:
                    self._early.discard(info.mid)
                    fut.set_result(None)
                else:
                    self._pending[info.mid] = fut
                    mids.append(info.mid)
            futures.append(fut)
        try:
            await asyncio.wait_for(asyncio.gather(*futures), self.cloud.request_timeout_ms / 1000)
        except TimeoutError:
            with self._lock:
                for mid in mids:
                    if self._pending.pop(mid, None) is not None:
                        self._abandoned.add(mid)
            self.status.error("no PUBACK in time", "retrying")
            return Outcome(
                OutcomeKind.RETRY, None, f"no PUBACK within {self.cloud.request_timeout_ms} ms"
            )
        self.status.ok("connected")
        return Outcome(OutcomeKind.DELIVERED)


def _set_done(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)
