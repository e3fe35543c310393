"""The mqtt_listener adapter: subscribes on a broker and maps JSON payloads to things.

QoS 1 with manual acknowledgement: the PUBACK goes back to the broker only after the reading
is durable in the outbox, and the session is persistent (clean_session off, a stable client
id), so a message the gateway had not stored yet is redelivered after a crash or a failover.

Payloads: an event `{"thing_key"?, "timestamp"?, "data": {...}}`, or a flat object of
`tag: value` (with an optional "timestamp"); the time's and the values' keys and the time's
unit are configurable (ThingsBoard: `{"ts": ms, "values": {...}}` or flat with `ts`). The
thing_key comes from the payload, or from a topic level (`thing_key_topic_level`). Each is
checked by `readings.check_reading`, as every way in is (a batch of plainly valid messages at
once). A message that fails (or whose handling fails in any way) is acknowledged all the
same, so that the broker does not send it again and again: it is counted as `malformed`, logged
(at most once a minute) and kept for inspection in `<datadir>/malformed/<service>.jsonl`.

Overload is back-pressure: at most MAX_HELD messages are held unacknowledged; beyond that the
listener reads nothing more (inbox.Inbox) and the broker keeps the rest, while the connection
stays up. The backlog is in the status (`backlog_messages`, `backlog_age_s`, `behind`); falling
behind is logged once, catching up once.
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

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from ...logs import OnceLogger, json_line
from ...readings import InvalidReading
from ..base import Adapter, ReadingSink, Rejected
from .client import ListenerClient, Received
from .config import MqttListenerService
from .inbox import Inbox
from .payload import parse_payload, parse_plain

log = logging.getLogger(__name__)

__all__ = ["MalformedFile", "MqttListenerAdapter", "malformed_record", "parse_payload"]

MALFORMED_MAX_BYTES = 10 << 20
"""A service's malformed/ file is rotated to `.1` beyond this size; one old file is kept."""

MALFORMED_MAX_PAYLOAD = 1 << 20
"""Bytes of a malformed payload kept for inspection; a longer one is cut (its size is noted)."""


MAX_BATCHES_IN_FLIGHT = 64
"""Batches of messages stored and not yet acknowledged at once (each waits for its commit)."""

MAX_BATCH = 5000
"""Messages stored as one batch at most."""

MAX_HELD = 20_000
"""Messages held (received, not yet acknowledged) at most; beyond it the listener stops
reading and the broker holds the rest (see inbox.Inbox)."""

BEHIND_AFTER_S = 5.0
"""The listener is behind when it had to stop reading, or its oldest message waited this long."""

CAUGHT_UP_BELOW_S = 1.0
CAUGHT_UP_CHECKS = 5  # quiet checks in a row before "caught up": no line per flap
KEEPALIVE_S = 30
LAG_EVERY_S = 1.0


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
        self._inbox = Inbox(MAX_HELD)
        self._behind_since: float | None = None
        self._quiet = 0  # checks in a row without a sign of being behind
        self._stored_at_behind = 0
        self._once = OnceLogger(log)  # at most one line a minute for each kind of fault
        self._malformed = (
            MalformedFile(workdir / "malformed" / f"{_file_name(config.name)}.jsonl")
            if workdir is not None
            else None
        )
        self.status.details.update(
            {"broker": f"{config.host}:{config.port}", "topics": list(config.topics)}
        )

    def _client(self) -> ListenerClient:
        cfg = self.config
        client = ListenerClient(
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
        client.on_message = self._on_message  # (QoS 2, MQTT 5: not subscribed)
        client.deliver = self._deliver
        return client

    # paho callbacks run on paho's network thread: hand everything to the event loop
    def _on_connect(self, client: mqtt.Client, _u: Any, _f: Any, rc: Any, _p: Any = None) -> None:
        if rc.is_failure:
            self._call(self.status.error, f"broker refused the connection: {rc}", "disconnected")
            return
        self._call(self.status.ok, "connected")
        client.subscribe([(t, int(self.config.qos)) for t in self.config.topics])

    def _on_disconnect(self, _c: Any, _u: Any, _f: Any, rc: Any, _p: Any = None) -> None:
        self._call(self.status.count, "disconnects")
        self._call(
            self.status.error, f"disconnected from broker ({rc}); reconnecting", "disconnected"
        )

    def _on_message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        self._inbox.put(msg)

    def _deliver(self, msg: Received) -> None:
        self._inbox.put(msg)  # waits while MAX_HELD messages are held: the listener stops reading

    def _call(self, fn: Any, *args: Any) -> None:
        if self._loop is not None:
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(fn, *args)

    async def run(self) -> None:
        self._loop = asyncio.get_running_loop()
        client = self._client()
        cfg = self.config
        self.status.state = "connecting"
        inbox = self._inbox
        inbox.while_waiting, inbox.every_s = client.keep_alive, KEEPALIVE_S / 2
        client.connect_async(cfg.host, cfg.port, keepalive=KEEPALIVE_S)
        client.loop_start()
        # Batches are stored while earlier ones still wait for their commit, so that the
        # outbox's commit window can join them; each is acknowledged after its own commit and
        # after the batch before it (PUBACKs in the order the messages came).
        room = asyncio.Semaphore(MAX_BATCHES_IN_FLIGHT)
        stores: set[asyncio.Task[None]] = set()
        previous: asyncio.Task[None] | None = None
        failure: list[BaseException] = []
        me = asyncio.current_task()
        watch = asyncio.create_task(self._watch_lag(inbox))

        def settled(task: asyncio.Task[None]) -> None:
            room.release()
            stores.discard(task)
            if not task.cancelled() and (exc := task.exception()) is not None and not failure:
                failure.append(exc)  # a bug: the adapter fails (and restarts) as it did
                if me is not None:
                    me.cancel()

        try:
            while True:
                batch = await inbox.take(MAX_BATCH)
                await room.acquire()
                previous = asyncio.create_task(self._store(client, batch, previous))
                previous.add_done_callback(lambda _t: inbox.done())
                stores.add(previous)
                previous.add_done_callback(settled)
        except asyncio.CancelledError:
            if failure:
                raise failure[0] from None
            raise
        finally:
            watch.cancel()
            for task in stores:  # not acknowledged: the broker sends them again
                task.cancel()
            inbox.close()  # paho's thread must not wait for room any more
            self._inbox = Inbox(MAX_HELD)
            client.disconnect()
            client.loop_stop()

    async def _watch_lag(self, inbox: Inbox) -> None:
        """Show the backlog in the status; say once when the listener falls behind, once when
        it has caught up."""
        details = self.status.details
        while True:
            await asyncio.sleep(LAG_EVERY_S)
            held, age, waited = inbox.lag()
            details["backlog_messages"] = held
            details["backlog_age_s"] = round(age, 3)
            stored = self.status.counters.get("messages", 0)
            self._quiet = 0 if waited or age >= CAUGHT_UP_BELOW_S else self._quiet + 1
            if self._behind_since is None and (waited or age >= BEHIND_AFTER_S):
                self._behind_since, self._stored_at_behind = time.monotonic(), stored
                details["behind"] = True
                log.warning(
                    "services '%s': falling behind the broker at %s: %d messages waiting, the "
                    "oldest for %.1f s; it reads no faster than it stores and the broker holds "
                    "the rest (nothing is lost if the broker's max_queued_messages is 0 or large "
                    "enough, see docs/durability.md); slow the producers, or give the gateway "
                    "more CPU or faster storage",
                    self.config.name,
                    details["broker"],
                    held,
                    age,
                )
            elif self._behind_since is not None and self._quiet >= CAUGHT_UP_CHECKS:
                log.info(
                    "services '%s': caught up with the broker after %.0f s (%d messages stored "
                    "meanwhile)",
                    self.config.name,
                    time.monotonic() - self._behind_since,
                    stored - self._stored_at_behind,
                )
                self._behind_since = None
                details["behind"] = False

    async def _store(
        self,
        client: ListenerClient,
        batch: list[mqtt.MQTTMessage],
        previous: asyncio.Task[None] | None = None,
    ) -> None:
        """Store what is valid, set aside what is not; then, once the batch before is
        acknowledged, acknowledge every message."""
        now = int(time.time() * 1000)
        cfg = self.config
        keys = (cfg.thing_key_topic_level, now, cfg.timestamp_key, cfg.timestamp_unit, cfg.data_key)
        bad: list[tuple[mqtt.MQTTMessage, str]] = []
        plain = _plain(batch, *keys)
        if plain is not None:  # the usual batch: checked and serialized at once
            try:
                await self._sink_retrying(*plain)
            except Exception:
                plain = None  # not stored: one by one below, so that only the one at fault fails
        if plain is None:
            good: list[tuple[mqtt.MQTTMessage, dict[str, Any]]] = []
            for msg in batch:
                try:
                    good.append((msg, parse_payload(msg.topic, msg.payload, *keys)))
                except InvalidReading as exc:
                    bad.append((msg, exc.reason))
                except Exception as exc:  # a bug must not wedge the listener: set it aside
                    bad.append((msg, self._unexpected(exc)))
            if good:
                bad += await self._sink_all(good)
        if bad:
            bad.sort(key=lambda item: batch.index(item[0]))  # in arrival order (bad is rare)
            await self._set_aside(bad, now)
        if previous is not None:
            await asyncio.wait([previous])  # its outcome is its own; only its order matters
        mids = [msg.mid for msg in batch if msg.qos > 0]  # stored or set aside: acknowledge
        if isinstance(client, ListenerClient):
            client.ack_many(mids)
        else:
            for mid in mids:
                client.ack(mid, 1)

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

    async def _sink_retrying(
        self, readings: list[dict[str, Any]], raw: bytes | None = None
    ) -> None:
        while True:
            try:
                await self.sink(readings, raw, checked=True)
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


def _plain(batch: list[Any], *keys: Any) -> tuple[list[dict[str, Any]], bytes] | None:
    try:
        return parse_plain(batch, *keys)
    except Exception:  # a bug here must not cost the batch: the exact path reads each one
        log.debug("parse_plain failed", exc_info=True)
        return None


def _file_name(service: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", service) or "mqtt_listener"
