"""The Datonis platform as both ends speak it: HTTP paths and the HMAC signature; the MQTT
transport's topics, login, signed envelope and acknowledgements.

Every request carries `X-Access-Key` and `X-Dtn-Signature`: the lowercase hex HMAC-SHA256 of
the exact body bytes, keyed with the secret key (../shared/reference/datonis-wire-spec.md).
Imports nothing of the package.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import socket
from typing import Any

EVENT_PATH = "/api/v3/things/event.json"
HEARTBEAT_PATH = "/api/v3/things/heartbeat.json"
ALERTS_PATH = "/api/v3/alerts.json"
ALERT_TYPES = {"info": 0, "warning": 1, "error": 2, "critical": 3}  # an alert's `alert_type`


def sign(secret: str | bytes, body: bytes) -> str:
    key = secret.encode() if isinstance(secret, str) else secret
    return hmac.new(key, body, hashlib.sha256).hexdigest()


def signature_ok(secret: str | bytes, body: bytes, signature: str) -> bool:
    """Whether `signature` (as sent, any case) is the body's signature, in constant time."""
    return hmac.compare_digest(signature.strip().lower(), sign(secret, body))


# ---------------------------------------------------------------- the MQTT transport (§2-§7)

MQTT_PORT, MQTTS_PORT = 1883, 8883
MQTT_HOST = "telemetry.datonis.io"
ALIOT_PROTOCOL_VERSION = 2.0  # asks the platform to put `http_msg` in its acks (§5)
PARSE_ERROR = "PARSE_ERROR"  # an ack's context when the platform could not parse a message
_ENVELOPE_KEYS = ("hash", "access_key", "aliot_protocol_version")


def mqtt_topic(client_id: str, kind: str) -> str:
    """`Altizon/Datonis/<client_id>/<kind>`: event, heartbeat, alert, register, httpAck."""
    return f"Altizon/Datonis/{client_id}/{kind}"


def lzf_event_topic(client_id: str) -> str:
    return f"Altizon/Datonis/lzf/{client_id}/event"


def instruction_topic(access_key: str, thing_key: str) -> str:
    return f"Altizon/Datonis/{access_key}/thing/{thing_key}/executeInstruction"


def mqtt_password(access_key: str, secret: str | bytes) -> str:
    """The broker login's password: hex HMAC-SHA256 of the access key (§2)."""
    return sign(secret, access_key.encode())


def compact(obj: Any) -> bytes:
    """The Python SDK's compact JSON (§1.2), the form every MQTT hash is computed over."""
    return json.dumps(obj, separators=(",", ":")).encode()


def canonical_body(body: bytes) -> bytes:
    """`body` (compact JSON as orjson writes it) in the Python SDK's form. The two agree on
    ASCII text and on most numbers; where they may not (non-ASCII, floats below 1e-4) the body
    is written again, so the hash is the one the platform recomputes."""
    if body.isascii() and b"0.0000" not in body:
        return body
    return compact(json.loads(body))


def envelope(body: bytes, access_key: str, secret: str | bytes) -> tuple[str, bytes]:
    """(hash, wire payload) of a signed body (§5): the hash over the body without the envelope
    keys, then `hash`, `access_key`, `aliot_protocol_version` appended as the Python SDK does."""
    body = canonical_body(body)
    digest = sign(secret, body)
    tail = b',"hash":"%s","access_key":%s,"aliot_protocol_version":2.0}' % (
        digest.encode(),
        json.dumps(access_key).encode(),
    )
    return digest, body[:-1] + tail


def open_envelope(payload: bytes) -> tuple[dict[str, Any], dict[str, Any], bytes]:
    """(body, envelope keys, the bytes the hash covers) of a received message, as the platform
    checks it (§5: parse, remove the envelope keys, re-serialise compactly in received order).
    Raises ValueError if it is not a JSON object."""
    try:
        obj = json.loads(payload)
    except RecursionError:  # nested deeper than the parser goes: garbage, not a crash
        raise ValueError("JSON nested too deeply") from None
    if not isinstance(obj, dict):
        raise ValueError("not a JSON object")
    keys = {k: obj.pop(k) for k in _ENVELOPE_KEYS if k in obj}
    return obj, keys, compact(obj)


def ack_payload(context: str, http_code: int, http_msg: Any = None) -> bytes:
    """An httpAck as the platform publishes it (§6)."""
    ack: dict[str, Any] = {"context": context, "http_code": http_code}
    if http_msg is not None:
        ack["http_msg"] = http_msg
    return compact(ack)


def ack_message(http_msg: Any) -> str:
    """The text of an ack's `http_msg`, whichever of its three shapes (§6) it takes."""
    if isinstance(http_msg, dict) and isinstance(http_msg.get("errors"), list):
        http_msg = http_msg["errors"]
    if isinstance(http_msg, list):
        return "; ".join(
            f"{m.get('code', '')}: {m.get('message', '')}".strip(": ")
            if isinstance(m, dict)
            else str(m)
            for m in http_msg
        )
    return "" if http_msg is None else str(http_msg)


def tcp_no_delay(_client: Any, _userdata: Any, sock: Any) -> None:
    """paho's on_socket_open for either end: Nagle's algorithm adds ~40-90 ms to every
    publish/ack round trip on a quiet connection (spec §15)."""
    with contextlib.suppress(OSError, AttributeError):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
