"""EtherNet/IP at plant scale: 20 Logix PLCs × 500 tags polled every second, delivered to the
platform simulator. Tags/s read and delivered and the gateway's CPU, against two plants:

- `cpppo`: cpppo Logix servers (tests/servers/enip_server.py), one process each. cpppo spends
  ~1 ms of CPU per tag read, so 20 × 500 tags a second would need ~10 cores: on a small
  machine the servers, not the gateway, set the pace (5 of them here), and the numbers say so.
- `fast`: tests/servers/enip_fast.py, one asyncio process answering for all 20 PLCs the bytes
  cpppo answers for DINT tags, at almost no cost: the gateway's own ceiling.

Each PLC's 500 tags (150 REAL, 250 DINT, 100 INT) are named as a program would name them
(`Line1_Motor_Speed_042` ...): 30 bytes of request each, so with 4002-byte connections they go
in four Multiple Service Packets a scan."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from common import Edge, Sim, cpu_seconds, measure, one_service, report, thing

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from helpers import Proc, free_port, wait_port, wait_until

SERVERS = Path(__file__).resolve().parent.parent / "tests" / "servers"
KINDS = [("Motor_Speed", "REAL", 150), ("Count", "DINT", 250), ("Temp", "INT", 100)]


def plc_tags() -> list[tuple[str, str]]:
    return [(f"Line1_{kind}_{i:03d}", cip) for kind, cip, n in KINDS for i in range(n)]


def plant(tmp: Path, plcs: int, server: str, scan_ms: int, url: str) -> tuple[dict, list[Proc]]:
    ports = [free_port() for _ in range(plcs)]
    names = plc_tags()
    if server == "cpppo":
        procs = [
            Proc(
                [sys.executable, str(SERVERS / "enip_server.py"), "--address",
                 f"127.0.0.1:{port}", *(f"{n}={cip}" for n, cip in names)],
                tmp / f"cpppo-{port}.log",
            ).start()
            for port in ports
        ]  # fmt: skip
    else:
        procs = [
            Proc(
                [
                    sys.executable,
                    str(SERVERS / "enip_fast.py"),
                    "--ports",
                    ",".join(map(str, ports)),
                ],
                tmp / "fast.log",
            ).start()
        ]
    for port in ports:
        wait_port(port, timeout=60)
    devices, tags, things = [], [], []
    for n, port in enumerate(ports):
        plc = f"plc-{n}"
        devices.append({"name": plc, "host": "127.0.0.1", "port": port, "timeout_ms": 10_000})
        mine = [{"name": f"{plc}-{name}", "device": plc, "address": name} for name, _ in names]
        tags += mine
        things.append(thing(plc, mine))
    config = one_service(
        url,
        {
            "name": "plant",
            "type": "ethernet_ip",
            "scan_interval_ms": scan_ms,
            "devices": devices,
            "tags": tags,
            "things": things,
        },
    )
    return config, procs


def run(server: str = "fast", plcs: int = 20, seconds: float = 15.0, scan_ms: int = 1000) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-enip-") as d:
        tmp = Path(d)
        sim = Sim(tmp).start()
        config, procs = plant(tmp, plcs, server, scan_ms, sim.url)
        per_plc = len(plc_tags())
        edge = Edge(tmp, config).start()

        def warm_up() -> None:  # past the first scans (sessions opened, reply sizes learned)
            wait_until(lambda: edge.status()["services"][0]["counters"].get("received", 0) >= 2 * plcs,
                       300, "two scans of every PLC")  # fmt: skip

        w = measure(edge, seconds, warm_up, lambda: sum(cpu_seconds(p.p.pid) for p in procs if p.p))
        edge.stop()
        for p in procs:
            p.kill() if server == "cpppo" else p.stop()
        sim.stop()
    devices = w.service["details"]["devices"]
    return report(
        f"ethernet_ip {server}",
        scan_interval_ms=scan_ms,
        plcs=plcs,
        tags=plcs * per_plc,
        connection_size=devices[0]["connection_size"],
        requests_per_scan_per_plc=devices[0]["requests_per_scan"],
        tags_read_per_s=w.per_s(w.received * per_plc),
        tags_delivered_per_s=w.per_s(w.delivered * per_plc),
        gateway_cpu_cores=w.cores,
        gateway_cpu_ms_per_1000_tags=round(1000 * w.cpu_s / max(1, w.received * per_plc) * 1000, 2),
        server_cpu_cores=round(w.counted / w.wall_s, 2),
        peak_rss_mb=round(w.peak_rss_mb, 1),
        plcs_down=sum(1 for dv in devices if not dv["connected"]),
    )


if __name__ == "__main__":
    quick = "--quick" in sys.argv
    secs = 5.0 if quick else 15.0
    run("fast", seconds=secs)  # the plant: 10,000 tags every second
    if not quick:
        run("fast", seconds=secs, scan_ms=200)  # five times a second: the ceiling
    # real servers: they answer a scan in seconds, so a longer look
    # (20 of them need ~10 cores for 10,000 tags/s; on 2 shared cores 5 is what runs)
    run("cpppo", plcs=2 if quick else 5, seconds=10.0 if quick else 30.0)
