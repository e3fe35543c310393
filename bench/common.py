"""Shared pieces of the benchmarks: processes, CPU and RSS readings, wrk runs."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from helpers import EDGE, api_token, free_port, wait_port, wait_until

CLK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


class Sim:
    def __init__(self, tmp: Path, port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(tmp / f"sim-{self.port}.log", "ab")  # noqa: SIM115
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Sim:
        self.proc = subprocess.Popen(
            [
                EDGE,
                "platform-sim",
                "--port",
                str(self.port),
                "--access-key",
                "ak",
                "--secret-key",
                "sk",
                "--no-record",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        wait_port(self.port)
        return self

    def events(self) -> int:
        return httpx.get(f"{self.url}/sim/stats").json()["events"]

    def stop(self) -> None:
        if self.proc:
            self.proc.terminate()
            self.proc.wait(10)


class Edge:
    def __init__(self, tmp: Path, config: dict[str, Any]) -> None:
        self.tmp = tmp
        self.datadir = tmp / "data"
        self.port = free_port()
        cfg = tmp / "edge.yaml"
        cfg.write_text(yaml.safe_dump(config))
        self.args = [
            EDGE,
            "run",
            "--datadirpath",
            str(self.datadir),
            "--config",
            str(cfg),
            "--http-port",
            str(self.port),
            "--http-host",
            "127.0.0.1",
            "--log-level",
            "warning",
        ]
        self.log = open(tmp / "edge.log", "ab")  # noqa: SIM115
        self.proc: subprocess.Popen[bytes] | None = None
        self.auth = {"Authorization": f"Bearer {api_token(self.datadir, 'bench')}"}

    def start(self) -> Edge:
        self.proc = subprocess.Popen(self.args, stdout=self.log, stderr=subprocess.STDOUT)
        wait_until(lambda: self.status()["role"] == "master", 30, "gateway master")
        return self

    def status(self) -> dict[str, Any]:
        return httpx.get(
            f"http://127.0.0.1:{self.port}/api/v1/status", headers=self.auth, timeout=10
        ).json()

    @property
    def pid(self) -> int:
        assert self.proc
        return self.proc.pid

    def stop(self) -> None:
        if self.proc:
            self.proc.terminate()
            self.proc.wait(30)


@dataclass
class Window:
    """What a running gateway did over a measured window (its first service is the one
    measured): the status before and after, CPU, wall time, peak RSS and `counted`, the
    change of whatever else the bench counts (its servers' CPU, what its agents made)."""

    before: dict[str, Any]
    after: dict[str, Any]
    cpu_s: float
    wall_s: float
    peak_rss_mb: float
    counted: float = 0.0

    @property
    def service(self) -> dict[str, Any]:
        return self.after["services"][0]

    @property
    def received(self) -> int:
        """Readings the measured service handed on in the window."""
        before = self.before["services"][0]["counters"].get("received", 0)
        return self.service["counters"].get("received", 0) - before

    @property
    def delivered(self) -> int:
        """Events the platform acknowledged in the window."""
        return self.after["counters"]["delivered"] - self.before["counters"]["delivered"]

    @property
    def cores(self) -> float:
        return round(self.cpu_s / self.wall_s, 3)

    def per_s(self, count: float) -> int:
        return round(count / self.wall_s)


def measure(
    edge: Edge,
    seconds: float,
    warm_up: Callable[[], None] = lambda: time.sleep(3),
    count: Callable[[], float] | None = None,
) -> Window:
    """Let the gateway warm up (first scans, sessions opened), then measure it for `seconds`."""
    warm_up()
    before = edge.status()
    counted0 = count() if count else 0.0
    cpu0, t0 = cpu_seconds(edge.pid), time.perf_counter()
    time.sleep(seconds)
    cpu, wall = cpu_seconds(edge.pid) - cpu0, time.perf_counter() - t0
    counted = (count() if count else 0.0) - counted0
    return Window(before, edge.status(), cpu, wall, peak_rss_mb(edge.pid), counted)


def cloud(endpoint: str, **kw: Any) -> dict[str, Any]:
    c = {
        "protocol": "http",
        "endpoint": endpoint,
        "access_key": "ak",
        "secret_key": "sk",
        "heartbeat_interval_ms": 0,
        "bulk_transmit_interval_ms": 200,
        "retry_max_backoff_ms": 500,
    }
    c.update(kw)
    if c["protocol"] == "mqtt_broker":  # a broker has no Datonis keys
        del c["access_key"], c["secret_key"]
    return c


def thing(thing_key: str, tags: list[dict[str, Any]]) -> dict[str, Any]:
    """A thing with one metric per tag, named as the tag."""
    return {
        "thing_key": thing_key,
        "metrics": [{"name": t["name"], "tag": t["name"]} for t in tags],
    }


def one_service(
    cloud_url: str, service: dict[str, Any], bulk_max_elements: int = 50
) -> dict[str, Any]:
    """A gateway config: one service (a plant), delivered to the platform at `cloud_url`."""
    return {"cloud": cloud(cloud_url, bulk_max_elements=bulk_max_elements), "services": [service]}


def wrk_post(
    url: str, body: bytes, connections: int, seconds: int, threads: int = 1
) -> dict[str, float]:
    if not shutil.which("wrk"):
        raise SystemExit("wrk is not installed; `make bench` installs it with apt-get")
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(
            'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
            f"wrk.body = {json.dumps(body.decode())}\n"
            "done = function(summary, latency, requests)\n"
            '  io.write(string.format("BENCH %d %d %d %d %f\\n", summary.requests, summary.errors.status,'
            " summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,"
            " summary.duration, latency:percentile(99)))\nend\n"
        )
        script = f.name
    out = subprocess.run(
        [
            "wrk",
            "-t",
            str(threads),
            "-c",
            str(connections),
            "-d",
            f"{seconds}s",
            "-s",
            script,
            "--timeout",
            "10s",
            url,
        ],
        capture_output=True,
        text=True,
        timeout=seconds + 60,
    ).stdout
    os.unlink(script)
    m = re.search(r"BENCH (\d+) (\d+) (\d+) (\d+) ([\d.]+)", out)
    if not m:
        raise RuntimeError(f"wrk said:\n{out}")
    requests, bad_status, errors, duration_us, p99_us = m.groups()
    return {
        "requests": int(requests),
        "bad_status": int(bad_status),
        "errors": int(errors),
        "seconds": int(duration_us) / 1e6,
        "p99_ms": float(p99_us) / 1000,
    }


def report(name: str, **numbers: Any) -> dict[str, Any]:
    row = {"bench": name, **numbers}
    print(json.dumps(row), flush=True)
    return row


def timed(fn, *a, **kw):  # type: ignore[no-untyped-def]
    t = time.perf_counter()
    r = fn(*a, **kw)
    return r, time.perf_counter() - t
