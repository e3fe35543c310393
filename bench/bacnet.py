"""BACnet at building scale: 20 devices × 100 objects (bacpypes3 device applications, five
devices to a process, on loopback), delivered to the platform simulator. Tags/s and the
gateway's CPU, polled by ReadPropertyMultiple every second, and by COV with a fifth of each
device's objects changing every second.

Each device holds what an air handler exposes: 40 analog inputs, 20 analog values, 20
binary inputs/outputs, 20 multi-state values: 100 objects, two RPMs at a max-APDU of 1476."""

from __future__ import annotations

import json
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import Edge, Sim, measure, one_service, report, thing

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from helpers import Proc, wait_until

SERVER = Path(__file__).resolve().parent.parent / "tests" / "servers" / "bacnet_device.py"


def udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def device_objects() -> list[dict[str, Any]]:
    objects = [{"id": f"analog-input,{i}", "value": i * 0.5} for i in range(40)]
    objects += [{"id": f"analog-value,{i}", "value": 20.0 + i} for i in range(20)]
    objects += [{"id": f"binary-input,{i}", "value": i % 2 == 0} for i in range(10)]
    objects += [{"id": f"binary-output,{i}", "value": i % 3 == 0} for i in range(10)]
    objects += [{"id": f"multi-state-value,{i}", "value": i % 4 + 1} for i in range(20)]
    return objects


def plant(
    tmp: Path,
    count: int,
    per_process: int,
    scan_ms: int,
    cov: bool,
    cloud_url: str,
    procs: list[Proc],
) -> dict:
    """The devices' processes (appended to `procs` as they start) and the gateway's config."""
    objects = device_objects()
    changing = [o["id"] for o in objects[:20]]  # COV: analog inputs 0-19 change every second
    specs = [
        {"instance": 10_000 + n, "port": udp_port(), "objects": objects,
         **({"ramp": changing, "ramp_ms": 1000} if cov else {})}
        for n in range(count)
    ]  # fmt: skip
    for at in range(0, count, per_process):
        spec = tmp / f"bacnet-{at}.json"
        spec.write_text(json.dumps({"devices": specs[at : at + per_process]}))
        proc = Proc([sys.executable, str(SERVER), "--spec", str(spec)], tmp / f"bacnet-{at}.log")
        procs.append(proc.start())
    for proc in procs:
        wait_until(lambda p=proc: "ready" in p.log(), 180, "the BACnet devices")
    devices, tags, things = [], [], []
    for n, spec in enumerate(specs):
        name = f"ahu-{n}"
        devices.append({"name": name, "address": f"127.0.0.1:{spec['port']}",
                        "instance": spec["instance"], "cov": cov, "cov_lifetime_s": 300})  # fmt: skip
        mine = [{"name": f"{name}-{o['id']}", "device": name, "object": o["id"]} for o in objects]
        tags += mine
        things.append(thing(name, mine))
    config = one_service(
        cloud_url,
        {
            "name": "building",
            "type": "bacnet",
            "local_address": f"127.0.0.1/8:{udp_port()}",
            "scan_interval_ms": scan_ms,
            "timeout_ms": 3000,
            "devices": devices,
            "tags": tags,
            "things": things,
        },
    )
    return config


def connected(edge: Edge) -> None:
    """Once every device has answered (and subscribed), and 2 s more."""

    def down() -> list[str]:
        states = edge.status()["services"][0]["details"]["devices"]
        return [f"{s['name']}: {s['last_error']}" for s in states if not s["connected"]]

    try:
        wait_until(lambda: not down(), 180, "every device connected")
    except AssertionError:
        print("not connected:", down(), file=sys.stderr)
        raise
    time.sleep(2)


def run(
    devices: int = 20,
    seconds: float = 15.0,
    scan_ms: int = 1000,
    cov: bool = False,
    per_process: int = 5,
) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-bacnet-") as d:
        tmp = Path(d)
        sim = Sim(tmp).start()
        procs: list[Proc] = []
        edge: Edge | None = None
        try:  # whatever happens, every process started here is stopped
            config = plant(tmp, devices, per_process, scan_ms, cov, sim.url, procs)
            per_device = len(config["services"][0]["tags"]) // devices
            edge = Edge(tmp, config).start()
            w = measure(edge, seconds, lambda: connected(edge))
        finally:
            if edge is not None:
                edge.stop()
            for p in procs:
                p.stop()
            sim.stop()
    svc = w.service
    states = svc["details"]["devices"]
    # polled: every reading holds a device's 100 tags; COV: the 20 that changed
    per_reading = 20 if cov else per_device
    return report(
        "bacnet",
        mode="cov" if cov else "poll",
        scan_interval_ms=scan_ms,
        devices=devices,
        server_processes=len(procs),
        tags=devices * per_device,
        requests_per_scan=sum(s["requests_per_scan"] or 0 for s in states),
        cov_subscriptions=sum(s["cov_subscriptions"] for s in states),
        readings_per_s=round(w.received / w.wall_s, 1),
        tags_read_per_s=w.per_s(w.received * per_reading),
        tags_delivered_per_s=w.per_s(w.delivered * per_reading),
        gateway_cpu_cores=w.cores,
        peak_rss_mb=round(w.peak_rss_mb, 1),
        devices_down=sum(1 for s in states if not s["connected"]),
    )


if __name__ == "__main__":
    quick = "--quick" in sys.argv
    secs = 5.0 if quick else 15.0
    run(seconds=secs)  # the plant, polled: 2,000 tags every second
    run(seconds=secs, cov=True)  # the same by COV: 400 changes a second
    if not quick:
        run(seconds=secs, scan_ms=200)  # polled five times a second: the ceiling
