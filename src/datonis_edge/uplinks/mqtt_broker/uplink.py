"""A plain MQTT uplink: each batch published with QoS 1 to any broker, delivered on PUBACK.

The topic is a template; with `{thing_key}` in it a batch is split per thing (one message
per thing, all awaited). The payload is `{"events": [...], "epoch": e, "batch_id": id}`, the
events in it the bytes the outbox stored.
Alerts go to `alerts_topic` and heartbeats to `heartbeat_topic` the same way, delivered only
on their PUBACK. `mqtt://user:password@host:port` is accepted; the status shows `***@host`.

A lost broker is reconnected by paho's own loop, first after REACHABILITY_PROBE_S and then
every second at most (never slower than `retry_max_backoff_ms`): an attempt on a dead broker is
one refused TCP connect, and the first batch goes out within about a second of its return. A
broker that answers but refuses the CONNECT (credentials) is retried with the usual backoff,
capped by `retry_max_backoff_ms`. A drop and its recovery are logged once each, by the
forwarder (the first batch that finds no connection, the first one delivered again); only a
refused CONNECT, whose fix is here, is logged here, once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from typing import Any
from urllib.parse import unquote, urlparse

import orjson
import paho.mqtt.client as mqtt

from ...model import Batch, Outcome, OutcomeKind
from .. import mqtt_client
from ..base import Uplink, alert_body, heartbeat_body, local_decline, redact_url
from .config import MqttBrokerCloud

log = logging.getLogger(__name__)


class MqttBrokerUplink(Uplink):
    type = "mqtt_broker"

    def __init__(self, cloud: MqttBrokerCloud) -> None:
        super().__init__(f"mqtt {redact_url(cloud.endpoint)}")
        self.cloud = cloud
        url = urlparse(cloud.endpoint)
        self.host = url.hostname or "127.0.0.1"
        self.port = url.port or 1883
        self.username = cloud.username or unquote(url.username or "")
        self.password = cloud.password.get_secret_value() or unquote(url.password or "")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: mqtt.Client | None = None
        self._lock = threading.Lock()
        self._pending: dict[int, asyncio.Future[None]] = {}
        self._early: set[int] = set()
        self._abandoned: set[int] = set()
        self._connected = asyncio.Event()
        self._unreachable = False  # the last publish found no connection
        self._refused = False  # the broker refuses the CONNECT: back off, do not hammer it
        self.status.details["broker"] = f"{self.host}:{self.port}"

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        client = mqtt_client.new_client(self.cloud.client_id or "", self._cap_s())
        if self.username:
            client.username_pw_set(self.username, self.password)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.connect_async(self.host, self.port, keepalive=30)
        client.loop_start()
        self._client = client
        self.status.state = "connecting"

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is None:
            return
        await mqtt_client.stop(client, "mqtt-uplink-stop")

    def _cap_s(self) -> float:
        return self.cloud.retry_max_backoff_ms / 1000

    # paho calls these on its network thread, once per connect, refusal or drop (not per
    # failed reconnect attempt): state goes to the event loop

    def _on_connect(self, client: Any, _u: Any, _f: Any, rc: Any, _p: Any = None) -> None:
        assert self._loop is not None
        if rc.is_failure:
            if not self._refused:  # set once: paho's delay then doubles up to the cap
                self._refused = True
                mqtt_client.back_off(client, self._cap_s())
                log.warning(
                    "broker %s:%s refused the connection (%s); check the username and "
                    "password; retrying with backoff, events stay in the outbox",
                    self.host,
                    self.port,
                    rc,
                )
            self._loop.call_soon_threadsafe(
                self.status.error, f"broker refused: {rc}", "disconnected"
            )
            return
        if self._refused:
            self._refused = False
            mqtt_client.quick_reconnects(client, self._cap_s())
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

    # ------------------------------------------------------------------ publishing

    async def send(self, batch: Batch) -> Outcome:
        try:
            messages = self._batch_messages(batch)
        except (orjson.JSONEncodeError, TypeError, KeyError, ValueError) as exc:
            outcome = local_decline(exc)
            self.status.error(outcome.reason)
            return outcome
        outcome = await self._publish(messages)
        if outcome.kind is OutcomeKind.DELIVERED:
            self.status.ok("connected")
        else:
            self.status.error(
                outcome.reason, "retrying" if self._connected.is_set() else "disconnected"
            )
        return outcome

    def _batch_messages(self, batch: Batch) -> list[tuple[str, bytes]]:
        """The batch as stored; split per thing (its events parsed for their thing_key) when
        the topic names one, each message holding its events as orjson writes them (the bytes
        the outbox stored: it stores what orjson writes), one serialization per thing."""
        template = self.cloud.topic
        if "{thing_key}" not in template:
            return [(template, batch.envelope())]
        groups: dict[str, list[dict[str, Any]]] = {}
        for ev in batch.events:
            key = ev["thing_key"]
            group = groups.get(key)
            if group is None:
                groups[key] = [ev]
            else:
                group.append(ev)
        if len(groups) == 1:
            return [(template.replace("{thing_key}", str(key)), batch.envelope()) for key in groups]
        return [
            (template.replace("{thing_key}", str(key)), batch.envelope(orjson.dumps(events)))
            for key, events in groups.items()
        ]

    async def heartbeat(self, thing_keys: list[str]) -> Outcome:
        return await self._publish([(self.cloud.heartbeat_topic, heartbeat_body(thing_keys))])

    async def alert(
        self, thing_key: str | None, level: str, message: str, extra: dict[str, Any] | None = None
    ) -> Outcome:
        body = alert_body(thing_key, ("level", level), message, extra)
        if isinstance(body, Outcome):
            return body
        return await self._publish([(self.cloud.alerts_topic, body)])

    async def _publish(self, messages: list[tuple[str, bytes]]) -> Outcome:
        """Publish every message; DELIVERED once the broker acknowledged all of them."""
        timeout = self.cloud.request_timeout_ms / 1000
        if self._client is None or not self._connected.is_set():
            # wait briefly for a connection before calling it a retry
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._connected.wait(), timeout)
        client = self._client
        if client is None or not self._connected.is_set():
            self._unreachable = True
            return Outcome(
                OutcomeKind.RETRY, None, f"not connected to broker {self.host}:{self.port}"
            )
        assert self._loop is not None
        futures = []
        mids: list[int] = []
        for topic, payload in messages:
            fut: asyncio.Future[None] = self._loop.create_future()
            # never hold our lock while calling paho: its thread holds its own lock while it
            # calls on_publish, which takes ours
            info = client.publish(topic, payload, qos=self.cloud.qos)
            if info.rc != mqtt.MQTT_ERR_SUCCESS:
                self._abandon(mids)
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
            await asyncio.wait_for(asyncio.gather(*futures), timeout)
        except TimeoutError:
            self._abandon(mids)
            return Outcome(
                OutcomeKind.RETRY, None, f"no PUBACK within {self.cloud.request_timeout_ms} ms"
            )
        except asyncio.CancelledError:
            self._abandon(mids)
            raise
        return Outcome(OutcomeKind.DELIVERED)

    async def wait_reachable(self) -> None:
        """Once paho's own reconnect (see the module's docstring) is connected again."""
        if not self._unreachable:
            await asyncio.Event().wait()
        await self._connected.wait()
        self._unreachable = False

    def _abandon(self, mids: list[int]) -> None:
        with self._lock:
            for mid in mids:
                if self._pending.pop(mid, None) is not None:
                    self._abandoned.add(mid)


def _set_done(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)
