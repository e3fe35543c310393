"""Failover: time from SIGKILL of the master to a standby answering `role: master`, and to the
first batch the new master delivers; clean hand-over (SIGTERM) time. Local filesystem."""

from __future__ import annotations

import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import yaml

from common import EDGE, Sim, api_token, cloud, free_port, report, wait_until


class Node:
    def __init__(self, tmp: Path, datadir: Path, name: str, config: Path | None) -> None:
        self.port = free_port()
        self.args = [
            EDGE,
            "run",
            "--datadirpath",
            str(datadir),
            "--http-port",
            str(self.port),
            "--http-host",
            "127.0.0.1",
            "--instance-id",
            name,
            "--log-level",
            "warning",
        ]
        if config:
            self.args += ["--config", str(config)]
        self.log = open(tmp / f"{name}.log", "ab")  # noqa: SIM115
        self.http = httpx.Client(
            base_url=f"http://127.0.0.1:{self.port}",
            timeout=2,
            headers={"Authorization": f"Bearer {api_token(datadir, f'bench-{name}')}"},
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Node:
        self.proc = subprocess.Popen(self.args, stdout=self.log, stderr=subprocess.STDOUT)
        wait_until(lambda: self.role() in ("master", "standby"), 30, "node up")
        if "--config" in self.args:
            self.args = self.args[: self.args.index("--config")]
        return self

    def role(self) -> str | None:
        try:
            return self.http.get("/api/v1/status").json()["role"]
        except (httpx.HTTPError, ValueError):
            return None


def _first_delivery_s(sim_url: str, epoch: int) -> float | None:
    for r in httpx.get(f"{sim_url}/sim/requests").json()["requests"]:
        if r["status"] == 200 and r["epoch"] == epoch:
            return r["ms"] / 1000
    return None


def run(kills: int = 20) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-failover-") as d:
        tmp = Path(d)
        sim = Sim(tmp).start()
        cfg = tmp / "edge.yaml"
        cfg.write_text(
            yaml.safe_dump(
                {
                    "cloud": cloud(sim.url, bulk_transmit_interval_ms=20),
                    "services": [
                        {
                            "name": "line",
                            "type": "simulator",
                            "scan_interval_ms": 20,
                            "things": [
                                {
                                    "thing_key": "press-1",
                                    "metrics": [{"name": "n", "tag": "counter(0, 1)"}],
                                }
                            ],
                        }
                    ],
                }
            )
        )
        datadir = tmp / "data"
        nodes = [Node(tmp, datadir, "node-0", cfg).start()]
        nodes += [Node(tmp, datadir, f"node-{i}", None).start() for i in (1, 2)]
        to_master, to_delivery = [], []
        for _ in range(kills):
            master = next(n for n in nodes if n.role() == "master")
            others = [n for n in nodes if n is not master]
            wait_until(lambda o=others: all(n.role() == "standby" for n in o), 10, "standbys ready")
            assert master.proc
            killed_at = time.time()
            master.proc.send_signal(signal.SIGKILL)
            httpx.post(f"{sim.url}/sim/reset")
            new = None
            while new is None:
                new = next((n for n in others if n.role() == "master"), None)
            to_master.append(time.time() - killed_at)
            epoch = new.http.get("/api/v1/status").json()["epoch"]
            to_delivery.append(
                wait_until(lambda e=epoch: _first_delivery_s(sim.url, e), 10, "delivery")
                - killed_at
            )
            master.proc.wait()
            master.start()
        handovers = []
        for _ in range(5):
            master = next(n for n in nodes if n.role() == "master")
            others = [n for n in nodes if n is not master]
            wait_until(lambda o=others: all(n.role() == "standby" for n in o), 10, "standbys ready")
            assert master.proc
            t = time.time()
            master.proc.send_signal(signal.SIGTERM)
            while not any(n.role() == "master" for n in others):
                pass
            handovers.append(time.time() - t)
            master.proc.wait(10)
            master.start()
        for n in nodes:
            assert n.proc
            n.proc.terminate()
            n.proc.wait(10)
        sim.stop()
    return report(
        "failover (local filesystem)",
        sigkills=kills,
        kill_to_master_median_s=round(statistics.median(to_master), 3),
        kill_to_master_max_s=round(max(to_master), 3),
        kill_to_first_delivery_median_s=round(statistics.median(to_delivery), 3),
        kill_to_first_delivery_max_s=round(max(to_delivery), 3),
        sigterm_handover_median_s=round(statistics.median(handovers), 3),
        sigterm_handover_max_s=round(max(handovers), 3),
    )


if __name__ == "__main__":
    run(int(sys.argv[1]) if len(sys.argv) > 1 else 20)
