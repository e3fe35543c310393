"""Memory of a real gateway process: RSS at idle (no services) and with the 15,000-tag Modbus
TCP configuration (50 devices × 300 tags, one thing per device, polled every second from
pymodbus servers and delivered to the platform simulator), at steady state; and the time and
memory it takes to load and validate that configuration in a fresh interpreter."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from common import Edge, Sim, cloud, peak_rss_mb, report
from modbus import plant

_PARSE = """
import json, sys, time
from datonis_edge.root_config import load_config
t = time.perf_counter()
config = load_config(sys.argv[1])
seconds = time.perf_counter() - t
rss = [l for l in open("/proc/self/status") if l.startswith("VmRSS:")][0].split()[1]
print(json.dumps({"seconds": seconds, "rss_mb": int(rss) / 1024}))
"""


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def steady(edge: Edge, settle: float) -> tuple[float, float]:
    time.sleep(settle)
    return rss_mb(edge.pid), peak_rss_mb(edge.pid)


def run(settle: float = 10.0, label: str = "") -> dict:
    suffix = f" {label}".rstrip()
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as d:
        tmp = Path(d)
        sim = Sim(tmp).start()
        (tmp / "idle").mkdir()
        idle = Edge(tmp / "idle", {"cloud": cloud(sim.url), "services": []}).start()
        idle_rss, idle_peak = steady(idle, min(settle, 3.0))
        idle.stop()
        (tmp / "plant").mkdir()
        config, procs, _ = plant(tmp, cloud_url=sim.url)
        edge = Edge(tmp / "plant", config).start()
        plant_rss, plant_peak = steady(edge, settle)
        st = edge.status()
        edge.stop()
        for p in procs:
            p.stop()
        sim.stop()
        cfg = tmp / "plant" / "edge.yaml"
        cfg.write_text(yaml.safe_dump(config))
        out = subprocess.run(
            [sys.executable, "-c", _PARSE, str(cfg)], capture_output=True, text=True, check=True
        ).stdout
        parse = json.loads(out)
    svc = st["services"][0]
    return report(
        f"memory{suffix}",
        idle_rss_mb=round(idle_rss, 1),
        idle_peak_rss_mb=round(idle_peak, 1),
        tags=len(config["services"][0]["tags"]),
        plant_rss_mb=round(plant_rss, 1),
        plant_peak_rss_mb=round(plant_peak, 1),
        plant_events=svc["counters"]["received"],
        devices_down=sum(1 for dv in svc["details"]["devices"] if not dv["connected"]),
        parse_seconds=round(parse["seconds"], 2),
        rss_after_parse_mb=round(parse["rss_mb"], 1),
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Gateway RSS at idle and with 15,000 tags.")
    parser.add_argument("--quick", action="store_true", help="settle 3 s instead of 10 s")
    parser.add_argument("--label", default="", help="added to the name, e.g. before / after")
    args = parser.parse_args()
    run(3.0 if args.quick else 10.0, args.label)
