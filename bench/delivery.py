"""Delivery: drain a backlog left by an outage, to the platform simulator and to mosquitto."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import Edge, Sim, cloud, cpu_seconds, free_port, peak_rss_mb, report, wait_port

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))
from datonis_edge.store.outbox import Outbox


def fill(datadir: Path, total: int, chunk: int = 500) -> None:
    """The backlog an outage leaves: `total` events already durable in the outbox."""
    outbox = Outbox(datadir / "outbox", max_bytes=8 << 30)
    outbox.open()
    try:
        for start in range(0, total, chunk):
            outbox.append_sync(
                [
                    {
                        "thing_key": f"press-{i % 50}",
                        "timestamp": 1_700_000_000_000 + i,
                        "data": {"temperature": 20.5, "pressure": 1013, "seq": i},
                    }
                    for i in range(start, start + chunk)
                ]
            )
    finally:
        outbox.close()


def drain(name: str, total: int, cloud_cfg: dict, events_at_target) -> dict:  # type: ignore[no-untyped-def]
    with tempfile.TemporaryDirectory(prefix="bench-delivery-") as d:
        tmp = Path(d)
        fill(tmp / "data", total)
        edge = Edge(tmp, {"cloud": cloud_cfg, "outbox": {"max_bytes": 8 << 30}, "services": []})
        t0 = time.perf_counter()
        edge.start()
        cpu0 = cpu_seconds(edge.pid)
        while True:
            st = edge.status()
            if st["outbox"]["pending"] == 0:
                break
            time.sleep(0.05)
        seconds = time.perf_counter() - t0
        cpu = cpu_seconds(edge.pid) - cpu0
        rss = peak_rss_mb(edge.pid)
        delivered = st["counters"]["delivered"]
        at_target = events_at_target()
        edge.stop()
    assert delivered == total and at_target >= total, (delivered, at_target)
    return report(
        f"delivery {name}",
        backlog_events=total,
        events_per_s=round(total / seconds),
        seconds=round(seconds, 2),
        bulk=cloud_cfg.get("bulk_max_elements"),
        gateway_cpu_cores=round(cpu / seconds, 2),
        gateway_cpu_us_per_event=round(cpu / total * 1e6, 2),
        peak_rss_mb=round(rss, 1),
    )


def to_platform(total: int, bulk: int) -> dict:
    with tempfile.TemporaryDirectory() as d:
        sim = Sim(Path(d)).start()
        try:
            return drain(
                f"platform-sim bulk {bulk}",
                total,
                cloud(sim.url, bulk_max_elements=bulk),
                sim.events,
            )
        finally:
            sim.stop()


def to_mosquitto(total: int, bulk: int) -> dict:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    with tempfile.TemporaryDirectory() as d:
        port = free_port()
        conf = Path(d) / "m.conf"
        conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\n")
        broker = subprocess.Popen(
            ["mosquitto", "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        wait_port(port)
        got = [0]
        sub = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2)
        sub.on_message = lambda _c, _u, m: got.__setitem__(
            0, got[0] + m.payload.count(b'"thing_key"')
        )
        sub.connect("127.0.0.1", port)
        sub.subscribe("bench/#", qos=1)
        sub.loop_start()
        try:
            cfg = cloud(
                f"mqtt://127.0.0.1:{port}",
                protocol="mqtt_broker",
                topic="bench/events",
                bulk_max_elements=bulk,
            )
            row = drain(f"mosquitto bulk {bulk}", total, cfg, lambda: got[0])
        finally:
            sub.loop_stop()
            broker.terminate()
            broker.wait(10)
        return row


if __name__ == "__main__":
    total = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    to_platform(min(total, 200_000), 25)
    to_platform(total, 500)
    to_platform(total, 2000)
    to_mosquitto(total, 500)
