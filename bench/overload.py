"""Overload and MQTT→MQTT throughput: load generator → mosquitto → gateway → mosquitto → sink.

A load generator (its own process, raw MQTT on a socket: pre-encoded QoS-1 PUBLISH packets, so
that it costs little of the CPU the gateway needs) publishes `rate` messages a second of three
datapoints each (`seq`, `temperature`, `running`) to a source mosquitto; the gateway's
mqtt_listener reads them, stores them and its `mqtt_broker` uplink publishes them to a second
mosquitto, where a sink counts distinct `seq`s and duplicates. Reported per rate: offered and
delivered datapoints a second, lost (acknowledged by the source broker, never at the sink),
duplicates, gateway CPU (cores) and peak RSS, the largest backlog the gateway's status showed
(messages waiting, age of the oldest) and whether the listener's connection ever dropped.

The source broker is configured as docs/durability.md asks of an operator's broker: no limit
on the messages queued for the gateway's session (`max_queued_messages 0`) and a wide inflight
window (`max_inflight_messages 1000`).

Quick: `python bench/overload.py --quick` (5 s per rate, overload 10 s)."""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing as mp
import queue
import re
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from common import Edge, cloud, cpu_seconds, free_port, peak_rss_mb, report, wait_until
from helpers import mosquitto_binary, wait_port

THINGS = 10
SEQ = re.compile(rb'"seq":(\d+)')


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        n, byte = n >> 7, n & 0x7F
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _publish_packet(topic: bytes, mid: int, payload: bytes, qos: int) -> bytes:
    body = len(topic).to_bytes(2, "big") + topic
    if qos:
        body += mid.to_bytes(2, "big")
    body += payload
    return bytes([0x30 | (qos << 1)]) + _varint(len(body)) + body


def _connect_packet(client_id: str) -> bytes:
    cid = client_id.encode()
    body = b"\x00\x04MQTT\x04\x02\x00\x3c" + len(cid).to_bytes(2, "big") + cid
    return b"\x10" + _varint(len(body)) + body


def generate(port: int, rate: int, seconds: float, first_seq: int, qos: int, out: Any) -> None:
    """Publish `rate` messages a second for `seconds`; put (sent, acknowledged by the broker)."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.sendall(_connect_packet(f"bench-load-{first_seq}"))
    assert sock.recv(4)[:1] == b"\x20", "no CONNACK"
    acked = [0]

    def read_acks() -> None:
        while data := sock.recv(1 << 16):
            acked[0] += len(data)  # PUBACKs only: 4 bytes each

    reader = threading.Thread(target=read_acks, daemon=True)
    reader.start()
    topics = [f"plant/press-{k}/data".encode() for k in range(THINGS)]
    t0 = time.perf_counter()
    sent = 0
    while (now := time.perf_counter()) - t0 < seconds:
        due = min(int((now - t0) * rate) + 1, int(seconds * rate))
        chunk = []
        while sent < due:
            seq = first_seq + sent
            payload = b'{"seq":%d,"temperature":%d,"running":true}' % (seq, seq % 50)
            chunk.append(_publish_packet(topics[seq % THINGS], sent % 65535 + 1, payload, qos))
            sent += 1
        if chunk:
            sock.sendall(b"".join(chunk))
        time.sleep(0.002)
    if qos:
        deadline = time.monotonic() + 60
        while acked[0] // 4 < sent and time.monotonic() < deadline:
            time.sleep(0.01)
    out.put((sent, acked[0] // 4 if qos else sent))
    sock.close()


class Sink:
    """Counts distinct seqs and duplicates in the events the uplink publishes."""

    def __init__(self, port: int) -> None:
        self.seen: set[int] = set()
        self.received = 0
        self.last_at = 0.0
        self.lock = threading.Lock()
        self.client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2)
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.subscribe("bench/#", qos=1)
        self.client.loop_start()

    def _on_message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        seqs = [int(s) for s in SEQ.findall(msg.payload)]
        with self.lock:
            self.received += len(seqs)
            self.seen.update(seqs)
            self.last_at = time.perf_counter()

    def distinct(self) -> int:
        with self.lock:
            return len(self.seen)

    def stop(self) -> None:
        self.client.loop_stop()


def broker(tmp: Path, name: str, extra: str = "") -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    conf = tmp / f"{name}.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\n{extra}")
    log = open(tmp / f"{name}.log", "ab")  # noqa: SIM115
    proc = subprocess.Popen([mosquitto_binary(), "-c", str(conf)], stdout=log, stderr=log)
    wait_port(port)
    return proc, port


def _listener(edge: Edge) -> dict[str, Any]:
    return next(s for s in edge.status()["services"] if s["name"] == "mqtt")


def run_rates(
    rates: list[int],
    seconds: float,
    label: str = "",
    inflight: int = 1000,
    qos: int = 1,
    queued: int = 0,
) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-overload-") as d:
        tmp = Path(d)
        src, src_port = broker(
            tmp,
            "source",
            f"max_queued_messages {queued}\nmax_inflight_messages {inflight}\n",
        )
        dst, dst_port = broker(tmp, "sink")
        sink = Sink(dst_port)
        config = {
            "cloud": cloud(
                f"mqtt://127.0.0.1:{dst_port}",
                protocol="mqtt_broker",
                topic="bench/{thing_key}/events",
                bulk_max_elements=2000,
                bulk_transmit_interval_ms=20,
                max_inflight_batches=8,
            ),
            "outbox": {"max_bytes": 8 << 30},
            "services": [
                {
                    "name": "mqtt",
                    "type": "mqtt_listener",
                    "port": src_port,
                    "topics": ["plant/+/data"],
                    "thing_key_topic_level": 1,
                }
            ],
        }
        edge = Edge(tmp, config).start()
        try:
            wait_until(lambda: _listener(edge)["state"] == "connected", 30, "listener connected")
            time.sleep(0.5)  # its SUBSCRIBE follows the connection
            first = 0
            for rate in rates:
                rows.append(_one_rate(edge, sink, src_port, rate, seconds, first, qos, label))
                first += int(rate * seconds) + 1
        finally:
            edge.stop()
            sink.stop()
            for p in (src, dst):
                p.terminate()
                p.wait(10)
    return rows


def _one_rate(
    edge: Edge, sink: Sink, port: int, rate: int, seconds: float, first: int, qos: int, label: str
) -> dict:
    before, dup0 = sink.distinct(), sink.received - sink.distinct()
    drops0 = _drops(edge)
    cpu0, t0 = cpu_seconds(edge.pid), time.perf_counter()
    out: mp.Queue = mp.Queue()
    gen = mp.Process(target=generate, args=(port, rate, seconds, first, qos, out))
    gen.start()
    max_waiting = max_age = 0.0
    result = None
    while result is None:
        detail = _listener(edge).get("details", {})
        max_waiting = max(max_waiting, detail.get("backlog_messages", 0))
        max_age = max(max_age, detail.get("backlog_age_s", 0.0))
        with contextlib.suppress(queue.Empty):  # not done yet
            result = out.get(timeout=0.5)
    gen.join()
    sent, acked = result  # sent: what the generator wrote; acked: what the broker took
    # then wait for the gateway to catch up: until every message arrived or nothing moves for 15 s
    last, still = -1, time.monotonic()
    while (got := sink.distinct() - before) < acked and time.monotonic() - still < 15:
        if got != last:
            last, still = got, time.monotonic()
        detail = _listener(edge).get("details", {})
        max_waiting = max(max_waiting, detail.get("backlog_messages", 0))
        max_age = max(max_age, detail.get("backlog_age_s", 0.0))
        time.sleep(0.2)
    elapsed = max(sink.last_at, t0 + seconds) - t0
    cpu = cpu_seconds(edge.pid) - cpu0
    got = sink.distinct() - before
    return report(
        f"overload {rate} msg/s{' ' + label if label else ''}",
        seconds=seconds,
        qos=qos,
        offered_dp_s=round(3 * sent / seconds),
        refused_by_broker=sent - acked,
        delivered_dp_s=round(3 * got / elapsed),
        lost_dp=3 * (acked - got),
        duplicates=(sink.received - sink.distinct()) - dup0,
        gateway_cpu_cores=round(cpu / elapsed, 2),
        gateway_cpu_us_per_msg=round(cpu / max(1, got) * 1e6, 1),
        gateway_peak_rss_mb=round(peak_rss_mb(edge.pid), 1),
        max_backlog_messages=int(max_waiting),
        max_backlog_age_s=round(max_age, 2),
        listener_drops=_drops(edge) - drops0,
        catch_up_s=round(elapsed - seconds, 2),
    )


def _drops(edge: Edge) -> int:
    return int(_listener(edge).get("counters", {}).get("disconnects", 0))


def run(quick: bool = False, label: str = "") -> list[dict]:
    seconds = 5 if quick else 20
    rows = run_rates([5_000, 10_000, 20_000, 30_000, 35_000], seconds, label)
    rows += run_rates([40_000], 10 if quick else 60, label)
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="MQTT→MQTT throughput and overload.")
    parser.add_argument("label", nargs="?", default="", help="e.g. before / after")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rates", help="comma-separated msg/s, e.g. 10000,30000")
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--inflight", type=int, default=1000)
    parser.add_argument("--qos", type=int, default=1)
    parser.add_argument(
        "--queued", type=int, default=0, help="the source broker's max_queued_messages (0: none)"
    )
    args = parser.parse_args()
    if args.rates:
        run_rates(
            [int(r) for r in args.rates.split(",")],
            args.seconds,
            args.label,
            args.inflight,
            args.qos,
            args.queued,
        )
    else:
        run(args.quick, args.label)
