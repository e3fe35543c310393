"""The mqtt_listener adapter: subscribes on a broker and maps JSON payloads to things.

QoS 1 with manual acknowledgement: the PUBACK goes back to the broker only after the reading
is durable in the outbox, and the session is persistent (clean_session off, a stable client
id), so a message the gateway had not stored yet is redelivered after a crash or a failover.

Payloads: an event `{"thing_key"?, "timestamp"?, "data": {...}}`, or a flat object of
`tag: value` (with an optional "timestamp"); the time's and the values' keys and the time's
unit are configurable (ThingsBoard: `{"ts": ms, "values": {...}}` or flat with `ts`). The thing_key comes from the payload, or from a
topic level (`thing_key_topic_level`). Each is checked by `readings.check_reading`, as every
way in is. A message that fails (or whose handling fails in any way) is acknowledged all the
same, so that the broker does not send it again and again: it is counted as `malformed`, logged
(at most once a minute) and kept for inspection in `<datadir>/malformed/<service>.jsonl`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import logging
import os
import re
import time
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from ...logs import OnceLogger, json_line
from ...readings import MAX_DEPTH, InvalidReading, check_reading
from ..base import Adapter, ReadingSink, Rejected
from .config import MqttListenerService

log = logging.getLogger(__name__)


MAX_BATCHES_IN_FLIGHT = 64
"""Batches of messages stored and not yet acknowledged at once (each waits for its commit)."""

MALFORMED_MAX_BYTES = 10 << 20
"""A service's malformed/ file is rotated to `.1` beyond this size; one old file is kept."""

MALFORMED_MAX_PAYLOAD = 1 << 20
"""Bytes of a malformed payload kept for inspection; a longer one is cut (its size is noted)."""


TO_MS: dict[str, float] = {"s": 1000, "ms": 1, "us": 1 / 1000, "ns": 1 / 1_000_000}
"""What one unit of `timestamp_unit` is in milliseconds."""


def to_ms(ts: Any, unit: str) -> Any:
    """A payload's time in `unit` as epoch ms; anything but a number is left to the check."""
    if unit == "ms" or type(ts) not in (int, float):
        return ts
    if type(ts) is int and unit != "s":
        return ts // (1000 if unit == "us" else 1_000_000)  # exact, even beyond 2**53
    ms = ts * TO_MS[unit]
    return int(ms) if -1e300 < ms < 1e300 else ms  # inf/nan: the check says what is wrong


def parse_payload(
    topic: str,
    payload: bytes | bytearray,
    topic_level: int | None,
    now_ms: int,
    timestamp_key: str = "timestamp",
    timestamp_unit: str = "ms",
    data_key: str = "data",
) -> dict[str, Any]:
    """The reading in one message, checked by `readings.check_reading`; raises InvalidReading.

    The time is the payload's `timestamp_key` in `timestamp_unit` (ThingsBoard: `ts`, ms),
    never a datapoint; the values are under `data_key` (ThingsBoard: `values`), or, without
    it, every other key of the object."""
    try:
        obj = orjson.loads(payload)
    except (ValueError, RecursionError) as exc:
        if isinstance(exc, RecursionError) or "depth limit" in str(exc):
            raise InvalidReading(
                f"payload is nested too deep; at most {MAX_DEPTH} levels are accepted in data"
            ) from None
        raise InvalidReading(f"payload is not JSON ({exc})") from None
    if type(obj) is not dict:
        raise InvalidReading("payload must be a JSON object: an event, or tag: value pairs")
    thing_key: Any
    if topic_level is not None:
        levels = topic.split("/")
        if topic_level >= len(levels) or not levels[topic_level]:
            raise InvalidReading(f"topic has no level {topic_level} to take the thing_key from")
        thing_key = levels[topic_level]
    else:
        thing_key = obj.get("thing_key")
        if thing_key is None:
            raise InvalidReading("payload has no thing_key (or set thing_key_topic_level)")
    ts = to_ms(obj.get(timestamp_key), timestamp_unit)
    if data_key in obj:
        data = obj[data_key]
    else:
        data = {k: v for k, v in obj.items() if k != "thing_key" and k != timestamp_key}
    try:
        return check_reading(
            {"thing_key": thing_key, "timestamp": ts, "data": data}, now_ms, where="payload"
        )
    except InvalidReading as exc:
        if timestamp_key == "timestamp" and timestamp_unit == "ms":
            raise
        if not exc.reason.startswith("payload.timestamp:"):
            raise
        # name the key the producer sent, and the unit it was read in
        why = exc.reason.removeprefix("payload.timestamp:")
        raise InvalidReading(
            f"payload.{timestamp_key} (in {timestamp_unit}, as epoch ms):{why}"
        ) from None


class MalformedFile:
    """Messages that were acknowledged without being stored, one JSON line each, kept for
    inspection in `<datadir>/malformed/<service>.jsonl` (rotated to `.1`, one old file kept).
    Written and fsync'ed before the acknowledgement; malformed input is rare, so that is cheap."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def append(self, records: list[dict[str, Any]]) -> None:
        lines = b"".join(json_line(r) for r in records)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            size = -1
        if size > 0 and size + len(lines) > MALFORMED_MAX_BYTES:
            os.replace(self.path, self.path.with_name(self.path.name + ".1"))
            size = -1
        with open(self.path, "ab") as f:
            f.write(lines)
            f.flush()
            os.fsync(f.fileno())
        if size < 0:  # a new file: make its name durable too
            fd = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


def malformed_record(
    topic: str, payload: bytes | bytearray, reason: str, at_ms: int
) -> dict[str, Any]:
    record: dict[str, Any] = {
        "time": dt.datetime.fromtimestamp(at_ms / 1000, dt.UTC).isoformat(timespec="milliseconds"),
        "topic": topic,
        "reason": reason,
    }
    kept = payload[:MALFORMED_MAX_PAYLOAD]
    if len(kept) < len(payload):
        record["payload_bytes"] = len(payload)
    try:
        record["payload"] = kept.decode()
    except UnicodeDecodeError:
        record["payload"] = base64.b64encode(kept).decode()
        record["payload_encoding"] = "base64"
    return record


class MqttListenerAdapter(Adapter):
    type = "mqtt_listener"
    hint = "check that the broker runs at host:port and accepts our client id and credentials; reconnecting"

    def __init__(
        self, config: MqttListenerService, sink: ReadingSink, workdir: Path | None = None
    ) -> None:
        super().__init__(config, sink, workdir)
        self.config: MqttListenerService = config
        self._loop: asyncio.AbstractEventLoop | None = None
        self._inbox: asyncio.Queue[mqtt.MQTTMessage] = asyncio.Queue()
        self._once = OnceLogger(log)  # at most one line a minute for each kind of fault
        self._malformed = (
            MalformedFile(workdir / "malformed" / f"{_file_name(config.name)}.jsonl")
            if workdir is not None
            else None
        )
        self.status.details.update(
            {"broker": f"{config.host}:{config.port}", "topics": list(config.topics)}
        )

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
        client.on_message = self._on_message
        return client

    # paho callbacks run on paho's network thread: hand everything to the event loop
    def _on_connect(self, client: mqtt.Client, _u: Any, _f: Any, rc: Any, _p: Any = None) -> None:
        if rc.is_failure:
            self._call(self.status.error, f"broker refused the connection: {rc}", "disconnected")
            return
        self._call(self.status.ok, "connected")
        client.subscribe([(t, int(self.config.qos)) for t in self.config.topics])

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
        # Batches are stored while earlier ones still wait for their commit, so that the
        # outbox's commit window can join them; each is acknowledged after its own commit and
        # after the batch before it (PUBACKs in the order the messages came).
        room = asyncio.Semaphore(MAX_BATCHES_IN_FLIGHT)
        stores: set[asyncio.Task[None]] = set()
        previous: asyncio.Task[None] | None = None
        failure: list[BaseException] = []
        me = asyncio.current_task()

        def settled(task: asyncio.Task[None]) -> None:
            room.release()
            stores.discard(task)
            if not task.cancelled() and (exc := task.exception()) is not None and not failure:
                failure.append(exc)  # a bug: the adapter fails (and restarts) as it did
                if me is not None:
                    me.cancel()

        try:
            while True:
                first = await self._inbox.get()
                batch = [first]
                while not self._inbox.empty() and len(batch) < 5000:
                    batch.append(self._inbox.get_nowait())
                await room.acquire()
                previous = asyncio.create_task(self._store(client, batch, previous))
                stores.add(previous)
                previous.add_done_callback(settled)
        except asyncio.CancelledError:
            if failure:
                raise failure[0] from None
            raise
        finally:
            for task in stores:  # not acknowledged: the broker sends them again
                task.cancel()
            client.disconnect()
            client.loop_stop()

    async def _store(
        self,
        client: mqtt.Client,
        batch: list[mqtt.MQTTMessage],
        previous: asyncio.Task[None] | None = None,
    ) -> None:
        """Store what is valid, set aside what is not; then, once the batch before is
        acknowledged, acknowledge every message."""
        now = int(time.time() * 1000)
        cfg = self.config
        good: list[tuple[mqtt.MQTTMessage, dict[str, Any]]] = []
        bad: list[tuple[mqtt.MQTTMessage, str]] = []
        for msg in batch:
            try:
                reading = parse_payload(
                    msg.topic,
                    msg.payload,
                    cfg.thing_key_topic_level,
                    now,
                    cfg.timestamp_key,
                    cfg.timestamp_unit,
                    cfg.data_key,
                )
                good.append((msg, reading))
            except InvalidReading as exc:
                bad.append((msg, exc.reason))
            except Exception as exc:  # a bug must not wedge the listener: set this one aside
                bad.append((msg, self._unexpected(exc)))
        if good:
            bad += await self._sink_all(good)
        if bad:
            bad.sort(key=lambda item: batch.index(item[0]))  # in arrival order (bad is rare)
            await self._set_aside(bad, now)
        if previous is not None:
            await asyncio.wait([previous])  # its outcome is its own; only its order matters
        for msg in batch:  # stored or set aside: acknowledge
            if msg.qos > 0:
                client.ack(msg.mid, msg.qos)

    async def _sink_all(
        self, good: list[tuple[mqtt.MQTTMessage, dict[str, Any]]]
    ) -> list[tuple[mqtt.MQTTMessage, str]]:
        """Store the readings, all at once; should that fail for a reason other than a full or
        closing outbox, one by one, so that only the message at fault is set aside."""
        try:
            await self._sink_retrying([r for _, r in good])
            return []
        except Exception as exc:
            if len(good) == 1:
                return [(good[0][0], self._unexpected(exc))]
        bad = []
        for msg, reading in good:
            try:
                await self._sink_retrying([reading])
            except Exception as exc:
                bad.append((msg, self._unexpected(exc)))
        return bad

    async def _sink_retrying(self, readings: list[dict[str, Any]]) -> None:
        while True:
            try:
                await self.sink(readings, checked=True)
            except Rejected as exc:
                # not stored: keep them unacknowledged and try again; the broker holds them
                self.status.error(exc.reason)
                await asyncio.sleep(1)
                continue
            self.status.count("messages", len(readings))
            self.status.ok()
            return

    def _unexpected(self, exc: Exception) -> str:
        reason = f"{exc.__class__.__name__}: {exc}"
        self._once.log(
            "unexpected",
            "services '%s': handling a message failed (%s); it is set aside as malformed",
            self.config.name,
            reason,
            level=logging.ERROR,
            exc_info=exc,
        )
        return reason

    async def _set_aside(self, bad: list[tuple[mqtt.MQTTMessage, str]], now: int) -> None:
        """Keep, then count and report the malformed messages (before they are acknowledged)."""
        kept = ""
        if self._malformed is not None:
            records = [malformed_record(m.topic, m.payload, r, now) for m, r in bad]
            try:
                await asyncio.to_thread(self._malformed.append, records)
                kept = f"; kept in {self._malformed.path}"
            except OSError as exc:
                self._once.log(
                    "cannot keep",
                    "services '%s': cannot keep malformed messages in %s (%s); they are "
                    "acknowledged and lost; free the disk or fix the directory's permissions",
                    self.config.name,
                    self._malformed.path,
                    exc,
                    level=logging.ERROR,
                )
        self.status.count("malformed", len(bad))
        topic, reason = bad[-1][0].topic, bad[-1][1]
        self.status.error(f"topic {topic}: {reason}", announce=False)  # logged just below
        self._once.log(
            "malformed",
            "services '%s': malformed message on topic %s acknowledged, not stored: %s%s",
            self.config.name,
            topic,
            reason,
            kept,
        )


def _file_name(service: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", service) or "mqtt_listener"
