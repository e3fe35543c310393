"""One pipeline of the peer bench: load → southbound mosquitto → a gateway → northbound
mosquitto → sink, and the steps run on it (a rate step, an outage of the northbound broker)."""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common import Edge, cpu_seconds, peak_rss_mb, wait_until
from helpers import Mosquitto  # common put tests/ on the path
from peer import thingsboard

HERE = Path(__file__).resolve().parent
PER_PUBLISHER = 10_000  # msg/s one load process is asked for at most
KEYS = 3  # datapoints per message


@dataclass
class Row:
    gateway: str
    qos: int
    step: str
    rate: int
    achieved: float = 0.0  # msg/s the publishers reached
    sent: int = 0  # messages
    delivered_dps: float = 0.0
    lost: int = 0
    duplicates: int = 0
    cpu_pct: float = 0.0
    rss_mb: float = 0.0
    first_delivery_s: float | None = None
    drain_dps: float | None = None
    lag_s: float = 0.0  # the last delivery after the last publish
    notes: list[str] = field(default_factory=list)

    @property
    def behind(self) -> bool:
        too_slow = self.delivered_dps < 0.8 * self.achieved * KEYS
        return too_slow or self.lost > 0.01 * self.sent * KEYS


class Pipeline:
    def __init__(
        self, tmp: Path, gateway: str, tb_python: Path | None = None, strace: bool = False
    ) -> None:
        self.tmp = tmp
        self.strace = tmp / "tb.strace" if strace else None
        self.gateway = gateway
        self.tb_python = tb_python
        self.south = Mosquitto(tmp)
        self.north = Mosquitto(tmp)
        self.state = tmp / "sink.json"
        self.procs: list[subprocess.Popen[bytes]] = []
        self.edge: Edge | None = None
        self.tb: subprocess.Popen[bytes] | None = None
        self.log = tmp / f"{gateway}.log"

    # -- life -------------------------------------------------------------------------------

    def start(self) -> Pipeline:
        self.south.start()
        self.north.start()
        sink = subprocess.Popen(
            [
                *(sys.executable, str(HERE / "sink.py")),
                *("--port", str(self.north.port), "--state", str(self.state)),
            ],
            cwd=HERE.parent,
            env=_bench_env(),
        )
        self.procs.append(sink)
        wait_until(lambda: self.sink()["connects"], 20, "the sink subscribed")
        if self.gateway == "datonis-edge":
            (self.tmp / "edge").mkdir()
            self.edge = Edge(self.tmp / "edge", self._edge_config())
            self.edge.start()
            wait_until(self._listener_connected, 30, "the mqtt_listener connected")
        else:
            assert self.tb_python
            folder = thingsboard.write_config(self.tmp / "tb", self.south.port, self.north.port)
            self.tb = subprocess.Popen(
                thingsboard.command(self.tb_python, self.strace),
                cwd=folder,
                env=thingsboard.env(folder),
                stdout=open(self.log, "ab"),  # noqa: SIM115 - the child holds it
                stderr=subprocess.STDOUT,
            )
        # end to end before measuring: the gateway's subscription and uplink are up
        deadline = time.monotonic() + 90
        while self.sink()["steps"].get("warmup", {}).get("distinct", 0) < 10 * KEYS:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.gateway}: no warm-up datapoint in 90 s; see {self.log}")
            self.publish("warmup", 10, 1.0, 1)
        return self

    def stop(self) -> None:
        if self.edge:
            self.edge.stop()
        if self.tb and self.tb.poll() is None:
            # SIGINT is its clean stop; under strace, to the traced gateway (strace detaches)
            gateway = _children(self.tb.pid) if self.strace else [self.tb.pid]
            _signal(gateway, signal.SIGINT)
            try:
                self.tb.wait(20)
            except subprocess.TimeoutExpired:
                _signal(gateway, signal.SIGKILL)
                self.tb.kill()
                self.tb.wait(5)
        for proc in self.procs:
            proc.terminate()
            proc.wait(10)
        self.north.stop()
        self.south.stop()
        log = self.gateway_log()
        (thingsboard.CACHE / f"{self.gateway}-last.log").write_text(log)  # kept for a look
        blocked = [line for line in log.splitlines() if "BLOCKED" in line]
        if self.strace and self.strace.exists():
            blocked += thingsboard.beyond_loopback(self.strace)
        if blocked:
            raise RuntimeError(f"{self.gateway} tried to leave loopback: {blocked}")

    def gateway_log(self) -> str:
        path = self.log if self.tb else self.tmp / "edge" / "edge.log"
        return path.read_text(errors="replace") if path.exists() else ""

    @property
    def pid(self) -> int:
        if self.edge:
            return self.edge.pid
        assert self.tb
        return self.tb.pid

    def _edge_config(self) -> dict[str, Any]:
        return {
            "cloud": {
                "protocol": "mqtt_broker",
                "endpoint": f"mqtt://127.0.0.1:{self.north.port}",
                "topic": "edge/events",
                "bulk_max_elements": 500,
                "bulk_transmit_interval_ms": 200,
                "heartbeat_interval_ms": 0,
            },
            "services": [
                {
                    "name": "south",
                    "type": "mqtt_listener",
                    "port": self.south.port,
                    "topics": ["plant/+/data"],
                    "thing_key_topic_level": 1,
                    "timestamp_key": "ts",
                    "timestamp_unit": "ms",
                }
            ],
        }

    def _listener_connected(self) -> bool:
        assert self.edge
        return any(s["state"] == "connected" for s in self.edge.status()["services"])

    # -- load and counts ---------------------------------------------------------------------

    def sink(self) -> dict[str, Any]:
        try:
            return json.loads(self.state.read_text())
        except (OSError, ValueError):
            return {"steps": {}, "connects": []}

    def step_counts(self, step: str) -> dict[str, Any]:
        return self.sink()["steps"].get(step, {"distinct": 0, "total": 0, "last_at": 0.0})

    def start_load(self, step: str, rate: int, seconds: float, qos: int) -> list[Any]:
        n = max(1, math.ceil(rate / PER_PUBLISHER))
        return [
            subprocess.Popen(
                [
                    *(sys.executable, str(HERE / "load.py"), "--port", str(self.south.port)),
                    *("--prefix", f"{step}-p{i}", "--rate", str(rate / n)),
                    *("--seconds", str(seconds), "--qos", str(qos)),
                ],
                stdout=subprocess.PIPE,
            )
            for i in range(n)
        ]

    def publish(self, step: str, rate: int, seconds: float, qos: int) -> int:
        return sum(r["sent"] for r in _results(self.start_load(step, rate, seconds, qos)))


class CpuClock:
    """The gateway's CPU seconds sampled every 0.2 s by the caller, read back at a moment."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.samples: list[tuple[float, float]] = [(time.time(), cpu_seconds(pid))]

    def sample(self) -> None:
        self.samples.append((time.time(), cpu_seconds(self.pid)))

    def at(self, when: float) -> float:
        return min(self.samples, key=lambda s: abs(s[0] - when))[1]


def run_rate(p: Pipeline, qos: int, rate: int, seconds: float, quiet_s: float) -> Row:
    step = f"r{rate}q{qos}"
    clock = CpuClock(p.pid)
    procs = p.start_load(step, rate, seconds, qos)
    while any(proc.poll() is None for proc in procs):
        clock.sample()
        time.sleep(0.2)
    results = _results(procs)
    sent = sum(r["sent"] for r in results)
    deadline = time.time() + 120
    while time.time() < deadline:  # every datapoint, or none for quiet_s; CPU sampled
        clock.sample()
        c = p.step_counts(step)
        if c["distinct"] >= sent * KEYS or (c["last_at"] and time.time() - c["last_at"] > quiet_s):
            break
        time.sleep(0.2)
    c = p.step_counts(step)
    end = c["last_at"] or time.time()
    row = Row(p.gateway, qos, "rate", rate, sent=sent)
    row.achieved = sent / max(r["seconds"] for r in results)
    t0 = min(r["started"] for r in results)  # the first publish → the last delivery
    row.delivered_dps = c["distinct"] / max(end - t0, 1e-6)
    row.lost = sent * KEYS - c["distinct"]
    row.duplicates = c["total"] - c["distinct"]
    row.cpu_pct = 100 * (clock.at(end) - clock.at(t0)) / max(end - t0, 1e-6)
    row.lag_s = end - (t0 + max(r["seconds"] for r in results))
    row.rss_mb = peak_rss_mb(p.pid)
    if row.achieved < 0.95 * rate:
        row.notes.append(f"publishers reached {row.achieved:,.0f} msg/s")
    return row


def run_outage(p: Pipeline, rate: int, outage_s: float, before_s: float, quiet_s: float) -> Row:
    """Load at `rate` (QoS 1) for `before_s`, stop the northbound broker for `outage_s` while
    the load goes on, start it again on the same port as the load ends; then the drain."""
    step = f"out{int(outage_s)}"
    clock = CpuClock(p.pid)
    procs = p.start_load(step, rate, before_s + outage_s, 1)
    time.sleep(before_s)
    p.north.stop()
    time.sleep(outage_s)
    base = p.step_counts(step)["distinct"]
    p.north.start()
    back = time.time()
    results = _results(procs)
    sent = sum(r["sent"] for r in results)
    deadline = back + 300
    first = 0.0
    while time.time() < deadline:
        clock.sample()
        connects = [c for c in p.sink()["connects"] if c[0] >= back - 1]
        first = first or (connects[0][1] if connects and connects[0][1] else 0.0)
        c = p.step_counts(step)
        if c["distinct"] >= sent * KEYS:
            break
        if first and time.time() - max(first, c["last_at"]) > quiet_s:
            break
        time.sleep(0.2)
    c = p.step_counts(step)
    row = Row(p.gateway, 1, f"{outage_s:g} s outage", rate, sent=sent)
    row.achieved = sent / max(r["seconds"] for r in results)
    row.lost = sent * KEYS - c["distinct"]
    row.duplicates = c["total"] - c["distinct"]
    t0, cpu0 = clock.samples[0]
    end = c["last_at"] or time.time()
    row.cpu_pct = 100 * (clock.at(end) - cpu0) / max(end - t0, 1e-6)
    row.rss_mb = peak_rss_mb(p.pid)
    row.delivered_dps = c["distinct"] / max(end - t0, 1e-6)
    if first:
        row.first_delivery_s = first - back
        if c["last_at"] > first:
            row.drain_dps = (c["distinct"] - base) / (c["last_at"] - first)
    else:
        row.notes.append("nothing delivered after the return")
    return row


def _results(procs: list[Any]) -> list[dict[str, float]]:
    out = []
    for proc in procs:
        stdout, _ = proc.communicate(timeout=120)
        if proc.returncode:
            raise RuntimeError(f"a load process failed ({proc.returncode})")
        out.append(json.loads(stdout))
    return out


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(c) for c in path.read_text().split()] if path.exists() else []


def _signal(pids: list[int], sig: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def _bench_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(HERE.parent)}
