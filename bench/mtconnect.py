"""MTConnect at plant scale: 10 agents (fixture agents in their own processes, one CNC each with
50 samples changing every 100 ms, events and conditions) followed at 1 s, as a long poll and by
polling, delivered to the platform simulator. Observations (tags) read and delivered per second
and the gateway's CPU."""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from common import Edge, Sim, measure, one_service, report, thing

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from servers.mtconnect_fixture import MtconnectAgentProc


def plant(
    tmp: Path, agents: int, samples: int, change_ms: int, scan_ms: int, mode: str, cloud_url: str
) -> tuple[dict, list[MtconnectAgentProc]]:
    procs = [
        MtconnectAgentProc(
            tmp,
            "--samples",
            str(samples),
            "--auto-ms",
            str(change_ms),
            "--buffer",
            "131072",
            validate=False,  # the gateway is measured, not the schema check
        ).start()
        for _ in range(agents)
    ]
    tags, things = [], []
    for i in range(agents):
        items = [f"d0_x{s}" for s in range(samples)]
        items += ["d0_exec", "d0_mode", "d0_program", "d0_parts", "d0_system", "d0_temp_cond"]
        mine = [{"name": f"cnc{i}-{item}", "agent": f"cnc{i}", "data_item": item} for item in items]
        tags += mine
        things.append(thing(f"cnc-{i}", mine))
    config = one_service(
        cloud_url,
        {
            "name": "cells",
            "type": "mtconnect",
            "mode": mode,
            "scan_interval_ms": scan_ms,
            "count": 10_000,
            "agents": [{"name": f"cnc{i}", "url": p.url} for i, p in enumerate(procs)],
            "tags": tags,
            "things": things,
        },
        bulk_max_elements=100,
    )
    return config, procs


def _observations(status: dict) -> int:
    return sum(a["observations"] for a in status["services"][0]["details"]["devices"])


def run(
    agents: int = 10,
    samples: int = 50,
    change_ms: int = 100,
    scan_ms: int = 1000,
    mode: str = "streaming",
    seconds: float = 15.0,
) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-mtconnect-") as d:
        tmp = Path(d)
        sim = Sim(tmp).start()
        config, procs = plant(tmp, agents, samples, change_ms, scan_ms, mode, sim.url)
        try:
            edge = Edge(tmp, config).start()
            w = measure(edge, seconds, count=lambda: sum(p.stats()["next_sequence"] for p in procs))
            stop_started = time.perf_counter()
            edge.stop()
            stop_s = time.perf_counter() - stop_started
        finally:
            for p in procs:
                p.stop()
            sim.stop()
    svc, events, received = w.service, w.delivered, w.received
    observations = _observations(w.after) - _observations(w.before)
    return report(
        "mtconnect",
        mode=mode,
        agents=agents,
        samples_per_agent=samples,
        sample_change_ms=change_ms,
        scan_interval_ms=scan_ms,
        # what the agents made (their timers slip under load) and what the gateway read
        agents_made_per_s=w.per_s(w.counted),
        tags_read_per_s=w.per_s(observations),
        tags_delivered_per_s=w.per_s(observations * (events / received if received else 0)),
        events_delivered_per_s=w.per_s(events),
        requests=sum(a["requests"] for a in svc["details"]["devices"]),
        gaps=sum(a["gaps"] for a in svc["details"]["devices"]),
        agents_down=sum(1 for a in svc["details"]["devices"] if not a["connected"]),
        gateway_cpu_cores=w.cores,
        peak_rss_mb=round(w.peak_rss_mb, 1),
        stop_s=round(stop_s, 2),
    )


if __name__ == "__main__":
    quick = "--quick" in sys.argv
    secs = 5.0 if quick else 15.0
    run(seconds=secs)  # the plant: 10 agents at 1 s, long poll
    run(seconds=secs, mode="polling")
    if not quick:
        run(seconds=secs, samples=200)  # four times the data: where the ceiling is
