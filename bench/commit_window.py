"""Commits at low rates: QoS-1 MQTT messages at a fixed rate into the mqtt_listener.

A paho publisher sends `rate` messages a second for `seconds` into a real mosquitto; the
gateway's mqtt_listener stores them (the platform is unreachable: delivery is not measured).
Reported: messages stored a second, outbox commits (fsyncs) a second, gateway CPU, and two
latencies:

- `puback_*_ms` at the publisher, publish → on_publish: the broker's PUBACK to the publisher
  (mosquitto answers it on receipt: it does not include the gateway);
- `gateway_ack_*_ms`, measured by a TCP relay between mosquitto and the gateway: the broker's
  PUBLISH to the gateway → the gateway's PUBACK, i.e. the time to make the message durable;
- `e2e_ack_*_ms`: publish → the gateway's PUBACK for that message (the relay reads the
  message's `seq`): the above plus the broker's hop and its queue (mosquitto keeps at most
  20 messages in flight to a subscriber, the rest wait in its queue).

`--pipeline` runs the whole way instead, as bench/peer_thingsboard.py does for this gateway:
the peer load (raw MQTT, QoS 1, 3 datapoints a message) → mosquitto as it comes (no
TCP_NODELAY) → mqtt_listener → outbox → `mqtt_broker` uplink → a second mosquitto → the
sink, at 1,000 / 2,000 / 3,000 msg/s; reported: the gateway's CPU seconds per message (robust
to a contended machine, unlike % of a core) and per thread, commits (fsyncs) a second, lost
datapoints. `--quick`: shorter steps, fewer rates (a smoke run).

Run it for the code before a change with `PYTHONPATH=<worktree>/src python bench/commit_window.py
before` (the gateway process inherits PYTHONPATH)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from common import CLK, Edge, cloud, cpu_seconds, free_port, report, wait_until
from helpers import Mosquitto  # common put tests/ on the path


def _remaining_length(buf: bytearray, at: int) -> tuple[int, int] | None:
    """(length, header size) of the packet at `at`, or None while incomplete."""
    mult, value = 1, 0
    for i in range(1, 5):
        if at + i >= len(buf):
            return None
        byte = buf[at + i]
        value += (byte & 0x7F) * mult
        if not byte & 0x80:
            return value, i + 1
        mult *= 128
    raise ValueError("bad MQTT remaining length")


class AckRelay:
    """A TCP relay between the gateway and the broker that times each QoS-1 PUBLISH to the
    gateway until the gateway's PUBACK for it."""

    def __init__(self, broker_port: int) -> None:
        self.broker_port = broker_port
        self.port = free_port()
        self.sent: dict[int, tuple[float, int]] = {}  # packet id: (time, seq)
        self.latencies: list[float] = []
        self.acked_at: dict[int, float] = {}  # seq: when the gateway acknowledged it
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def start(self) -> AckRelay:
        self._thread.start()
        ready = asyncio.run_coroutine_threadsafe(self._serve(), self._loop)
        ready.result(10)
        return self

    def reset(self) -> None:
        self._loop.call_soon_threadsafe(self.latencies.clear)

    async def _serve(self) -> None:
        self._server = await asyncio.start_server(self._client, "127.0.0.1", self.port)

    async def _client(self, r_gw: asyncio.StreamReader, w_gw: asyncio.StreamWriter) -> None:
        r_br, w_br = await asyncio.open_connection("127.0.0.1", self.broker_port)
        await asyncio.gather(
            self._pipe(r_br, w_gw, self._from_broker),
            self._pipe(r_gw, w_br, self._from_gateway),
            return_exceptions=True,
        )

    async def _pipe(self, reader, writer, packet) -> None:  # type: ignore[no-untyped-def]
        buf = bytearray()
        try:
            while data := await reader.read(65536):
                writer.write(data)
                buf += data
                at = 0
                while (rl := _remaining_length(buf, at)) is not None:
                    length, head = rl
                    if at + head + length > len(buf):
                        break
                    packet(buf[at], bytes(buf[at + head : at + head + length]))
                    at += head + length
                del buf[:at]
                await writer.drain()
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    def _from_broker(self, first: int, body: bytes) -> None:
        if first >> 4 == 3 and (first >> 1) & 3 == 1:  # PUBLISH, QoS 1
            topic_len = int.from_bytes(body[:2], "big")
            pid = int.from_bytes(body[2 + topic_len : 4 + topic_len], "big")
            seq = json.loads(body[4 + topic_len :])["seq"]
            self.sent.setdefault(pid, (time.perf_counter(), seq))  # a redelivery: the first

    def _from_gateway(self, first: int, body: bytes) -> None:
        if first >> 4 == 4:  # PUBACK
            sent = self.sent.pop(int.from_bytes(body[:2], "big"), None)
            if sent is not None:
                now = time.perf_counter()
                self.latencies.append(now - sent[0])
                self.acked_at[sent[1]] = now

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._server.close)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)


def publish_at(port: int, rate: int, seconds: float) -> tuple[int, list[float], dict[int, float]]:
    """Publish `rate` QoS-1 messages a second: (messages sent, the broker's PUBACK latencies,
    when each seq was published)."""
    started: dict[int, float] = {}
    acked: dict[int, float] = {}
    published: dict[int, float] = {}
    client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id="bench-pub")
    client.max_inflight_messages_set(65_000)
    client.max_queued_messages_set(0)
    client.on_publish = lambda _c, _u, mid, _rc, _p: acked.__setitem__(mid, time.perf_counter())
    client.connect("127.0.0.1", port)
    client.loop_start()
    t0 = time.perf_counter()
    sent = 0
    while (now := time.perf_counter()) - t0 < seconds:
        due = int((now - t0) * rate) + 1
        while sent < due:
            payload = b'{"seq": %d, "temperature": %d, "running": true}' % (sent, sent % 50)
            at = time.perf_counter()
            info = client.publish(f"plant/press-{sent % 10}/data", payload, qos=1)
            started[info.mid] = published[sent] = at
            sent += 1
        time.sleep(0.001)
    wait_until(lambda: len(acked) >= sent, 30, "PUBACKs from the broker")
    client.disconnect()
    client.loop_stop()
    return sent, [acked[mid] - t for mid, t in started.items() if mid in acked], published


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return round(values[min(len(values) - 1, int(len(values) * p))] * 1000, 2)


def run(rate: int, seconds: int = 10, label: str = "") -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-window-") as d:
        tmp = Path(d)
        broker = Mosquitto(tmp).start()
        relay = AckRelay(broker.port).start()
        config = {
            "cloud": cloud(f"http://127.0.0.1:{free_port()}"),  # unreachable: ingestion alone
            "outbox": {"max_bytes": 8 << 30},
            "services": [
                {
                    "name": "mqtt",
                    "type": "mqtt_listener",
                    "port": relay.port,
                    "topics": ["plant/+/data"],
                    "thing_key_topic_level": 1,
                }
            ],
        }
        edge = Edge(tmp, config).start()
        try:
            wait_until(lambda: _connected(edge), 30, "the mqtt_listener connected")
            time.sleep(0.5)  # its SUBSCRIBE follows the connection
            st0 = edge.status()
            cpu0, t0 = cpu_seconds(edge.pid), time.perf_counter()
            sent, puback, published = publish_at(broker.port, rate, seconds)
            wait_until(
                lambda: edge.status()["counters"]["accepted"] - st0["counters"]["accepted"] >= sent,
                60,
                "every message stored",
            )
            elapsed = time.perf_counter() - t0
            cpu = cpu_seconds(edge.pid) - cpu0
            st = edge.status()
        finally:
            edge.stop()
            relay.stop()
            broker.stop()
    stored = st["counters"]["accepted"] - st0["counters"]["accepted"]
    commits = st["outbox"]["commits"] - st0["outbox"]["commits"]
    acks = relay.latencies
    e2e = [relay.acked_at[seq] - t for seq, t in published.items() if seq in relay.acked_at]
    return report(
        f"commit window {rate}/s {label}".strip(),
        messages=sent,
        stored_per_s=round(stored / elapsed),
        commits_per_s=round(commits / elapsed),
        messages_per_commit=round(stored / max(1, commits), 1),
        puback_p50_ms=pct(puback, 0.5),
        puback_p99_ms=pct(puback, 0.99),
        gateway_ack_p50_ms=pct(acks, 0.5),
        gateway_ack_p99_ms=pct(acks, 0.99),
        gateway_ack_mean_ms=round(statistics.fmean(acks) * 1000, 2) if acks else None,
        e2e_ack_p50_ms=pct(e2e, 0.5),
        e2e_ack_p99_ms=pct(e2e, 0.99),
        gateway_cpu_cores=round(cpu / elapsed, 2),
        cpu_ms_per_msg=round(1000 * cpu / max(1, sent), 3),
    )


def cpu_seconds_of(stat: str) -> float:
    fields = Path(stat).read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK


def thread_cpu(pid: int) -> dict[int, float]:
    """CPU seconds of each of the process's threads."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(OSError):
            out[int(tid)] = cpu_seconds_of(f"/proc/{pid}/task/{tid}/stat")
    return out


def thread_names(pid: int) -> dict[int, str]:
    """Python's names of the gateway's threads (read from a running process: py-spy, when
    installed; else the thread ids stand)."""
    spy = shutil.which("py-spy")
    if spy is None:
        return {}
    out = subprocess.run([spy, "dump", "-p", str(pid)], capture_output=True, text=True).stdout
    return {int(m[1]): m[2] for m in re.finditer(r'Thread (\d+) \(\w+\): "([^"]+)"', out)}


def pipeline(rates: tuple[int, ...], seconds: float, label: str = "") -> list[dict]:
    """The peer pipeline (module docstring), QoS 1, for this gateway only."""
    from peer.pipeline import Pipeline, run_rate

    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-window-pipeline-") as d:
        p = Pipeline(Path(d), "datonis-edge").start()
        try:
            assert p.edge is not None
            names = thread_names(p.pid)
            for rate in rates:
                st0, threads0 = p.edge.status(), thread_cpu(p.pid)
                cpu0, t0 = cpu_seconds(p.pid), time.perf_counter()
                row = run_rate(p, 1, rate, seconds, quiet_s=10)
                cpu, elapsed = cpu_seconds(p.pid) - cpu0, time.perf_counter() - t0
                threads, st = thread_cpu(p.pid), p.edge.status()
                commits = st["outbox"]["commits"] - st0["outbox"]["commits"]
                per_thread = {
                    names.get(tid, str(tid)): round(1000 * (s - threads0.get(tid, 0)) / row.sent, 3)
                    for tid, s in threads.items()
                    if s - threads0.get(tid, 0) >= 0.05
                }
                rows.append(
                    report(
                        f"commit window pipeline {rate}/s {label}".strip(),
                        messages=row.sent,
                        lost_dp=row.lost,
                        duplicate_dp=row.duplicates,
                        cpu_ms_per_msg=round(1000 * cpu / max(1, row.sent), 3),
                        cpu_pct_of_a_core=round(row.cpu_pct, 1),
                        commits_per_s=round(commits / elapsed),
                        messages_per_commit=round(row.sent / max(1, commits), 1),
                        cpu_ms_per_msg_by_thread=per_thread,
                        load_average=float(Path("/proc/loadavg").read_text().split()[0]),
                    )
                )
        finally:
            p.stop()
    return rows


def _connected(edge: Edge) -> bool:
    return any(s["state"] == "connected" for s in edge.status()["services"])


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Commits at low MQTT rates (mqtt_listener).")
    parser.add_argument("label", nargs="?", default="", help="e.g. before / after")
    parser.add_argument("--seconds", type=int, default=None, help="per step (10; quick: 3)")
    parser.add_argument("--pipeline", action="store_true", help="the whole way (docstring)")
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    args = parser.parse_args()
    seconds = args.seconds or (3 if args.quick else 10)
    if args.pipeline:
        pipeline((2000,) if args.quick else (1000, 2000, 3000), seconds, args.label)
    else:
        for rate in (500, 2000) if args.quick else (500, 2000, 3000):
            run(rate, seconds, args.label)
