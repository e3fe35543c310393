"""Instruction round trip over Datonis MQTT: the platform simulator publishes a signed
instruction (its HTTP call `POST /sim/instructions`, QoS 2 through mosquitto) → the gateway
verifies, stores (fsync), checks and writes a Modbus holding register (float32) and a coil on
a real pymodbus server → its ack (an alert carrying the alert_key) reaches the broker.

One instruction at a time, each with a new value. `written` is seen by polling the register
(a read every ~1 ms); `acked` is when a subscriber of the alert topic receives the ack.
Both from just before the simulator is asked to publish. p50/p99 over 1,000 (--quick: 100).

    python bench/instructions.py [--quick]
"""

from __future__ import annotations

import json
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import paho.mqtt.client as mqtt
from pymodbus.client import ModbusTcpClient

from common import Edge, cloud, report, wait_until

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from datonis_edge.adapters.modbus_tcp.codec import decode
from datonis_edge.protocol.datonis import mqtt_password
from helpers import ModbusServer, Mosquitto, PlatformSim

AK, SK = "bench-ak", "bench-sk"
SIM_USER, SIM_PASSWORD = "platform-sim", "sim-password"
WATCHER = "bench-watcher"


def _config(broker: Mosquitto, modbus_port: int) -> dict:
    return {
        "cloud": cloud(
            f"mqtt://127.0.0.1:{broker.port}",
            protocol="mqtt",
            access_key=AK,
            secret_key=SK,
            bulk_transmit_interval_ms=1000,
        ),
        "services": [
            {
                "name": "press",
                "type": "modbus_tcp",
                "scan_interval_ms": 1000,
                "devices": [{"name": "plc1", "port": modbus_port}],
                "tags": [
                    {
                        "name": "speed_sp",
                        "register": "holding",
                        "address": 10,
                        "data_type": "float32",
                    },
                    {"name": "run", "register": "coil", "address": 3},
                ],
                "things": [
                    {
                        "thing_key": "press-1",
                        "metrics": [{"name": "speed_sp", "tag": "speed_sp"}],
                        "instructions": [
                            {
                                "name": "set_speed",
                                "writes": [
                                    {"tag": "speed_sp", "from": "value", "min": 0, "max": 1e6},
                                    {"tag": "run", "value": True},
                                ],
                            }
                        ],
                    }
                ],
            }
        ],
    }


class AckWatcher:
    """Subscribes to every gateway's alert topic; notes when each alert_key's ack arrives."""

    def __init__(self, port: int) -> None:
        self.arrived: dict[str, float] = {}
        self.cond = threading.Condition()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-watch")
        self.client.username_pw_set(WATCHER, SIM_PASSWORD)
        self.client.on_message = self._message
        self.client.connect("127.0.0.1", port)
        self.client.subscribe("Altizon/Datonis/+/alert", qos=1)
        self.client.loop_start()

    def _message(self, _c: object, _u: object, msg: mqtt.MQTTMessage) -> None:
        now = time.perf_counter()
        alert = json.loads(msg.payload).get("alert", {})
        if "alert_key" in alert:
            with self.cond:
                self.arrived[alert["alert_key"]] = now
                self.cond.notify_all()

    def wait(self, key: str, timeout: float = 30) -> float:
        with self.cond:
            if not self.cond.wait_for(lambda: key in self.arrived, timeout):
                raise TimeoutError(f"no ack for {key}")
            return self.arrived[key]

    def stop(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def _pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(p * len(ordered)))] * 1000, 2)


def run(count: int = 1000, nodelay: bool = True) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-instructions-") as d:
        tmp = Path(d)
        users = {AK: mqtt_password(AK, SK), SIM_USER: SIM_PASSWORD, WATCHER: SIM_PASSWORD}
        broker = Mosquitto(tmp, users=users)
        if nodelay:  # mosquitto's own sockets use Nagle's algorithm unless told otherwise
            conf = tmp / f"mosquitto-{broker.port}.conf"
            conf.write_text(conf.read_text() + "set_tcp_nodelay true\n")
        broker.start()
        sim = PlatformSim(
            tmp, AK, SK, mqtt_broker=f"mqtt://{SIM_USER}:{SIM_PASSWORD}@127.0.0.1:{broker.port}"
        ).start()
        plc = ModbusServer(tmp, {"units": {"1": {"hr": {"0": [0] * 20}, "co": {"0": [0] * 8}}}})
        plc.start()
        edge = Edge(tmp, _config(broker, plc.port)).start()
        watcher = AckWatcher(broker.port)
        reader = ModbusTcpClient("127.0.0.1", port=plc.port)
        reader.connect()
        http = httpx.Client(base_url=sim.url, timeout=10)
        written: list[float] = []
        acked: list[float] = []
        try:
            wait_until(lambda: edge.status()["uplinks"][0]["state"] == "connected", 30, "connected")
            for i in range(count + 5):  # the first 5 warm up
                value = float(i + 1)
                t0 = time.perf_counter()
                r = http.post(
                    "/sim/instructions",
                    json={"thing_key": "press-1", "instruction": {"value": value}},
                )
                key = r.json()["alert_key"]
                while True:
                    regs = reader.read_holding_registers(10, count=2).registers
                    if decode(regs, "float32") == value:
                        t_written = time.perf_counter()
                        break
                    time.sleep(0.0005)  # leave the CPU to the gateway between two reads
                t_acked = watcher.wait(key)
                if i >= 5:
                    written.append(t_written - t0)
                    acked.append(t_acked - t0)
            counters = edge.status()["instructions"]["counters"]
        finally:
            http.close()
            reader.close()
            watcher.stop()
            edge.stop()
            plc.stop()
            sim.stop()
            broker.stop()
    return report(
        "instructions",
        instructions=count,
        broker_nodelay=nodelay,
        written_p50_ms=_pct(written, 0.5),
        written_p99_ms=_pct(written, 0.99),
        acked_p50_ms=_pct(acked, 0.5),
        acked_p99_ms=_pct(acked, 0.99),
        executed=counters["executed"],
        failed=counters["failed"],
    )


if __name__ == "__main__":
    run(100 if "--quick" in sys.argv else 1000)
