"""Modbus at plant scale: 50 devices × 300 registers polled every second (pymodbus servers in
their own processes), delivered to the platform simulator. Tags/s and the gateway's CPU."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from common import Edge, Sim, measure, one_service, report, thing

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from helpers import ModbusServer


def plant(
    tmp: Path,
    devices: int = 50,
    registers: int = 300,
    servers: int = 10,
    scan_ms: int = 1000,
    float_share: float = 0.0,
    cloud_url: str = "",
) -> tuple[dict, list[ModbusServer], int]:
    """Start `servers` pymodbus servers and return the gateway config that polls them (every
    tag the metric of a thing, one thing per device), the servers and the tags per device."""
    per_server = devices // servers
    # two thirds uint16 tags, one sixth float32 tags (2 registers each): `registers` per device;
    # with float_share=0 every register is one uint16 tag
    n32 = int(registers * float_share / 2)
    n16 = registers - 2 * n32
    spec = {
        "units": {str(u): {"hr": {"0": list(range(registers))}} for u in range(1, per_server + 1)}
    }
    procs = [ModbusServer(tmp, spec, f"plc{i}").start() for i in range(servers)]
    tags, things, devs = [], [], []
    for dev in range(devices):
        server, unit = procs[dev // per_server], dev % per_server + 1
        name = f"plc-{dev}"
        devs.append({"name": name, "port": server.port, "unit_id": unit, "timeout_ms": 2000})
        dev_tags = [
            {"name": f"{name}-u{i}", "device": name, "register": "holding", "address": i}
            for i in range(n16)
        ]
        dev_tags += [
            {
                "name": f"{name}-f{i}",
                "device": name,
                "register": "holding",
                "address": n16 + 2 * i,
                "data_type": "float32",
            }
            for i in range(n32)
        ]
        tags += dev_tags
        things.append(thing(name, dev_tags))
    config = one_service(
        cloud_url,
        {
            "name": "plant",
            "type": "modbus_tcp",
            "scan_interval_ms": scan_ms,
            "devices": devs,
            "tags": tags,
            "things": things,
        },
    )
    return config, procs, n16 + n32


def run(
    devices: int = 50,
    registers: int = 300,
    servers: int = 10,
    seconds: float = 15.0,
    scan_ms: int = 1000,
    float_share: float = 0.0,
) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-modbus-") as d:
        tmp = Path(d)
        sim = Sim(tmp).start()
        config, procs, tags_per_event = plant(
            tmp, devices, registers, servers, scan_ms, float_share, sim.url
        )
        tags = config["services"][0]["tags"]
        edge = Edge(tmp, config).start()
        w = measure(edge, seconds)
        edge.stop()
        for p in procs:
            p.stop()
        sim.stop()
    svc = w.service
    return report(
        "modbus",
        scan_interval_ms=scan_ms,
        devices=devices,
        tags=len(tags),
        registers_per_device=registers,
        requests_per_scan=svc["details"]["requests_per_scan"],
        tags_read_per_s=w.per_s(w.received * tags_per_event),
        tags_delivered_per_s=w.per_s(w.delivered * tags_per_event),
        gateway_cpu_cores=w.cores,
        peak_rss_mb=round(w.peak_rss_mb, 1),
        devices_down=sum(1 for dv in svc["details"]["devices"] if not dv["connected"]),
    )


if __name__ == "__main__":
    secs = float(sys.argv[1]) if len(sys.argv) > 1 else 15.0
    run(seconds=secs)  # the shape: 15,000 uint16 tags every second
    run(seconds=secs, float_share=0.5)  # a mix: 150 uint16 + 75 float32 per device
    run(seconds=secs, scan_ms=200)  # the same 15,000 tags five times a second: the ceiling
