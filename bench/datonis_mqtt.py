"""Delivery over the Datonis MQTT transport: drain a backlog left by an outage to the platform
simulator's MQTT side, through a real mosquitto that checks the gateway's login (password file).

Each batch is published signed (hash over the body, spec §5) at QoS 1 and counts as delivered
only on the simulator's `httpAck` carrying its hash; the simulator re-serialises and checks
every hash as the platform does. mosquitto runs with `set_tcp_nodelay true` (without it
Nagle's algorithm on the broker's sockets holds each ack back ~40 ms: one row shows that). Reported beside the HTTP figures of bench/delivery.py:
events/s, gateway CPU (cores and µs per event) and peak RSS, at bulk 25, 500 and 2,000.

    python bench/datonis_mqtt.py [--quick]     (1,000,000 events; bulk 25: 200,000; quick: 50,000)
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import httpx

from common import cloud, cpu_seconds, free_port, wait_port, wait_until
from delivery import drain

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from datonis_edge.protocol.datonis import mqtt_password
from helpers import EDGE, Mosquitto, Proc

AK, SK = "bench-ak", "bench-sk"
SIM_USER, SIM_PASSWORD = "platform-sim", "sim-password"


def run(total: int, bulk: int, nodelay: bool = True) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-datonis-mqtt-") as d:
        tmp = Path(d)
        broker = Mosquitto(tmp, users={AK: mqtt_password(AK, SK), SIM_USER: SIM_PASSWORD})
        if nodelay:  # mosquitto's own sockets use Nagle's algorithm unless told otherwise
            conf = tmp / f"mosquitto-{broker.port}.conf"
            conf.write_text(conf.read_text() + "set_tcp_nodelay true\n")
        broker.start()
        port = free_port()
        sim = Proc(
            [
                EDGE,
                "platform-sim",
                "--port",
                str(port),
                "--access-key",
                AK,
                "--secret-key",
                SK,
                "--no-record",
                "--mqtt-broker",
                f"mqtt://{SIM_USER}:{SIM_PASSWORD}@127.0.0.1:{broker.port}",
            ],
            tmp / "sim.log",
        ).start()
        try:
            wait_port(port)
            url = f"http://127.0.0.1:{port}"
            wait_until(lambda: httpx.get(f"{url}/sim/mqtt").json()["connected"], 10, "sim login")
            cfg = cloud(
                f"mqtt://127.0.0.1:{broker.port}",
                protocol="mqtt",
                access_key=AK,
                secret_key=SK,
                bulk_max_elements=bulk,
            )
            sim_cpu0 = cpu_seconds(sim.p.pid)
            row = drain(
                f"datonis mqtt bulk {bulk}" + ("" if nodelay else " (broker with Nagle)"),
                total,
                cfg,
                lambda: httpx.get(f"{url}/sim/stats").json()["events"],
            )
            row["simulator_cpu_s"] = round(cpu_seconds(sim.p.pid) - sim_cpu0, 1)
            print(f"  simulator (verifies every hash, one thread) CPU: {row['simulator_cpu_s']} s")
            checks = httpx.get(f"{url}/sim/mqtt").json()
            assert checks.get("bad_hash", 0) == 0, checks
            return row
        finally:
            sim.stop()
            broker.stop()


if __name__ == "__main__":
    quick = "--quick" in sys.argv
    backlog = 50_000 if quick else 1_000_000
    run(min(backlog, 200_000), 25)
    run(min(backlog, 50_000), 25, nodelay=False)
    run(backlog, 500)
    run(backlog, 2000)
