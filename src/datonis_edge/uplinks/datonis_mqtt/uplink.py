"""The Datonis MQTT transport: signed events, heartbeats and alerts over MQTT, each settled by
the platform's `httpAck`, and instructions down to the machines.

Login (spec §2): user = access key, password = hex HMAC-SHA256(secret, access key), clean
session, keepalive 60 s, MQTT 3.1.1; TLS on `mqtts` (system CAs or `ca_file`, optional client
certificate). Every message is the body plus `hash`, `access_key`, `aliot_protocol_version`
(§5, protocol/datonis.py). A batch is DELIVERED only when an ack on
`Altizon/Datonis/<client_id>/httpAck` carries its hash as `context` and a 2xx `http_code`;
a PUBACK says only that the broker has it. Other codes go through the same outcome table as
HTTP (uplinks/base.py `outcome_for`); `PARSE_ERROR` fails the oldest message waiting; no ack
within `ack_timeout_ms` is a RETRY. Several batches wait at once, each for its own hash.

A refused login (CONNACK 4/5) is the MQTT form of a 401: every send answers DECLINED with
`keys_suspect`, so the forwarder backs off and probes with one batch; paho keeps reconnecting
with backoff (up to `retry_max_backoff_ms`) and the first probe after the broker accepts the
keys is delivered. It is logged once here, with the fix.

Instructions: each thing's `executeInstruction` topic (QoS 2) is subscribed after every
connect; a message goes to the sink on the event loop and is acknowledged to the broker
(manual ack) only once the sink has returned.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import socket
import time
from concurrent.futures import Future as ThreadFuture
from typing import Any

import orjson
import paho.mqtt.client as mqtt

from ...model import Batch, Outcome, OutcomeKind
from ...protocol import datonis as wire
from ...protocol import lzf
from .. import mqtt_client
from ..base import InstructionSink, Uplink, alert_body, local_decline, outcome_for, redact_url
from ..options import ssl_context
from .config import DatonisMqttCloud

log = logging.getLogger(__name__)

COMPRESS_ABOVE = 1024  # bytes of the message; smaller ones go as they are (spec §7)
REFUSED = (4, 5, 134, 135)  # CONNACK: bad user name or password, not authorised (3.1.1, 5)


def derived_client_id(access_key: str) -> str:
    """Stable for this gateway on this host (topics embed it), 22 characters of [0-9a-z_]."""
    seed = f"{access_key}\n{socket.gethostname()}".encode()
    return "dtn_" + hashlib.sha256(seed).hexdigest()[:18]


class DatonisMqttUplink(Uplink):
    type = "datonis_mqtt"

    def __init__(self, cloud: DatonisMqttCloud) -> None:
        super().__init__(f"datonis {redact_url(cloud.endpoint)}")
        self.cloud = cloud
        self._access = cloud.access_key.get_secret_value()
        self._secret = cloud.secret_key.get_secret_value().encode()
        self.client_id = cloud.client_id or derived_client_id(self._access)
        self._event_topic = wire.mqtt_topic(self.client_id, "event")
        self._ack_topic = wire.mqtt_topic(self.client_id, "httpAck")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: mqtt.Client | None = None
        self._connected = asyncio.Event()
        self._login_answered = asyncio.Event()  # set by each CONNACK, taken or refused
        self._waiting: dict[str, list[asyncio.Future[Outcome]]] = {}  # hash → sends, oldest first
        self._refused: str | None = None  # why the broker refuses our login, while it does
        self._unreachable = False
        self._instructions: dict[str, str] = {}  # topic → thing_key
        self._sink: InstructionSink | None = None
        self._things: list[str] = []  # registered on every connect when register_things
        self._registering: asyncio.Future[None] | None = None
        self.status.details.update(
            broker=f"{cloud.host}:{cloud.port}", client_id=self.client_id, waiting_acks=0
        )

    # ------------------------------------------------------------------ life

    def receive_instructions(self, thing_keys: list[str], sink: InstructionSink) -> bool:
        self._sink = sink
        self._instructions = {wire.instruction_topic(self._access, k): k for k in thing_keys}
        self._things = list(dict.fromkeys([*self._things, *thing_keys]))
        return True

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        client = mqtt_client.new_client(self.client_id, self._cap_s(), manual_ack=True)
        client.username_pw_set(self._access, wire.mqtt_password(self._access, self._secret))
        if self.cloud.protocol == "mqtts":
            client.tls_set_context(ssl_context(self.cloud))
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_socket_open = wire.tcp_no_delay
        client.connect_async(self.cloud.host, self.cloud.port, keepalive=60)
        client.loop_start()
        self._client = client
        self.status.state = "connecting"

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is None:
            return
        await mqtt_client.stop(client, "datonis-mqtt-stop")

    def _cap_s(self) -> float:
        return self.cloud.retry_max_backoff_ms / 1000

    # paho calls these on its network thread; state goes to the event loop

    def _on_connect(self, client: Any, _u: Any, _f: Any, rc: Any, _p: Any = None) -> None:
        assert self._loop is not None
        if rc.is_failure:
            self._loop.call_soon_threadsafe(self._login_failed, client, rc)
            return
        # subscribed before anything is (re)sent: the broker handles a connection in order
        client.subscribe(self._ack_topic, qos=1)
        for topic in self._instructions:
            client.subscribe(topic, qos=2)
        if self._refused is not None:
            mqtt_client.quick_reconnects(client, self._cap_s())
        self._loop.call_soon_threadsafe(self._logged_in)

    def _login_failed(self, client: mqtt.Client, rc: Any) -> None:
        self._login_answered.set()
        if rc.value not in REFUSED:
            self.status.error(f"broker refused the connection: {rc}", "disconnected")
            return
        if self._refused is None:  # once: paho's delay then doubles up to the cap
            mqtt_client.back_off(client, self._cap_s())
            log.error(
                "the Datonis broker %s:%s refused the login of access key %s… (%s); check "
                "cloud.access_key and cloud.secret_key; retrying with backoff, events stay "
                "in the outbox",
                self.cloud.host,
                self.cloud.port,
                self._access[:6],
                rc,
            )
        self._refused = (
            f"the Datonis broker refused the login ({rc}): check access_key and secret_key"
        )
        self.status.error(self._refused, "unauthorized")

    def _logged_in(self) -> None:
        self._refused = None
        self._login_answered.set()
        self._unreachable = False
        self._connected.set()
        self.status.ok("connected")
        if self.cloud.register_things and self._things:
            self._registering = asyncio.ensure_future(self._register(list(self._things)))

    async def _login(self) -> None:
        """Until the broker has taken or refused our login."""
        while self._refused is None and not self._connected.is_set():
            self._login_answered.clear()
            await self._login_answered.wait()

    def _on_disconnect(self, _c: Any, _u: Any, _f: Any, rc: Any, _p: Any = None) -> None:
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._connected.clear)
        if self._refused is None:
            self._loop.call_soon_threadsafe(
                self.status.error, f"disconnected ({rc})", "disconnected"
            )

    def _on_message(self, client: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        assert self._loop is not None
        thing_key = self._instructions.get(msg.topic)
        if thing_key is None or self._sink is None:
            client.ack(msg.mid, msg.qos)
            if msg.topic == self._ack_topic:
                self._loop.call_soon_threadsafe(self._settle, msg.payload)
            return
        done = asyncio.run_coroutine_threadsafe(self._sink(thing_key, msg.payload), self._loop)
        done.add_done_callback(lambda f: self._instruction_taken(client, msg, thing_key, f))

    def _instruction_taken(
        self, client: mqtt.Client, msg: mqtt.MQTTMessage, thing_key: str, done: ThreadFuture[None]
    ) -> None:
        if done.cancelled() or done.exception() is not None:
            # not acknowledged: the broker may offer it again; the sink logs its own trouble
            log.error(
                "an instruction for %s was not taken (%s); it is not acknowledged to the broker",
                thing_key,
                "cancelled" if done.cancelled() else done.exception(),
            )
            return
        client.ack(msg.mid, msg.qos)

    # ------------------------------------------------------------------ acks

    def _settle(self, payload: bytes) -> None:
        """An httpAck: settle every send waiting for its context (PARSE_ERROR: the oldest)."""
        try:
            ack = orjson.loads(payload)
            context = ack["context"]
            code = int(ack["http_code"])
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            log.debug("ignored an httpAck that is not one: %r", payload[:200])
            return
        if context == wire.PARSE_ERROR:
            context = next(iter(self._waiting), None)
        sends = self._waiting.get(context) if isinstance(context, str) else None
        if not sends:
            return  # a late ack of a send that timed out (it was sent again) or not ours
        detail = wire.ack_message(ack.get("http_msg"))
        outcome = outcome_for(code, payload.decode(errors="replace"), None, detail)
        for fut in sends:
            if not fut.done():
                fut.set_result(outcome)

    # ------------------------------------------------------------------ sending

    async def _request(self, topic: str, body: bytes, compress: bool = False) -> Outcome:
        """Publish one signed message (QoS 1) and wait for its httpAck."""
        if self._refused is None and not self._connected.is_set():
            with contextlib.suppress(TimeoutError):  # briefly, before calling it a retry
                await asyncio.wait_for(self._login(), self.cloud.request_timeout_ms / 1000)
        if self._refused is not None:
            return Outcome(OutcomeKind.DECLINED, 401, self._refused, keys_suspect=True)
        client = self._client
        if client is None or not self._connected.is_set():
            self._unreachable = True
            return Outcome(
                OutcomeKind.RETRY,
                None,
                f"not connected to the Datonis broker {self.cloud.host}:{self.cloud.port}",
            )
        digest, payload = wire.envelope(body, self._access, self._secret)
        if compress and self.cloud.use_compression and len(payload) > COMPRESS_ABOVE:
            topic, payload = wire.lzf_event_topic(self.client_id), lzf.encode(payload)
        assert self._loop is not None
        fut: asyncio.Future[Outcome] = self._loop.create_future()
        sends = self._waiting.setdefault(digest, [])
        sends.append(fut)
        self.status.details["waiting_acks"] = len(self._waiting)
        try:
            info = client.publish(topic, payload, qos=1)
            if info.rc != mqtt.MQTT_ERR_SUCCESS:
                return Outcome(
                    OutcomeKind.RETRY, None, f"publish failed: {mqtt.error_string(info.rc)}"
                )
            return await asyncio.wait_for(fut, self.cloud.ack_timeout_ms / 1000)
        except TimeoutError:
            return Outcome(
                OutcomeKind.RETRY,
                None,
                f"no httpAck from the platform within {self.cloud.ack_timeout_ms} ms",
            )
        finally:
            sends.remove(fut)
            if not sends and self._waiting.get(digest) is sends:
                del self._waiting[digest]
            self.status.details["waiting_acks"] = len(self._waiting)

    async def send(self, batch: Batch) -> Outcome:
        try:  # the events as the outbox stored them, with the batch's epoch and id
            body = batch.envelope()
        except (orjson.JSONEncodeError, TypeError, ValueError) as exc:
            outcome = local_decline(exc)
            self.status.error(outcome.reason)
            return outcome
        outcome = await self._request(self._event_topic, body, compress=True)
        self._record(outcome)
        return outcome

    def _record(self, outcome: Outcome) -> None:
        if outcome.kind is OutcomeKind.DELIVERED:
            self.status.ok("connected")
        elif outcome.keys_suspect:
            self.status.error(outcome.reason, "unauthorized" if self._refused else "declining")
        elif outcome.kind is OutcomeKind.DECLINED:
            self.status.error(outcome.reason, None if outcome.status is None else "connected")
        else:
            self.status.error(
                outcome.reason, "retrying" if self._connected.is_set() else "disconnected"
            )

    async def wait_reachable(self) -> None:
        """Once paho's own reconnect is logged in again (no request the platform counts)."""
        if not self._unreachable:
            await asyncio.Event().wait()
        await self._connected.wait()
        self._unreachable = False

    async def heartbeat(self, thing_keys: list[str]) -> Outcome:
        """One heartbeat per thing at QoS 0, as every Datonis SDK: sent, not acknowledged."""
        self._things = list(dict.fromkeys([*self._things, *thing_keys]))
        client = self._client
        if client is None or not self._connected.is_set() or self._refused:
            return Outcome(OutcomeKind.RETRY, None, self._refused or "not connected")
        topic = wire.mqtt_topic(self.client_id, "heartbeat")
        now = int(time.time() * 1000)
        for key in thing_keys:
            body = wire.compact({"thing_key": key, "timestamp": now})
            client.publish(topic, wire.envelope(body, self._access, self._secret)[1], qos=0)
        return Outcome(OutcomeKind.DELIVERED)

    async def alert(
        self, thing_key: str | None, level: str, message: str, extra: dict[str, Any] | None = None
    ) -> Outcome:
        body = alert_body(thing_key, ("alert_type", wire.ALERT_TYPES.get(level, 1)), message, extra)
        if isinstance(body, Outcome):
            return body
        return await self._request(wire.mqtt_topic(self.client_id, "alert"), _alert(body))

    async def instruction_ack(
        self, alert_key: str, thing_key: str, success: bool, message: str
    ) -> Outcome:
        from ...protocol.instructions import ack_body

        body = wire.compact(ack_body(alert_key, success, message, int(time.time() * 1000)))
        return await self._request(wire.mqtt_topic(self.client_id, "alert"), body)

    async def _register(self, thing_keys: list[str]) -> None:
        topic = wire.mqtt_topic(self.client_id, "register")
        bi_directional = bool(self._instructions)
        for key in thing_keys:
            body = wire.compact(
                {
                    "thing_key": key,
                    "name": key,
                    "description": "",
                    "bi_directional": bi_directional,
                    "timestamp": int(time.time() * 1000),
                }
            )
            outcome = await self._request(topic, body)
            if outcome.kind is not OutcomeKind.DELIVERED:
                log.warning("registering thing %s failed: %s", key, outcome.reason)


def _alert(flat: bytes) -> bytes:
    return b'{"alert":' + flat + b"}"  # the SDKs' alert body (spec §4.5)
