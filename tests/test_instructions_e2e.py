"""Instructions end to end: the platform simulator publishes through a real mosquitto (login
checked by the broker), a real gateway process writes to real pymodbus and asyncua servers,
and the acknowledgement comes back to the simulator as an alert carrying the `alert_key`."""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from asyncua import Client
from pymodbus.client import AsyncModbusTcpClient

from datonis_edge.adapters.modbus_tcp.codec import decode
from datonis_edge.protocol.datonis import mqtt_password
from helpers import (
    Gateway,
    ModbusServer,
    Mosquitto,
    OpcUaServer,
    PlatformSim,
    base_config,
    wait_until,
)

AK, SK = "test-ak", "test-sk"
SIM_USER, SIM_PASSWORD = "platform-sim", "sim-password"


@dataclass
class Stack:
    broker: Mosquitto
    sim: PlatformSim

    def ack(self, alert_key: str, timeout: float = 20) -> dict[str, Any]:
        def found() -> dict[str, Any] | None:
            acks = [a for a in self.sim.instructions()["acks"] if a["alert_key"] == alert_key]
            return acks[0] if acks else None

        return wait_until(found, timeout, f"the ack of instruction {alert_key}")

    def acks_of(self, alert_key: str) -> list[dict[str, Any]]:
        return [a for a in self.sim.instructions()["acks"] if a["alert_key"] == alert_key]


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    broker = Mosquitto(tmp_path, users={AK: mqtt_password(AK, SK), SIM_USER: SIM_PASSWORD}).start()
    sim = PlatformSim(
        tmp_path, AK, SK, mqtt_broker=f"mqtt://{SIM_USER}:{SIM_PASSWORD}@127.0.0.1:{broker.port}"
    ).start()
    yield Stack(broker, sim)
    sim.stop()
    broker.stop()


def modbus_service(port: int, device_wait_ms: int = 10_000) -> dict[str, Any]:
    return {
        "name": "press",
        "type": "modbus_tcp",
        "scan_interval_ms": 200,
        "devices": [{"name": "plc1", "port": port}],
        "tags": [
            {
                "name": "speed_sp",
                "register": "holding",
                "address": 10,
                "data_type": "float32",
                "endian": "CDAB",
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
                        "match": {"command": "set_speed"},
                        "device_wait_ms": device_wait_ms,
                        "writes": [
                            {"tag": "speed_sp", "from": "value", "min": 0, "max": 1500},
                            {"tag": "run", "value": True},
                        ],
                    }
                ],
            }
        ],
    }


def gateway_config(stack: Stack, *services: dict[str, Any]) -> dict[str, Any]:
    cfg = base_config(
        stack.sim,
        protocol="mqtt",
        endpoint=f"mqtt://127.0.0.1:{stack.broker.port}",
        ack_timeout_ms=5000,
    )
    cfg["services"] = list(services)
    return cfg


def modbus_values(port: int) -> tuple[float, bool]:
    async def read() -> tuple[float, bool]:
        client = AsyncModbusTcpClient("127.0.0.1", port=port)
        await client.connect()
        try:
            hr = (await client.read_holding_registers(10, count=2)).registers
            coil = (await client.read_coils(3, count=1)).bits[0]
        finally:
            client.close()
        return decode(hr, "float32", "CDAB"), coil

    return asyncio.run(read())


@pytest.fixture
def modbus(tmp_path: Path) -> Iterator[ModbusServer]:
    server = ModbusServer(tmp_path, {"units": {"1": {"hr": {"0": [0] * 20}, "co": {"0": [0] * 8}}}})
    yield server
    server.stop()


def instructions_status(gw: Gateway) -> dict[str, Any]:
    return gw.status()["instructions"]


def test_instruction_writes_a_register_a_coil_and_an_opcua_node_and_acks_success(
    stack: Stack, modbus: ModbusServer, tmp_path: Path, gateway_factory: Callable[..., Gateway]
) -> None:
    modbus.start()
    opcua = OpcUaServer(tmp_path).start()
    try:
        oven = {
            "name": "oven",
            "type": "opcua",
            "endpoint": opcua.endpoint,
            "tags": [{"name": "setpoint", "node_id": "ns=2;s=Machine1.Setpoint"}],
            "things": [
                {
                    "thing_key": "oven-1",
                    "metrics": [{"name": "setpoint", "tag": "setpoint"}],
                    "instructions": [
                        {"name": "setpoint", "writes": [{"tag": "setpoint", "from": "setpoint"}]}
                    ],
                }
            ],
        }
        gw = gateway_factory(gateway_config(stack, modbus_service(modbus.port), oven)).start()
        wait_until(lambda: instructions_status(gw)["details"].get("receiving"), 10, "subscribed")
        wait_until(lambda: gw.status()["uplinks"][0]["state"] == "connected", 20, "connected")
        key = stack.sim.send_instruction("press-1", {"command": "set_speed", "value": 1200.5})
        ack = stack.ack(key)
        assert ack["data"] == {"execution_status": "success"}
        assert ack["message"] == "set_speed: wrote speed_sp=1200.5, run=true"
        assert modbus_values(modbus.port) == (1200.5, True)
        key = stack.sim.send_instruction("oven-1", {"setpoint": 72.25})
        assert stack.ack(key)["data"] == {"execution_status": "success"}

        async def setpoint() -> float:
            client = Client(opcua.endpoint)
            await client.connect()
            try:
                return await client.get_node("ns=2;s=Machine1.Setpoint").read_value()
            finally:
                await client.disconnect()

        assert asyncio.run(setpoint()) == 72.25
        counters = instructions_status(gw)["counters"]
        assert counters["received"] == 2 and counters["executed"] == 2
        wait_until(lambda: instructions_status(gw)["counters"]["acknowledged"] == 2, 10, "acked")
        assert not list((gw.datadir / "instructions" / "pending").iterdir())
    finally:
        opcua.stop()


def test_bad_hash_writes_nothing_and_out_of_range_acks_failed(
    stack: Stack, modbus: ModbusServer, gateway_factory: Callable[..., Gateway]
) -> None:
    modbus.start()
    gw = gateway_factory(gateway_config(stack, modbus_service(modbus.port))).start()
    wait_until(lambda: gw.status()["uplinks"][0]["state"] == "connected", 20, "connected")
    bad = stack.sim.send_instruction("press-1", {"command": "set_speed", "value": 5}, bad_hash=True)
    wait_until(lambda: instructions_status(gw)["counters"]["rejected"] == 1, 10, "the rejection")
    far = stack.sim.send_instruction("press-1", {"command": "set_speed", "value": 99999})
    ack = stack.ack(far)
    assert ack["data"] == {"execution_status": "failed"} and ack["alert_type"] == 2
    assert "value out of range: speed_sp=99999 is above its max 1500" in ack["message"]
    assert stack.acks_of(bad) == []  # dropped: no ack, as the SDKs do
    assert modbus_values(modbus.port) == (0.0, False)
    counters = instructions_status(gw)["counters"]
    assert counters["rejected_bad_hash"] == 1 and counters["failed"] == 1
    assert counters["executed"] == 0
    log = gw.proc.log() if gw.proc else ""
    assert log.count("hash does not match") == 1


def test_instruction_received_just_before_a_sigkill_is_executed_once_by_the_new_master(
    stack: Stack,
    modbus: ModbusServer,
    shared_dir: Path,
    gateway_factory: Callable[..., Gateway],
) -> None:
    # the device is off: the master stores the instruction and waits for the device
    cfg = gateway_config(stack, modbus_service(modbus.port, device_wait_ms=30_000))
    a = gateway_factory(cfg, datadir=shared_dir, name="node").start()
    b = gateway_factory(None, datadir=shared_dir, name="node").start(wait_master=False)
    b.wait_role("standby")
    wait_until(lambda: a.status()["uplinks"][0]["state"] == "connected", 20, "connected")
    key = stack.sim.send_instruction("press-1", {"command": "set_speed", "value": 321.5})
    pending = shared_dir / "instructions" / "pending"

    def stored() -> bool:
        files = list(pending.glob("*.json"))
        return bool(files) and json.loads(files[0].read_text())["state"] == "received"

    wait_until(stored, 10, "the instruction stored")
    a.kill()
    modbus.start()
    b.wait_role("master", timeout=20)
    ack = stack.ack(key, timeout=30)
    assert ack["data"] == {"execution_status": "success"}
    assert modbus_values(modbus.port) == (321.5, True)
    wait_until(lambda: not list(pending.glob("*.json")), 10, "the pending file removed")
    assert len(stack.acks_of(key)) == 1
    counters = instructions_status(b)["counters"]
    assert counters["executed"] == 1 and counters["received"] == 0  # received by the old master
    remembered = (shared_dir / "instructions" / "executed.jsonl").read_text()
    assert json.loads(remembered.splitlines()[-1])["alert_key"] == key


def test_instruction_interrupted_mid_write_by_a_sigkill_is_not_repeated_and_acked_failed(
    stack: Stack,
    modbus: ModbusServer,
    shared_dir: Path,
    gateway_factory: Callable[..., Gateway],
) -> None:
    service = modbus_service(modbus.port)
    service["devices"][0]["timeout_ms"] = 20_000  # the write hangs on the frozen device
    a = gateway_factory(gateway_config(stack, service), datadir=shared_dir, name="node").start()
    b = gateway_factory(None, datadir=shared_dir, name="node").start(wait_master=False)
    b.wait_role("standby")
    modbus.start()
    wait_until(lambda: a.status()["uplinks"][0]["state"] == "connected", 20, "connected")
    modbus.proc.signal(signal.SIGSTOP)  # takes connections (the kernel does), answers nothing
    key = stack.sim.send_instruction("press-1", {"command": "set_speed", "value": 77})
    pending = shared_dir / "instructions" / "pending"

    def writing() -> bool:
        files = list(pending.glob("*.json"))
        return bool(files) and json.loads(files[0].read_text())["state"] == "executing"

    wait_until(writing, 15, "the writes started")
    a.kill()
    modbus.proc.signal(signal.SIGCONT)
    b.wait_role("master", timeout=20)
    ack = stack.ack(key, timeout=30)
    assert ack["data"] == {"execution_status": "failed"}
    assert ack["message"] == "interrupted by failover, not repeated"
    wait_until(lambda: not list(pending.glob("*.json")), 10, "the pending file removed")
    assert len(stack.acks_of(key)) == 1
    counters = instructions_status(b)["counters"]
    assert counters["executed"] == 0 and counters["failed"] == 1
    # the new master wrote nothing: the coil (the rule's second write) was never set
    assert modbus_values(modbus.port)[1] is False
    assert "not repeated" in (b.proc.log() if b.proc else "")
