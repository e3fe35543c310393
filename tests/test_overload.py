"""Overload is back-pressure, never loss: a listener that cannot keep up stops reading, keeps
its connection (keep-alive answered while it waits), shows and logs its backlog once, and every
QoS 1 message arrives in the end."""

from __future__ import annotations

import asyncio
import logging
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from paho.mqtt.enums import CallbackAPIVersion

from datonis_edge.adapters.mqtt_listener import adapter as listener
from datonis_edge.adapters.mqtt_listener.client import ListenerClient
from datonis_edge.adapters.mqtt_listener.config import MqttListenerService
from helpers import Proc, free_port, mosquitto_binary, wait_port, wait_until

SEQ = re.compile(rb'"seq":\s*(\d+)')


class Broker:
    """A mosquitto configured as docs/durability.md asks of a broker in front of the gateway:
    nothing dropped from a session's queue, no inflight cap towards the gateway."""

    def __init__(self, tmp: Path, name: str) -> None:
        self.port = free_port()
        conf = tmp / f"{name}.conf"
        conf.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\n"
            "max_queued_messages 0\nmax_inflight_messages 0\n"
        )
        self.proc = Proc([mosquitto_binary(), "-c", str(conf)], tmp / f"{name}.log").start()
        wait_port(self.port)

    def stop(self) -> None:
        self.proc.stop()


@pytest.fixture
def source(tmp_path: Path) -> Iterator[Broker]:
    broker = Broker(tmp_path, "source")
    yield broker
    broker.stop()


class Publisher:
    """QoS 1 messages `{"seq": n, ...}` (three datapoints each); `acked` counts the broker's
    PUBACKs (from then on the broker, not the producer, is responsible for them)."""

    def __init__(self, port: int) -> None:
        self.acked = 0
        self.sent = 0
        self._lock = threading.Lock()
        self.client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2)
        self.client.max_inflight_messages_set(0)
        self.client.max_queued_messages_set(0)
        self.client.on_publish = self._on_publish
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def _on_publish(self, *_a: Any) -> None:
        with self._lock:
            self.acked += 1

    def publish(self, n: int) -> None:
        for _ in range(n):
            payload = b'{"seq": %d, "temperature": 21, "running": true}' % self.sent
            self.client.publish(f"plant/press-{self.sent % 5}/data", payload, qos=1)
            self.sent += 1

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _lines(caplog: pytest.LogCaptureFixture, level: str, words: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelname == level and words in r.message]


async def _until(predicate: Any, what: str, timeout: float = 60) -> None:
    """Wait on the event loop (the adapter runs on it) until `predicate()` holds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


async def test_a_listener_that_cannot_keep_up_stops_reading_stays_connected_and_loses_nothing(
    tmp_path: Path,
    source: Broker,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    caplog.set_level(logging.INFO)
    monkeypatch.setattr(listener, "MAX_HELD", 50)
    monkeypatch.setattr(listener, "KEEPALIVE_S", 1)  # the broker drops a client silent for 1.5 s
    monkeypatch.setattr(listener, "LAG_EVERY_S", 0.05)
    pings = [0]
    keep_alive = ListenerClient.keep_alive

    def counted(client: ListenerClient) -> None:
        pings[0] += 1
        keep_alive(client)

    monkeypatch.setattr(ListenerClient, "keep_alive", counted)
    gate = asyncio.Event()  # storing is stuck until the gate opens
    stored: set[int] = set()

    async def slow_sink(
        readings: list[dict[str, Any]], raw: bytes | None = None, checked: bool = False
    ) -> int:
        await gate.wait()
        stored.update(r["data"]["seq"] for r in readings)
        return len(readings)

    config = MqttListenerService(
        type="mqtt_listener",
        name="line",
        port=source.port,
        topics=["plant/+/data"],
        thing_key_topic_level=1,
    )
    adapter = listener.MqttListenerAdapter(config, slow_sink, workdir=tmp_path)
    run = asyncio.create_task(adapter.run())
    producer = Publisher(source.port)
    try:
        await _until(lambda: adapter.status.state == "connected", "the listener to connect")
        # once its subscription is in place, the first message reaches the listener
        while adapter._inbox.lag()[0] == 0:
            producer.publish(1)
            await asyncio.sleep(0.05)
        producer.publish(2000)
        await _until(lambda: producer.acked == producer.sent, "the broker to take every message")
        await _until(lambda: _lines(caplog, "WARNING", "falling behind"), "the falling-behind line")
        # paho waits for room, reading nothing, for 6 s (the broker allows 1.5 s of silence)
        await _until(lambda: pings[0] >= 12, "keep-alive pings while the listener waits")
        assert adapter.status.state == "connected"
        assert adapter.status.counters.get("disconnects", 0) == 0
        details = adapter.status.details
        assert details["behind"] is True and details["backlog_messages"] == 50
        assert stored == set()

        gate.set()
        await _until(lambda: len(stored) == producer.sent, "every message stored", timeout=120)
        await _until(lambda: _lines(caplog, "INFO", "caught up"), "the caught-up line")
        assert stored == set(range(producer.sent))  # exactly-once-or-more, none lost
        assert adapter.status.counters.get("disconnects", 0) == 0
        assert details["behind"] is False
        warning = _lines(caplog, "WARNING", "falling behind")
        assert len(warning) == 1 and "max_queued_messages" in warning[0]
        assert len(_lines(caplog, "INFO", "caught up")) == 1
    finally:
        producer.stop()
        run.cancel()
        await asyncio.gather(run, return_exceptions=True)


def test_a_flood_through_the_gateway_arrives_at_the_uplink_without_loss(
    tmp_path: Path, source: Broker, gateway_factory: Any
) -> None:
    """A producer floods the listener (a real gateway process) far faster than it stores:
    every message reaches the uplink's broker, and the listener's connection never drops."""
    sink_broker = Broker(tmp_path, "sink")
    seen: set[int] = set()
    lock = threading.Lock()

    def on_message(_c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        with lock:
            seen.update(int(s) for s in SEQ.findall(msg.payload))

    sink = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2)
    sink.on_message = on_message
    sink.connect("127.0.0.1", sink_broker.port)
    sink.subscribe("out/#", qos=1)
    sink.loop_start()
    config = {
        "cloud": {
            "protocol": "mqtt_broker",
            "endpoint": f"mqtt://127.0.0.1:{sink_broker.port}",
            "topic": "out/{thing_key}/events",
            "bulk_max_elements": 1000,
            "bulk_transmit_interval_ms": 50,
            "heartbeat_interval_ms": 0,
        },
        "services": [
            {
                "name": "mqtt",
                "type": "mqtt_listener",
                "port": source.port,
                "topics": ["plant/+/data"],
                "thing_key_topic_level": 1,
            }
        ],
    }
    gw = gateway_factory(config).start()
    producer = Publisher(source.port)
    try:

        def listener_status() -> dict[str, Any]:
            return next(s for s in gw.status()["services"] if s["name"] == "mqtt")

        wait_until(lambda: listener_status()["state"] == "connected", 30, "listener connected")

        def probe() -> bool:  # messages pass once the listener's subscription is in place
            producer.publish(1)
            return bool(seen)

        wait_until(probe, 30, "a first message through the gateway")
        with lock:
            seen.clear()
        first = producer.sent
        producer.publish(20_000)
        wait_until(lambda: producer.acked == producer.sent, 60, "the broker took every message")
        wait_until(lambda: seen >= set(range(first, producer.sent)), 180, "every message out")
        status = listener_status()
        assert status["counters"].get("disconnects", 0) == 0 and status["state"] == "connected"
        metrics = gw.http.get("/metrics").text
        assert 'datonis_edge_listener_backlog_messages{service="mqtt"}' in metrics
        assert 'datonis_edge_listener_backlog_age_seconds{service="mqtt"}' in metrics
    finally:
        producer.stop()
        sink.loop_stop()
        sink_broker.stop()


def _publish(topic: bytes, mid: int, payload: bytes, qos: int) -> bytes:
    body = len(topic).to_bytes(2, "big") + topic + (mid.to_bytes(2, "big") if qos else b"")
    body += payload
    assert len(body) < 16384
    size = (
        bytes([len(body)]) if len(body) < 128 else bytes([len(body) & 0x7F | 0x80, len(body) >> 7])
    )
    return bytes([0x30 | qos << 1]) + size + body


class _Socket:
    def __init__(self, data: bytes) -> None:
        self.data = data

    def recv(self, n: int) -> bytes:
        out, self.data = self.data[:n], self.data[n:]
        return out


def test_publishes_are_taken_whole_from_the_read_ahead_and_the_rest_left_to_paho() -> None:
    from datonis_edge.adapters.mqtt_listener.client import ReadAhead, Received

    big = b"x" * 300  # a two-byte remaining length
    data = (
        _publish(b"a/1/data", 7, b'{"v": 1}', 1)
        + _publish(b"a/2/data", 0, big, 0)
        + b"\xd0\x00"  # a PINGRESP: paho's
        + _publish(b"a/3/data", 9, b'{"v": 3}', 1)
    )
    sock = ReadAhead(_Socket(data))  # type: ignore[arg-type]
    assert sock.recv(1) == data[:1] and sock.pending() == len(data) - 1
    sock._at = 0  # (as if that byte had not been read)
    got: list[Received] = []
    assert sock.take_publishes(got.append) == 2
    assert [(m.topic, m.mid, m.qos, m.payload) for m in got] == [
        ("a/1/data", 7, 1, b'{"v": 1}'),
        ("a/2/data", 0, 0, big),
    ]
    assert sock.recv(2) == b"\xd0\x00"  # left for paho, in order
    whole = _publish(b"a/3/data", 9, b'{"v": 3}', 1)
    cut = ReadAhead(_Socket(whole[:-1]))  # type: ignore[arg-type]
    cut.recv(0)
    assert cut.take_publishes(got.append) == 0 and cut.pending() == len(whole) - 1


_packets = st.lists(
    st.tuples(
        st.binary(min_size=1, max_size=40),  # topic
        st.integers(1, 65535),  # mid
        st.binary(max_size=600),  # payload
        st.sampled_from([0, 1]),
    ),
    max_size=8,
)


@settings(max_examples=300, deadline=None)
@given(packets=_packets, tail=st.binary(max_size=64), cut=st.integers(0, 64))
def test_the_read_ahead_parser_takes_exactly_the_whole_publishes_and_never_raises(
    packets: list[tuple[bytes, int, bytes, int]], tail: bytes, cut: int
) -> None:
    """Fuzzed: whole PUBLISH packets followed by anything (garbage, a packet cut short):
    every whole one is taken as it was sent, in order; nothing past them is consumed; the
    rest is left, byte for byte, to paho's own parser, which answers a malformed packet."""
    from datonis_edge.adapters.mqtt_listener.client import ReadAhead, Received

    wire = b"".join(_publish(t, m, p, q) for t, m, p, q in packets)
    rest = tail[: max(0, len(tail) - cut)]
    sock = ReadAhead(_Socket(wire + rest))  # type: ignore[arg-type]
    sock.recv(0)  # fills the read-ahead
    got: list[Received] = []
    taken = sock.take_publishes(got.append)
    assert taken >= len(packets)
    sent = [(t.decode("utf-8", "replace"), m if q else 0, q, p) for t, m, p, q in packets]
    assert [(r.topic, r.mid, r.qos, r.payload) for r in got[: len(packets)]] == sent
    # what a garbage tail was taken for is whatever bytes it framed; nothing beyond the data
    assert 0 <= sock.pending() <= len(rest)
    left = sock.recv(sock.pending()) if sock.pending() else b""
    assert (wire + rest).endswith(left)


@settings(max_examples=500, deadline=None)
@given(data=st.binary(max_size=200))
def test_the_read_ahead_parser_never_raises_on_garbage(data: bytes) -> None:
    from datonis_edge.adapters.mqtt_listener.client import ReadAhead, Received

    sock = ReadAhead(_Socket(data))  # type: ignore[arg-type]
    sock.recv(0)
    got: list[Received] = []
    sock.take_publishes(got.append)
    assert 0 <= sock.pending() <= len(data)
    assert sum(len(r.payload) for r in got) <= len(data)
