"""`make bench`: every benchmark, one JSON line each. Numbers go to docs/benchmarks.md."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bacnet
import commit_window
import console
import datonis_mqtt
import delivery
import ethernet_ip
import failover
import ingest
import instructions
import lzf_bodies
import memory
import modbus
import modbus_rtu
import mtconnect
import overload
import peer_thingsboard
import reconnect
import s7
import simulator

if __name__ == "__main__":
    quick = "--quick" in sys.argv
    seconds = 4 if quick else 10
    ingest.run("bulk 4x500", 4, 500, seconds)
    ingest.run("single 16 clients", 16, 1, seconds)
    ingest.run("single 64 clients", 64, 1, seconds)
    for rate in (500, 2000, 3000):
        commit_window.run(rate, seconds)
    overload.run(quick)
    simulator.run(seconds=5 if quick else 15)
    backlog = 100_000 if quick else 1_000_000
    delivery.to_platform(min(backlog, 200_000), 25)
    delivery.to_platform(backlog, 500)
    delivery.to_platform(backlog, 2000)
    delivery.to_mosquitto(backlog, 500)
    datonis_mqtt.run(min(backlog, 200_000), 25)
    datonis_mqtt.run(backlog, 500)
    datonis_mqtt.run(backlog, 2000)
    failover.run(5 if quick else 20)
    reconnect.run(20)
    if not quick:
        reconnect.run(120)
    modbus.run(seconds=5 if quick else 15)
    modbus.run(seconds=5 if quick else 15, scan_ms=200)
    memory.run(3.0 if quick else 10.0)  # RSS at idle and with 15,000 Modbus tags
    modbus_rtu.run_all(quick)  # 8 units x 50 registers at 9600 and 115200 baud over a pty
    s7.run(seconds=5 if quick else 15)
    bacnet.run(seconds=5 if quick else 15)
    bacnet.run(seconds=5 if quick else 15, cov=True)
    mtconnect.run(seconds=5 if quick else 15)  # 10 agents at 1 s, long poll
    ethernet_ip.run("fast", seconds=5 if quick else 15)
    ethernet_ip.run("cpppo", plcs=2 if quick else 5, seconds=10 if quick else 30)
    # beside ThingsBoard IoT Gateway: its quick form here; the full one (~20 min) with --peer-full
    peer_thingsboard.run(quick="--peer-full" not in sys.argv)
    instructions.run(100 if quick else 1000)
    lzf_bodies.run(quick)
    console.run(quick)  # ingestion with a browser on the overview; page times, 10,000 metrics
