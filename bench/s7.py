"""S7 at plant scale: 20 PLCs × 500 tags polled every second (python-snap7's S7 server, five
PLCs to a process), delivered to the platform simulator. Tags/s and the gateway's CPU.

Each PLC holds what a machine's PLC typically exposes: 200 REAL in one data block, 150 INT
and 50 DINT in another, 60 marker bits and 40 output bits: 500 tags, 1,413 bytes."""

from __future__ import annotations

import json
import struct
import sys
import tempfile
from pathlib import Path
from typing import Any

from common import Edge, Sim, measure, one_service, report, thing

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from helpers import Proc, free_port, wait_port

SERVER = Path(__file__).resolve().parent.parent / "tests" / "servers" / "s7_server.py"


def plc_memory() -> tuple[dict[str, str], list[dict[str, Any]]]:
    db1 = b"".join(struct.pack(">f", i * 0.5) for i in range(200))
    db2 = b"".join(struct.pack(">h", -i) for i in range(150))
    db2 += b"".join(struct.pack(">i", i * 1000) for i in range(50))
    tags: list[dict[str, Any]] = [
        {"name": f"r{i}", "address": f"DB1.DBD{4 * i}", "type": "REAL"} for i in range(200)
    ]
    tags += [{"name": f"i{i}", "address": f"DB2.DBW{2 * i}", "type": "INT"} for i in range(150)]
    tags += [
        {"name": f"d{i}", "address": f"DB2.DBD{300 + 4 * i}", "type": "DINT"} for i in range(50)
    ]
    tags += [{"name": f"m{i}", "address": f"M{i // 8}.{i % 8}"} for i in range(60)]
    tags += [{"name": f"q{i}", "address": f"Q{i // 8}.{i % 8}"} for i in range(40)]
    spec = {"DB1": db1.hex(), "DB2": db2.hex(), "M": bytes(range(8)).hex(), "Q": "ff" * 5}
    return spec, tags


def plant(
    tmp: Path, plcs: int, per_process: int, scan_ms: int, cloud_url: str
) -> tuple[dict, list[Proc]]:
    spec, plc_tags = plc_memory()
    spec_path = tmp / "s7-spec.json"
    spec_path.write_text(json.dumps(spec))
    ports = [free_port() for _ in range(plcs)]
    procs = []
    for at in range(0, plcs, per_process):
        group = ports[at : at + per_process]
        procs.append(
            Proc(
                [sys.executable, str(SERVER), "--ports", ",".join(map(str, group)),
                 "--spec", str(spec_path)],
                tmp / f"s7-{group[0]}.log",
            ).start()
        )  # fmt: skip
    for port in ports:
        wait_port(port)
    devices, tags, things = [], [], []
    for n, port in enumerate(ports):
        name = f"plc-{n}"
        devices.append({"name": name, "port": port, "timeout_ms": 3000})
        mine = [{**t, "name": f"{name}-{t['name']}", "device": name} for t in plc_tags]
        tags += mine
        things.append(thing(name, mine))
    config = one_service(
        cloud_url,
        {
            "name": "plant",
            "type": "s7",
            "scan_interval_ms": scan_ms,
            "devices": devices,
            "tags": tags,
            "things": things,
        },
    )
    return config, procs


def run(plcs: int = 20, seconds: float = 15.0, scan_ms: int = 1000, per_process: int = 5) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-s7-") as d:
        tmp = Path(d)
        sim = Sim(tmp).start()
        config, procs = plant(tmp, plcs, per_process, scan_ms, sim.url)
        tags_per_plc = len(config["services"][0]["tags"]) // plcs
        edge = Edge(tmp, config).start()
        w = measure(edge, seconds)
        edge.stop()
        for p in procs:
            p.stop()
        sim.stop()
    devices = w.service["details"]["devices"]
    return report(
        "s7",
        scan_interval_ms=scan_ms,
        plcs=plcs,
        server_processes=len(procs),
        tags=plcs * tags_per_plc,
        pdu_size=devices[0]["pdu_size"],
        requests_per_scan=w.service["details"]["requests_per_scan"],
        tags_read_per_s=w.per_s(w.received * tags_per_plc),
        tags_delivered_per_s=w.per_s(w.delivered * tags_per_plc),
        gateway_cpu_cores=w.cores,
        peak_rss_mb=round(w.peak_rss_mb, 1),
        plcs_down=sum(1 for dv in devices if not dv["connected"]),
    )


if __name__ == "__main__":
    quick = "--quick" in sys.argv
    secs = 5.0 if quick else 15.0
    run(seconds=secs)  # the plant: 10,000 tags every second
    if not quick:
        run(seconds=secs, scan_ms=200)  # the same five times a second: the ceiling
