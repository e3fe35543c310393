"""The instruction engine against real pymodbus and asyncua servers; the uplink is a fake that
records acks (the transport has its own end-to-end tests in test_instructions_e2e.py)."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from asyncua import Client
from pymodbus.client import AsyncModbusTcpClient

from datonis_edge.adapters.base import Adapter
from datonis_edge.adapters.modbus_tcp.adapter import ModbusTcpAdapter
from datonis_edge.adapters.modbus_tcp.codec import decode
from datonis_edge.adapters.modbus_tcp.config import ModbusTcpService
from datonis_edge.adapters.opcua.adapter import OpcUaAdapter
from datonis_edge.adapters.opcua.config import OpcUaService
from datonis_edge.instructions import InstructionEngine
from datonis_edge.instructions import store as store_mod
from datonis_edge.instructions.store import INTERRUPTED, InstructionStore, Record
from datonis_edge.model import Batch, Outcome, OutcomeKind
from datonis_edge.protocol.instructions import sign_instruction
from datonis_edge.status import Alerts
from datonis_edge.uplinks.base import Uplink
from helpers import ModbusServer, OpcUaServer, free_port

AK, SK = "test-ak", "test-sk"


class FakeUplink(Uplink):
    """Records every ack; answers RETRY `fail_first` times before DELIVERED."""

    def __init__(self, fail_first: int = 0) -> None:
        super().__init__("fake")
        self.acks: list[tuple[str, str, bool, str]] = []
        self.fail_first = fail_first
        self.acked = asyncio.Event()

    async def send(self, batch: Batch) -> Outcome:
        return Outcome(OutcomeKind.DELIVERED, 200, "")

    async def instruction_ack(
        self, alert_key: str, thing_key: str, success: bool, message: str
    ) -> Outcome:
        if self.fail_first > 0:
            self.fail_first -= 1
            return Outcome(OutcomeKind.RETRY, None, "broker down")
        self.acks.append((alert_key, thing_key, success, message))
        self.acked.set()
        return Outcome(OutcomeKind.DELIVERED, 200, "")


class NoSink:
    async def __call__(self, readings: Any, raw: Any = None, checked: bool = False) -> int:
        return len(readings)


def modbus_service(port: int, **rule: Any) -> ModbusTcpService:
    rules = [
        {
            "name": "set_speed",
            "match": {"command": "set_speed"},
            "writes": [
                {"tag": "speed_sp", "from": "value", "min": 0, "max": 1500},
                {"tag": "run", "value": True},
            ],
            **rule,
        },
        {"name": "recipe", "writes": [{"tag": "recipe_name", "from": "recipe.name"}]},
    ]
    return ModbusTcpService.model_validate(
        {
            "type": "modbus_tcp",
            "name": "plc",
            "devices": [{"name": "plc1", "port": port, "timeout_ms": 500}],
            "tags": [
                {
                    "name": "speed_sp",
                    "register": "holding",
                    "address": 10,
                    "data_type": "float32",
                    "endian": "CDAB",
                },
                {
                    "name": "recipe_name",
                    "register": "holding",
                    "address": 20,
                    "data_type": "string",
                    "count": 4,
                },
                {"name": "run", "register": "coil", "address": 3},
            ],
            "things": [
                {
                    "thing_key": "press-1",
                    "metrics": [{"name": "speed_sp", "tag": "speed_sp"}],
                    "instructions": rules,
                }
            ],
        }
    )


@pytest.fixture
def modbus(tmp_path: Path) -> Iterator[ModbusServer]:
    server = ModbusServer(tmp_path, {"units": {"1": {"hr": {"0": [0] * 40}, "co": {"0": [0] * 8}}}})
    server.start()
    yield server
    server.stop()


class Rig:
    def __init__(self, root: Path, adapters: list[Adapter], uplink: FakeUplink) -> None:
        self.uplink = uplink
        self.alerts = Alerts()
        self.engine = InstructionEngine(
            root, AK, SK, ["press-1", "oven-1"], adapters, uplink, self.alerts
        )
        self.n = 0

    async def send(
        self, instruction: dict[str, Any], thing: str = "press-1", key: str | None = None
    ) -> str:
        self.n += 1
        key = key or f"ak{self.n}"
        await self.engine.sink(thing, sign_instruction(AK, SK, thing, key, instruction, 1))
        return key

    async def ack_of(self, key: str, timeout: float = 15) -> tuple[str, str, bool, str]:
        async def found() -> tuple[str, str, bool, str]:
            while True:
                for ack in self.uplink.acks:
                    if ack[0] == key:
                        return ack
                self.uplink.acked.clear()
                await self.uplink.acked.wait()

        return await asyncio.wait_for(found(), timeout)


@pytest.fixture
async def rig(tmp_path: Path, modbus: ModbusServer) -> AsyncIterator[Rig]:
    r = Rig(
        tmp_path / "instructions",
        [ModbusTcpAdapter(modbus_service(modbus.port), NoSink())],
        FakeUplink(),
    )
    r.engine.open()
    task = asyncio.create_task(r.engine.run())
    yield r
    task.cancel()
    await r.engine.close()
    for a in r.engine.mapping.rules.get("press-1", []):
        await a[0].close_writes()


async def read_back(port: int) -> tuple[float, str, bool]:
    client = AsyncModbusTcpClient("127.0.0.1", port=port)
    await client.connect()
    try:
        hr = (await client.read_holding_registers(10, count=14)).registers
        coil = (await client.read_coils(3, count=1)).bits[0]
    finally:
        client.close()
    return decode(hr[0:2], "float32", "CDAB"), decode(hr[10:14], "string", "ABCD"), coil


async def test_instruction_writes_register_and_coil_and_acks_success(
    rig: Rig, modbus: ModbusServer
) -> None:
    key = await rig.send({"command": "set_speed", "value": 1200.5})
    assert await rig.ack_of(key) == (
        key,
        "press-1",
        True,
        "set_speed: wrote speed_sp=1200.5, run=true",
    )
    assert await read_back(modbus.port) == (1200.5, "", True)
    key2 = await rig.send({"recipe": {"name": "PVC7"}})
    assert (await rig.ack_of(key2))[2:] == (True, "recipe: wrote recipe_name='PVC7'")
    assert (await read_back(modbus.port))[1] == "PVC7"
    await rig.engine.wait_acknowledged()
    assert rig.engine.store.pending == {}
    assert not list((rig.engine.store.pending_dir).iterdir())
    remembered = [json.loads(x) for x in rig.engine.store.executed_path.read_text().splitlines()]
    assert [r["alert_key"] for r in remembered] == [key, key2]
    counters = rig.engine.status.counters
    assert (counters["received"], counters["executed"], counters["acknowledged"]) == (2, 2, 2)


async def test_out_of_range_or_wrong_type_writes_nothing_and_acks_failed(
    rig: Rig, modbus: ModbusServer
) -> None:
    before = modbus.requests()
    key = await rig.send({"command": "set_speed", "value": 1500.1})
    _, _, ok, message = await rig.ack_of(key)
    assert not ok
    assert (
        message
        == "set_speed: nothing written: value out of range: speed_sp=1500.1 is above its max 1500"
    )
    key = await rig.send({"recipe": {"name": "much too long"}})
    _, _, ok, message = await rig.ack_of(key)
    assert not ok and "recipe_name holds 8 characters" in message
    key = await rig.send({"command": "set_speed", "value": "fast"})
    assert "speed_sp takes a number here" in (await rig.ack_of(key))[3]
    assert modbus.requests() == before  # nothing reached the device
    assert await read_back(modbus.port) == (0.0, "", False)
    assert rig.engine.status.counters["failed"] == 3


async def test_unknown_instruction_acks_failed_naming_the_rules(rig: Rig) -> None:
    key = await rig.send({"command": "launch"})
    _, _, ok, message = await rig.ack_of(key)
    assert not ok
    assert message == (
        'unknown instruction {"command": "launch"}: no rule of thing press-1 matches '
        "(set_speed, recipe)"
    )
    key = await rig.send({"command": "x"}, thing="oven-1")
    assert "thing oven-1 has no instructions configured" in (await rig.ack_of(key))[3]


async def test_bad_hash_or_foreign_thing_is_dropped_logged_once_and_alerted(
    rig: Rig, modbus: ModbusServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "datonis_edge.instructions")
    good = sign_instruction(AK, SK, "press-1", "k1", {"command": "set_speed", "value": 5}, 1)
    for _ in range(3):
        await rig.engine.sink("press-1", good.replace(b'"value":5', b'"value":9'))
    await rig.engine.sink("press-1", sign_instruction(AK, "other-secret", "press-1", "k2", {}, 1))
    await rig.engine.sink("stranger", sign_instruction(AK, SK, "stranger", "k3", {}, 1))
    await rig.engine.sink("oven-1", sign_instruction(AK, SK, "press-1", "k4", {}, 1))
    lines = [r.getMessage() for r in caplog.records]
    assert len([x for x in lines if "hash does not match" in x]) == 1  # once per cause
    assert any("'stranger' is not configured" in x for x in lines)
    assert any("came on the topic of 'oven-1'" in x for x in lines)
    assert len(rig.alerts.items) == 3 and all(a.level == "warning" for a in rig.alerts.items)
    counters = rig.engine.status.counters
    assert counters["rejected"] == 6 and counters["rejected_bad_hash"] == 4
    assert counters["received"] == 0 and rig.uplink.acks == []
    assert not list(rig.engine.store.pending_dir.iterdir())
    assert await read_back(modbus.port) == (0.0, "", False)


async def test_same_alert_key_is_executed_once_and_acknowledged_again(
    rig: Rig, modbus: ModbusServer
) -> None:
    key = await rig.send({"command": "set_speed", "value": 10})
    await rig.ack_of(key)
    await rig.engine.wait_acknowledged()
    writes_before = modbus.requests()
    await rig.send({"command": "set_speed", "value": 20}, key=key)  # the platform sends it again
    await rig.engine.wait_acknowledged()
    assert [a for a in rig.uplink.acks if a[0] == key] == [
        (key, "press-1", True, "set_speed: wrote speed_sp=10, run=true")
    ] * 2
    assert modbus.requests() == writes_before
    assert (await read_back(modbus.port))[0] == 10.0
    assert rig.engine.status.counters["executed"] == 1


async def test_device_not_answering_acks_failed_naming_it(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    adapter = ModbusTcpAdapter(modbus_service(port, device_wait_ms=300), NoSink())
    r = Rig(tmp_path / "i", [adapter], FakeUplink())
    r.engine.open()
    task = asyncio.create_task(r.engine.run())
    try:
        key = await r.send({"command": "set_speed", "value": 10})
        _, _, ok, message = await r.ack_of(key)
    finally:
        task.cancel()
    assert not ok
    assert message == (
        f"set_speed: nothing written: device plc1 at 127.0.0.1:{port} (unit 1) does not "
        f"answer: cannot connect to 127.0.0.1:{port}"
    )


async def test_ack_is_retried_until_delivered_and_only_then_forgotten(
    tmp_path: Path, modbus: ModbusServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "datonis_edge.instructions")
    uplink = FakeUplink(fail_first=2)
    r = Rig(tmp_path / "i", [ModbusTcpAdapter(modbus_service(modbus.port), NoSink())], uplink)
    r.engine.open()
    task = asyncio.create_task(r.engine.run())
    try:
        key = await r.send({"command": "set_speed", "value": 7})
        await asyncio.sleep(0)  # executing
        while r.engine.store.pending and r.engine.store.pending[key].state != "executed":
            await asyncio.sleep(0.01)
        assert list(r.engine.store.pending_dir.iterdir())  # kept while the ack is not through
        assert (await r.ack_of(key))[2] is True
        await r.engine.wait_acknowledged()
    finally:
        task.cancel()
    assert uplink.fail_first == 0 and len(uplink.acks) == 1
    lines = [(r.levelname, r.getMessage()) for r in caplog.records if "acknowledgements" in r.msg]
    assert [level for level, _ in lines] == ["WARNING", "INFO"]  # two failures, one line
    assert "broker down" in lines[0][1]
    assert not list(r.engine.store.pending_dir.iterdir())


async def test_new_master_executes_received_acks_executed_and_does_not_repeat_interrupted(
    tmp_path: Path, modbus: ModbusServer
) -> None:
    root = tmp_path / "instructions"
    left = InstructionStore(root)  # what a killed master left behind
    left.open()
    received = Record("r1", "press-1", 1, {"command": "set_speed", "value": 33}, 1000)
    interrupted = Record("r2", "press-1", 1, {"command": "set_speed", "value": 44}, 1001)
    executed = Record("r3", "press-1", 1, {"command": "set_speed", "value": 55}, 1002)
    for rec in (received, interrupted, executed):
        left.add(rec)
    left.executing(interrupted)
    left.executed_as(executed, True, "set_speed: wrote speed_sp=55, run=true")
    r = Rig(root, [ModbusTcpAdapter(modbus_service(modbus.port), NoSink())], FakeUplink())
    r.engine.open()
    task = asyncio.create_task(r.engine.run())
    try:
        acks = {k: await r.ack_of(k) for k in ("r1", "r2", "r3")}
        await r.engine.wait_acknowledged()
    finally:
        task.cancel()
    assert acks["r1"][2:] == (True, "set_speed: wrote speed_sp=33, run=true")
    assert acks["r2"][2:] == (False, INTERRUPTED)
    assert acks["r3"][2:] == (True, "set_speed: wrote speed_sp=55, run=true")
    assert (await read_back(modbus.port))[0] == 33.0  # r2 was not written again
    assert r.engine.status.counters["executed"] == 1
    assert not list((root / "pending").iterdir())


def test_executed_keys_are_remembered_bounded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_mod, "MAX_REMEMBERED", 10)
    store = InstructionStore(tmp_path)
    store.open()
    for i in range(25):
        rec = Record(f"k{i}", "t", 1, {}, i)
        store.add(rec)
        store.executed_as(rec, True, "ok")
        store.acknowledged(rec)
    assert list(store.executed) == [f"k{i}" for i in range(15, 25)]
    assert len(store.executed_path.read_text().splitlines()) < 20  # compacted on the way
    again = InstructionStore(tmp_path)
    again.open()
    assert again.known("k24") == "executed" and again.known("k14") is None
    (tmp_path / "executed.jsonl").open("a").write('{"alert_key": "torn')  # a crash mid-line
    third = InstructionStore(tmp_path)
    third.open()
    assert third.known("k24") == "executed"


# ---------------------------------------------------------------------- OPC UA


@pytest.fixture
def opcua(tmp_path: Path) -> Iterator[OpcUaServer]:
    server = OpcUaServer(tmp_path).start()
    yield server
    server.stop()


async def test_opcua_instruction_writes_nodes_in_their_types(
    tmp_path: Path, opcua: OpcUaServer
) -> None:
    service = OpcUaService.model_validate(
        {
            "type": "opcua",
            "name": "line",
            "endpoint": opcua.endpoint,
            "mode": "polling",
            "tags": [
                {"name": "setpoint", "node_id": "ns=2;s=Machine1.Setpoint"},
                {"name": "mode", "node_id": "ns=2;s=Machine1.Mode"},
                {"name": "running", "node_id": "ns=2;s=Machine1.Running"},
                {"name": "count", "node_id": "ns=2;i=1001"},
            ],
            "things": [
                {
                    "thing_key": "oven-1",
                    "metrics": [{"name": "setpoint", "tag": "setpoint"}],
                    "instructions": [
                        {
                            "name": "setup",
                            "writes": [
                                {"tag": "setpoint", "from": "setpoint"},
                                {"tag": "mode", "from": "mode"},
                                {"tag": "running", "value": False},
                            ],
                        },
                        {"name": "count", "writes": [{"tag": "count", "from": "count"}]},
                    ],
                }
            ],
        }
    )
    adapter = OpcUaAdapter(service, NoSink())
    r = Rig(tmp_path / "i", [adapter], FakeUplink())
    r.engine.open()
    tasks = [asyncio.create_task(adapter.run()), asyncio.create_task(r.engine.run())]
    try:
        key = await r.send({"setpoint": 72.25, "mode": 3}, thing="oven-1")
        assert (await r.ack_of(key))[2:] == (
            True, "setup: wrote setpoint=72.25, mode=3, running=false"
        )  # fmt: skip
        bad = await r.send({"setpoint": 10, "mode": -1}, thing="oven-1")
        assert (await r.ack_of(bad))[2:] == (
            False, "setup: nothing written: mode (uint16) takes 0 to 65535, not -1"
        )  # fmt: skip
        refused = await r.send({"count": 5}, thing="oven-1")  # the server does not let us
        _, _, ok, message = await r.ack_of(refused)
        assert not ok and "refused the write of count (ns=2;i=1001)" in message
        assert "BadUserAccessDenied" in message
    finally:
        for t in tasks:
            t.cancel()
    client = Client(opcua.endpoint)
    await client.connect()
    try:
        values = [
            await client.get_node(f"ns=2;s=Machine1.{n}").read_value()
            for n in ("Setpoint", "Mode", "Running")
        ]
    finally:
        await client.disconnect()
    assert values == [72.25, 3, False]


async def test_a_surprise_in_a_write_fails_that_instruction_not_the_engine(
    rig: Rig, modbus: ModbusServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    adapter = rig.engine.mapping.rules["press-1"][0][0]
    real_write = adapter.write

    async def flaky(tag: str, value: Any) -> None:
        if tag == "run":
            raise RuntimeError("library bug")
        await real_write(tag, value)

    monkeypatch.setattr(adapter, "write", flaky)
    key = await rig.send({"command": "set_speed", "value": 12})
    assert (await rig.ack_of(key))[2:] == (
        False,
        "set_speed: wrote speed_sp=12; run failed: unexpected error: RuntimeError: library bug",
    )
    monkeypatch.setattr(adapter, "write", real_write)
    key = await rig.send({"command": "set_speed", "value": 13})
    assert (await rig.ack_of(key))[2] is True
    assert await read_back(modbus.port) == (13.0, "", True)
