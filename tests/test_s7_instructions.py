"""An instruction end to end to an S7 PLC: the platform simulator publishes through a real
mosquitto, a real gateway process writes a REAL set point and a bit to python-snap7's S7
server, and the acknowledgement comes back to the simulator."""

from __future__ import annotations

import struct
from collections.abc import Callable
from pathlib import Path

import snap7

from helpers import Gateway, wait_until
from test_instructions_e2e import Stack, gateway_config, stack  # noqa: F401 - the fixture
from test_s7 import S7Plcs


def _values(port: int) -> tuple[float, int]:
    client = snap7.Client()
    client.connect("127.0.0.1", 0, 1, port)
    try:
        speed = struct.unpack(">f", bytes(client.db_read(1, 0, 4)))[0]
        return speed, client.db_read(1, 4, 1)[0]
    finally:
        client.disconnect()


def test_an_instruction_writes_a_real_and_a_bit_and_is_acked(
    stack: Stack,  # noqa: F811 - the fixture imported above
    tmp_path: Path,
    gateway_factory: Callable[..., Gateway],
) -> None:
    plc = S7Plcs(tmp_path, {"DB1": bytes([0, 0, 0, 0, 0b1000_0000])}).start()
    try:
        service = {
            "name": "press",
            "type": "s7",
            "scan_interval_ms": 200,
            "devices": [{"name": "plc1", "port": plc.port}],
            "tags": [
                {"name": "speed_sp", "address": "DB1.DBD0", "type": "REAL"},
                {"name": "run", "address": "DB1.DBX4.0"},
            ],
            "things": [
                {
                    "thing_key": "press-1",
                    "metrics": [{"name": "speed_sp", "tag": "speed_sp"}],
                    "instructions": [
                        {
                            "name": "set_speed",
                            "match": {"command": "set_speed"},
                            "writes": [
                                {"tag": "speed_sp", "from": "value", "min": 0, "max": 1500},
                                {"tag": "run", "value": True},
                            ],
                        }
                    ],
                }
            ],
        }
        gw = gateway_factory(gateway_config(stack, service)).start()
        wait_until(
            lambda: gw.status()["instructions"]["details"].get("receiving"), 10, "subscribed"
        )
        wait_until(lambda: gw.status()["uplinks"][0]["state"] == "connected", 20, "connected")
        key = stack.sim.send_instruction("press-1", {"command": "set_speed", "value": 1200.5})
        ack = stack.ack(key)
        assert ack["data"] == {"execution_status": "success"}
        assert ack["message"] == "set_speed: wrote speed_sp=1200.5, run=true"
        assert _values(plc.port) == (1200.5, 0b1000_0001)  # bit 0 set, bit 7 kept
        # out of range: nothing written, acked failed
        key = stack.sim.send_instruction("press-1", {"command": "set_speed", "value": 9000})
        ack = stack.ack(key)
        assert ack["data"] == {"execution_status": "failed"}
        assert _values(plc.port) == (1200.5, 0b1000_0001)
        # the new set point is what the reader delivers
        wait_until(
            lambda: any(e["data"].get("speed_sp") == 1200.5 for e in stack.sim.events()),
            what="the written set point read back",
        )
    finally:
        plc.stop()
