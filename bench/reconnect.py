"""Reconnect: seconds from the platform (or broker) coming back to the first delivery, after
an outage of 20 s and of 120 s, for the Datonis HTTP and the plain MQTT uplink. Readings keep
arriving during the outage; the retry backoff is the default (`retry_max_backoff_ms` 60 s)."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from common import Edge, Sim, cloud, free_port, report, wait_port, wait_until

READINGS = {
    "name": "line",
    "type": "simulator",
    "scan_interval_ms": 200,
    "things": [{"thing_key": "press-1", "metrics": [{"name": "n", "tag": "counter(0, 1)"}]}],
}


class Broker:
    def __init__(self, tmp: Path) -> None:
        self.port = free_port()
        self.conf = tmp / "mosquitto.conf"
        self.conf.write_text(f"listener {self.port} 127.0.0.1\nallow_anonymous true\n")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Broker:
        self.proc = subprocess.Popen(
            ["mosquitto", "-c", str(self.conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_port(self.port)
        return self

    def stop(self) -> None:
        if self.proc:
            self.proc.terminate()
            self.proc.wait(10)


def measure(
    outage_s: float,
    tmp: Path,
    cloud_cfg: dict,
    stop: Callable[[], None],
    start: Callable[[], None],
) -> float:
    """Stop the far side while readings keep arriving, start it again: seconds to a delivery."""
    edge = Edge(tmp, {"cloud": cloud_cfg, "services": [READINGS]})
    edge.start()

    def delivered() -> int:
        return edge.status()["counters"].get("delivered", 0)

    try:
        wait_until(lambda: delivered() > 0, 30, "a first delivery")
        stop()
        time.sleep(outage_s)
        before = delivered()
        start()
        back = time.perf_counter()
        wait_until(lambda: delivered() > before, 120, "a delivery after the return")
        return time.perf_counter() - back
    finally:
        edge.stop()


def run(outage_s: float) -> None:
    common = {"retry_max_backoff_ms": 60_000, "bulk_transmit_interval_ms": 200}
    with tempfile.TemporaryDirectory(prefix="bench-reconnect-") as d:
        sim = Sim(Path(d)).start()
        try:
            took = measure(outage_s, Path(d), cloud(sim.url, **common), sim.stop, sim.start)
        finally:
            sim.stop()
        report("reconnect platform-sim", outage_s=outage_s, first_delivery_after_s=round(took, 2))
    with tempfile.TemporaryDirectory(prefix="bench-reconnect-") as d:
        broker = Broker(Path(d)).start()
        cfg = cloud(
            f"mqtt://127.0.0.1:{broker.port}", protocol="mqtt_broker", topic="bench/e", **common
        )
        try:
            took = measure(outage_s, Path(d), cfg, broker.stop, broker.start)
        finally:
            broker.stop()
        report("reconnect mosquitto", outage_s=outage_s, first_delivery_after_s=round(took, 2))


if __name__ == "__main__":
    for seconds in [float(s) for s in sys.argv[1:]] or [20.0, 120.0]:
        run(seconds)
