"""The northbound interface: an uplink turns one Batch into one Outcome.

It knows nothing of retries, backoff, the outbox or the declined store: the forwarder owns
those and applies DESIGN.md's outcome table. An uplink never raises for a platform or network
fault; it answers RETRY with the reason. A batch it cannot even put on the wire (its events do
not serialize: nesting too deep, a value JSON has no form for) is no network fault and would
fail the same way forever: that is a local DECLINED (`local_decline`), kept for inspection.
"""

from __future__ import annotations

import asyncio
import email.utils
import re
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import Any

import orjson

from ..model import Batch, Outcome, OutcomeKind
from ..registry import Plugin
from ..status import PartStatus

LOCAL_DECLINE_HINT = "this batch could not be encoded; it is kept for inspection"


_USERINFO = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://)[^/?#@\s]*@")


def redact_url(text: str) -> str:
    """A URL (or a message quoting one) as it may be shown: `user:pass@` becomes `***@`."""
    return _USERINFO.sub(r"\1***@", text)


def local_decline(exc: BaseException, hint: str = LOCAL_DECLINE_HINT) -> Outcome:
    """This batch fails here, not at the platform (status None): sending it again cannot help."""
    return Outcome(
        OutcomeKind.DECLINED, None, f"local error: {exc.__class__.__name__}: {exc}; {hint}"
    )


def heartbeat_body(thing_keys: list[str]) -> bytes:
    """The heartbeat of the configured things, as every uplink sends it."""
    return orjson.dumps({"thing_keys": thing_keys, "timestamp": int(time.time() * 1000)})


def alert_body(
    thing_key: str | None, level: tuple[str, Any], message: str, extra: dict[str, Any] | None
) -> bytes | Outcome:
    """An alert as every uplink sends it; `level` is the transport's (key, value) for it.
    A message or extra that cannot be encoded is a local decline, never an exception."""
    try:
        return orjson.dumps(
            {
                "thing_key": thing_key,
                level[0]: level[1],
                "message": message,
                "timestamp": int(time.time() * 1000),
                "data": extra or {},
            }
        )
    except (orjson.JSONEncodeError, TypeError) as exc:
        return local_decline(exc, "this alert could not be encoded")


def parse_retry_after(value: str | None) -> float | None:
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def outcome_for(
    status: int, body: str, retry_after: str | None, detail: str | None = None
) -> Outcome:
    """DESIGN.md's outcome table, for the platform's answer: an HTTP status, or the
    `http_code` of a Datonis MQTT ack (`detail`: its `http_msg`, else read from `body`)."""
    if status in (200, 201, 202, 204):
        return Outcome(OutcomeKind.DELIVERED, status=status)
    reason = _reason(status, body, detail)
    if status == 401:
        return Outcome(OutcomeKind.DECLINED, status, reason, body, keys_suspect=True)
    if status in (400, 422):
        return Outcome(OutcomeKind.DECLINED, status, reason, body)
    if status in (429, 503, 504):
        wait = parse_retry_after(retry_after)
        return Outcome(
            OutcomeKind.RETRY, status, reason, body, retry_after_s=60.0 if wait is None else wait
        )
    return Outcome(OutcomeKind.RETRY, status, reason, body)


def _reason(status: int, body: str, detail: str | None = None) -> str:
    if detail is not None:
        return _phrased(status) + (f": {detail}" if detail else "")
    try:
        obj = orjson.loads(body)
        detail = (
            obj.get("reason") or obj.get("message") or obj.get("error")
            if isinstance(obj, dict)
            else None
        )
    except orjson.JSONDecodeError:
        detail = None
    return _phrased(status) + (f": {detail}" if detail else "")


def _phrased(status: int) -> str:
    try:
        return f"{status} {HTTPStatus(status).phrase}"
    except ValueError:
        return f"{status} HTTP status"


# Instructions (platform → machine) arrive on a transport that can receive them (Datonis MQTT).
# The transport calls the sink with the thing the topic names and the message's exact bytes,
# and acknowledges the message to its broker only after the sink returned (the sink stores it
# durably first). The sink verifies, stores, executes and acknowledges; the transport does not.
InstructionSink = Callable[[str, bytes], Awaitable[None]]


def is_local(outcome: Outcome) -> bool:
    """A decline made on this side of the wire (`local_decline`), not by the platform."""
    return outcome.kind is OutcomeKind.DECLINED and outcome.status is None


class Uplink(ABC):
    type: str = "uplink"

    def __init__(self, name: str) -> None:
        self.status = PartStatus(name=name, type=self.type)

    async def start(self) -> None:  # noqa: B027 - optional hook
        """Connect if the transport needs it; failures show in status, send() answers RETRY."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Close promptly: a request still on the wire is abandoned (its batch stays queued)."""

    async def wait_reachable(self) -> None:
        """Return once the endpoint, found unreachable by the last send, takes connections
        again. The forwarder races this against a retry's backoff, so the first batch goes
        out as soon as the platform is back rather than when the backoff ends. Never returns
        when the last failure came from a reachable endpoint (a 5xx, a timeout): those keep
        their backoff. Cheap checks only (a TCP connect, a client's own reconnect), never a
        request the platform would count."""
        await asyncio.Event().wait()

    @abstractmethod
    async def send(self, batch: Batch) -> Outcome:
        """Deliver one batch; DELIVERED only once the far side acknowledged it."""

    async def heartbeat(self, thing_keys: list[str]) -> Outcome:
        return _not_sent(f"the {self.type} uplink sends no heartbeats")

    async def alert(
        self, thing_key: str | None, level: str, message: str, extra: dict[str, Any] | None = None
    ) -> Outcome:
        return _not_sent(f"the {self.type} uplink has no alert channel")

    def receive_instructions(self, thing_keys: list[str], sink: InstructionSink) -> bool:
        """Called once before start(): subscribe to the instructions of these things (again
        after every reconnect) and hand each to `sink`. False: this transport cannot receive
        instructions (the HTTP API has no way down)."""
        return False

    async def instruction_ack(
        self, alert_key: str, thing_key: str, success: bool, message: str
    ) -> Outcome:
        """Tell the platform how an instruction ended (an alert carrying its `alert_key` and
        `data.execution_status`); DELIVERED once the platform acknowledged it."""
        return _not_sent(f"the {self.type} uplink cannot acknowledge instructions")


def _not_sent(reason: str) -> Outcome:
    # honest default: nothing left this process, so it must not read as DELIVERED
    return Outcome(OutcomeKind.DECLINED, None, f"not sent: {reason}")


def _uplink(protocols: tuple[str, ...], folder: str, config: str, uplink: str) -> list[Plugin]:
    ref = f"{folder}.config:{config}", f"{folder}.uplink:{uplink}"
    return [Plugin(p, *ref, __package__) for p in protocols]


# one line per northbound transport: its `cloud.protocol` values, its config model, its uplink
REGISTRY: dict[str, Plugin] = {
    p.name: p
    for p in (
        *_uplink(("https", "http"), "datonis_http", "DatonisHttpCloud", "DatonisHttpUplink"),
        *_uplink(("mqtt", "mqtts"), "datonis_mqtt", "DatonisMqttCloud", "DatonisMqttUplink"),
        *_uplink(("mqtt_broker",), "mqtt_broker", "MqttBrokerCloud", "MqttBrokerUplink"),
    )
}


def make_uplink(cloud: Any) -> Uplink:
    """The uplink for a cloud config (chosen by its `protocol`), imported on first use."""
    return REGISTRY[cloud.protocol].load()(cloud)
