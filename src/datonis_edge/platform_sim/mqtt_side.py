"""The platform simulator's MQTT side: what telemetry.datonis.io does with the gateway's
messages (wire spec §3-§8), on a real broker that checks the gateway's login itself.

The broker (a mosquitto with a password file: user = access key, password = HMAC of it with
the secret) is started by whoever runs the simulator; the simulator logs in to it as a
client of its own and subscribes to every gateway's topics:

    Altizon/Datonis/+/event, Altizon/Datonis/lzf/+/event (ZV-framed LZF, decoded first),
    Altizon/Datonis/+/heartbeat, Altizon/Datonis/+/alert, Altizon/Datonis/+/register

Each message's `hash` is checked as the platform checks it (parse, drop the envelope keys,
re-serialise compactly in received order, HMAC with the secret of its `access_key`); events
are recorded like the HTTP side's (epoch and batch id from the body); every message is
answered on `Altizon/Datonis/<client_id>/httpAck` with `{"context": hash, "http_code": 200}`,
or with the fault switched on. Refusals carry `http_msg` as `{"errors":[{code, message}]}`
(only when the message carried `aliot_protocol_version`, as the platform does).

Control API (beside the HTTP side's, under /sim):
    POST   /sim/mqtt/faults   {"http_code": 401|422|429|500, "count": 1}  {"parse_error": true}
                              {"no_ack": true, "count": 2}   count -1 = until cleared;
                              "kinds": ["event"] (default) or any of event/alert/heartbeat/register
    DELETE /sim/mqtt/faults   clear them
    GET    /sim/mqtt          counts: messages, bad_hash, lzf, acks by code, not_acked, ...
    POST   /sim/instructions  {"thing_key": "...", "instruction": {...}, "bad_hash": false}
                              → {"alert_key": "..."}: published signed (sign_instruction), QoS 2
    GET    /sim/instructions  {"sent": [...], "acks": [...]} (acks: alerts carrying an alert_key)
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlparse

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..protocol import datonis as wire
from ..protocol import lzf
from ..protocol.instructions import sign_instruction
from .app import SimState, _json, _validate_event, record_events

SUBSCRIPTIONS = [
    *(f"Altizon/Datonis/+/{kind}" for kind in ("event", "heartbeat", "alert", "register")),
    "Altizon/Datonis/lzf/+/event",
]
log = logging.getLogger(__name__)


@dataclass
class AckFault:
    http_code: int | None = None
    parse_error: bool = False
    no_ack: bool = False
    http_msg: str | None = None
    count: int = 1
    kinds: tuple[str, ...] = ("event",)


@dataclass
class MqttRecord:
    faults: list[AckFault] = field(default_factory=list)
    counts: dict[str, Any] = field(default_factory=dict)
    sent: list[dict[str, Any]] = field(default_factory=list)  # instructions published
    acks: list[dict[str, Any]] = field(default_factory=list)  # instruction acks received
    registrations: list[dict[str, Any]] = field(default_factory=list)

    def bump(self, key: str, n: int = 1) -> None:
        self.counts[key] = self.counts.get(key, 0) + n


class MqttSide:
    def __init__(self, state: SimState, broker_url: str) -> None:
        url = urlparse(broker_url)
        if url.scheme not in ("mqtt", "tcp") or not url.hostname:
            raise ValueError(f"--mqtt-broker: '{broker_url}' is not mqtt://user:pass@host:port")
        self.state = state
        self.host, self.port = url.hostname, url.port or wire.MQTT_PORT
        self.record = MqttRecord()
        self._lock = threading.Lock()  # paho's thread records, the HTTP handlers read
        self._connected = threading.Event()
        self._refused = False
        self.client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=f"platform-sim-{secrets.token_hex(4)}",
            clean_session=True,
        )
        if url.username:
            self.client.username_pw_set(unquote(url.username), unquote(url.password or ""))
        self.client.max_inflight_messages_set(1000)
        self.client.max_queued_messages_set(0)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_disconnect = lambda *_: self._connected.clear()
        self.client.on_socket_open = wire.tcp_no_delay

    def start(self) -> None:
        """Log in to the broker in the background (paho's thread; it reconnects by itself);
        `GET /sim/mqtt` says `connected` once subscribed."""
        self.client.connect_async(self.host, self.port, keepalive=30)
        self.client.loop_start()

    # ------------------------------------------------------------------ the platform

    def _on_connect(self, client: Any, _u: Any, _f: Any, rc: Any, _p: Any = None) -> None:
        if rc.is_failure:
            if not self._refused:
                self._refused = True
                log.warning(
                    "platform simulator: the broker %s:%s refused its login (%s); check the "
                    "user and password in --mqtt-broker",
                    self.host,
                    self.port,
                    rc,
                )
            return
        for topic in SUBSCRIPTIONS:
            client.subscribe(topic, qos=1)
        self._connected.set()

    def _on_message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        parts = msg.topic.split("/")
        compressed = len(parts) == 5  # Altizon/Datonis/lzf/<client_id>/event
        client_id, kind = (parts[3], "event") if compressed else (parts[2], parts[3])
        with self._lock:
            self._handle(client_id, kind, msg.payload, compressed)

    def _handle(self, client_id: str, kind: str, payload: bytes, compressed: bool) -> None:
        rec = self.record
        rec.bump("messages")
        rec.bump(kind)
        if compressed:
            try:
                payload = lzf.decode(payload)
            except lzf.LZFError:
                rec.bump("bad_lzf")
                self._ack(client_id, wire.PARSE_ERROR, 500)
                return
            rec.bump("lzf")
        try:
            body, envelope, signed = wire.open_envelope(payload)
        except ValueError:
            rec.bump("parse_errors")
            self._ack(client_id, wire.PARSE_ERROR, 500)
            return
        digest = envelope.get("hash")
        versioned = "aliot_protocol_version" in envelope
        secret = self.state.keys.get(str(envelope.get("access_key")))
        if not isinstance(digest, str) or secret is None:
            rec.bump("unknown_key")
            self._ack(client_id, str(digest), 401, "unknown access key", versioned)
            return
        if not wire.signature_ok(secret, signed, digest):
            rec.bump("bad_hash")
            self._ack(client_id, digest, 401, "hash mismatch", versioned)
            return
        fault = self._fault(kind)
        if fault is not None:
            if fault.no_ack:
                rec.bump("not_acked")
            elif fault.parse_error:
                self._ack(client_id, wire.PARSE_ERROR, 500)
            else:
                code = fault.http_code or 500
                self._ack(client_id, digest, code, fault.http_msg or f"simulated {code}", versioned)
            return
        problem = self._accept(kind, body)
        if problem:
            self._ack(client_id, digest, 422, problem, versioned)
        else:
            self._ack(client_id, digest, 200)

    def _accept(self, kind: str, body: dict[str, Any]) -> str | None:
        """Record an accepted message; the reason it is refused (422) otherwise."""
        now = int(time.time() * 1000)
        if kind == "event":
            bulk = "events" in body
            events = body["events"] if bulk else [body]
            if not isinstance(events, list) or not events:
                return "events must be a non-empty list"
            for i, ev in enumerate(events):
                problem = _validate_event(ev, f"events[{i}]" if bulk else "event")
                if problem:
                    return problem
            self.state.requests += 1
            record_events(self.state, events, body.get("epoch"), body.get("batch_id"))
            self.record.bump("events", len(events))
        elif kind == "heartbeat":
            self.state.heartbeats.append({"body": body, "received_ms": now, "via": "mqtt"})
        elif kind == "alert":
            alert = body.get("alert")
            if not isinstance(alert, dict) or not isinstance(alert.get("message"), str):
                return "alert.message: required"
            self.state.alerts.append({**alert, "received_ms": now, "via": "mqtt"})
            if "alert_key" in alert:
                self.record.acks.append({**alert, "received_ms": now})
        elif kind == "register":
            self.record.registrations.append({**body, "received_ms": now})
        return None

    def _fault(self, kind: str) -> AckFault | None:
        faults = self.record.faults
        if not faults or kind not in faults[0].kinds:
            return None
        fault = faults[0]
        if fault.count > 0:
            fault.count -= 1
            if fault.count == 0:
                faults.pop(0)
        return fault

    def _ack(
        self, client_id: str, context: str, code: int, message: str = "", versioned: bool = False
    ) -> None:
        http_msg = (
            {"errors": [{"code": str(code), "message": message}]}
            if code not in (200, 202) and versioned
            else None
        )
        self.record.bump(f"ack_{code}")
        by_status = self.state.by_status
        by_status[str(code)] = by_status.get(str(code), 0) + 1
        self.client.publish(
            wire.mqtt_topic(client_id, "httpAck"), wire.ack_payload(context, code, http_msg), qos=1
        )

    # ------------------------------------------------------------------ control API

    def routes(self) -> list[Route]:
        return [
            Route("/sim/mqtt", self._stats),
            Route("/sim/mqtt/faults", self._faults, methods=["POST", "DELETE"]),
            Route("/sim/instructions", self._instructions, methods=["GET", "POST"]),
        ]

    async def _stats(self, _: Request) -> Response:
        with self._lock:
            return _json(
                200,
                {
                    "connected": self._connected.is_set(),
                    **self.record.counts,
                    "faults_queued": len(self.record.faults),
                    "registrations": self.record.registrations,
                },
            )

    async def _faults(self, request: Request) -> Response:
        if request.method == "DELETE":
            with self._lock:
                self.record.faults.clear()
            return _json(200, {"faults": 0})
        try:
            spec = await request.json()
            kinds = tuple(spec.pop("kinds", ("event",)))
            fault = AckFault(**spec, kinds=kinds)
        except (TypeError, ValueError, AttributeError) as exc:
            return _json(400, {"reason": f"bad fault: {exc}"})
        with self._lock:
            self.record.faults.append(fault)
            return _json(200, {"faults": len(self.record.faults)})

    async def _instructions(self, request: Request) -> Response:
        if request.method == "GET":
            with self._lock:
                return _json(200, {"sent": self.record.sent, "acks": self.record.acks})
        try:
            spec = await request.json()
            thing_key, instruction = spec["thing_key"], spec.get("instruction", {})
            if not isinstance(thing_key, str) or not isinstance(instruction, dict):
                raise TypeError("thing_key must be a string and instruction an object")
        except (KeyError, TypeError, ValueError) as exc:
            return _json(400, {"reason": f"give {{thing_key, instruction}}: {exc}"})
        access, secret = next(iter(self.state.keys.items()))
        alert_key = str(spec.get("alert_key") or secrets.token_hex(5))
        payload = sign_instruction(
            access, secret, thing_key, alert_key, instruction, int(time.time() * 1000)
        )
        if spec.get("bad_hash"):  # one hex digit changed: the body no longer matches
            digit = b"1" if payload[-3:-2] == b"0" else b"0"
            payload = payload[:-3] + digit + payload[-2:]
        self.client.publish(wire.instruction_topic(access, thing_key), payload, qos=2)
        with self._lock:
            self.record.sent.append(
                {
                    "thing_key": thing_key,
                    "alert_key": alert_key,
                    "bad_hash": bool(spec.get("bad_hash")),
                }
            )
        return _json(200, {"alert_key": alert_key})
