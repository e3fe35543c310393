"""The simulator adapter at plant scale: 1,000 things × 10 metrics every second, delivered."""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from common import Edge, Sim, cloud, cpu_seconds, peak_rss_mb, report

WAVES = [
    "sine(60, 5, 60s)",
    "random(180, 220)",
    "counter(0, 1)",
    "square(0, 1, 30s)",
    "ramp(0, 100, 10m)",
    "walk(50, 0.5)",
    "sine(20, 2, 5m)",
    "random(0, 1)",
    "const(42)",
    "ramp(10, 20, 1h)",
]


def run(things: int = 1000, metrics: int = 10, seconds: float = 15.0, bulk: int = 500) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-sim-") as d:
        tmp = Path(d)
        sim = Sim(tmp).start()
        config = {
            "cloud": cloud(sim.url, bulk_max_elements=bulk),
            "services": [
                {
                    "name": "plant",
                    "type": "simulator",
                    "scan_interval_ms": 1000,
                    "things": [
                        {
                            "thing_key": f"machine-{t}",
                            "metrics": [
                                {"name": f"m{m}", "tag": WAVES[m % len(WAVES)]}
                                for m in range(metrics)
                            ],
                        }
                        for t in range(things)
                    ],
                }
            ],
        }
        edge = Edge(tmp, config).start()
        time.sleep(2)  # past start-up
        cpu0, t0, d0 = (
            cpu_seconds(edge.pid),
            time.perf_counter(),
            edge.status()["counters"]["delivered"],
        )
        time.sleep(seconds)
        cpu, wall = cpu_seconds(edge.pid) - cpu0, time.perf_counter() - t0
        st = edge.status()
        rss = peak_rss_mb(edge.pid)
        edge.stop()
        sim.stop()
    delivered = st["counters"]["delivered"] - d0
    return report(
        "simulator",
        things=things,
        metrics_per_thing=metrics,
        readings_per_s=round(delivered * metrics / wall),
        events_delivered_per_s=round(delivered / wall),
        gateway_cpu_cores=round(cpu / wall, 3),
        peak_rss_mb=round(rss, 1),
        pending_at_end=st["outbox"]["pending"],
    )


if __name__ == "__main__":
    run(seconds=float(sys.argv[1]) if len(sys.argv) > 1 else 15.0)
