"""A write typed in the console takes the instruction engine's turn: against a real pymodbus
server whose writes are slowed, a console write and a platform instruction on the same adapter
never overlap, both complete, and only the instruction is stored and acknowledged."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import test_instructions_engine
from datonis_edge.adapters.modbus_tcp.adapter import ModbusTcpAdapter
from helpers import ModbusServer
from test_instructions_engine import Rig, read_back

rig = test_instructions_engine.rig  # the same engine on a real pymodbus server

SLOW_S = 0.2  # per write: long enough that an overlap could not go unseen


@pytest.fixture
def modbus(tmp_path: Path) -> Iterator[ModbusServer]:
    server = ModbusServer(tmp_path, {"units": {"1": {"hr": {"0": [0] * 40}, "co": {"0": [0] * 8}}}})
    server.start()
    yield server
    server.stop()


class Slowed:
    """Wraps an adapter's write: each takes SLOW_S; records (who, start, end) and overlaps."""

    def __init__(self, adapter: ModbusTcpAdapter) -> None:
        self.real = adapter.write
        self.active = 0
        self.most = 0
        self.spans: list[tuple[str, float, float]] = []
        self.started = asyncio.Event()

    async def write(self, tag: str, value: Any) -> None:
        self.active += 1
        self.most = max(self.most, self.active)
        self.started.set()
        start = asyncio.get_running_loop().time()
        try:
            await asyncio.sleep(SLOW_S)
            await self.real(tag, value)
        finally:
            self.active -= 1
            self.spans.append((f"{tag}={value}", start, asyncio.get_running_loop().time()))


async def test_a_console_write_waits_for_the_instruction_on_the_same_adapter(
    rig: Rig, modbus: ModbusServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    adapter = rig.engine.mapping.rules["press-1"][0][0]
    slowed = Slowed(adapter)
    monkeypatch.setattr(adapter, "write", slowed.write)
    key = await rig.send({"command": "set_speed", "value": 100})
    await asyncio.wait_for(slowed.started.wait(), 10)  # the instruction is writing now
    ok, message = await asyncio.wait_for(
        rig.engine.write_now("press-1", {"command": "set_speed", "value": 200}), 10
    )
    assert (ok, message) == (True, "set_speed: wrote speed_sp=200, run=true")
    assert slowed.most == 1, slowed.spans
    # the instruction's two writes, then the console's two, one after the other
    assert [s[0].split("=")[0] for s in slowed.spans] == ["speed_sp", "run"] * 2
    assert "100" in slowed.spans[0][0] and "200" in slowed.spans[2][0], slowed.spans
    assert all(a[2] <= b[1] for a, b in zip(slowed.spans, slowed.spans[1:], strict=False))
    assert (await rig.ack_of(key))[2:] == (True, "set_speed: wrote speed_sp=100, run=true")
    assert (await read_back(modbus.port))[0] == 200.0  # the console's, written last
    await rig.engine.wait_acknowledged()
    # the console write is counted, but neither stored nor acknowledged
    assert [a[0] for a in rig.uplink.acks] == [key]
    assert rig.engine.status.counters["console_writes"] == 1
    assert rig.engine.status.counters["received"] == 1


async def test_an_instruction_waits_for_a_console_write_in_progress(
    rig: Rig, modbus: ModbusServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    adapter = rig.engine.mapping.rules["press-1"][0][0]
    slowed = Slowed(adapter)
    monkeypatch.setattr(adapter, "write", slowed.write)
    console = asyncio.create_task(
        rig.engine.write_now("press-1", {"command": "set_speed", "value": 300})
    )
    await asyncio.wait_for(slowed.started.wait(), 10)
    key = await rig.send({"command": "set_speed", "value": 400})
    assert (await asyncio.wait_for(console, 10))[0] is True
    assert (await rig.ack_of(key))[2] is True
    assert slowed.most == 1, slowed.spans
    assert "300" in slowed.spans[0][0] and "400" in slowed.spans[2][0], slowed.spans
    assert all(a[2] <= b[1] for a, b in zip(slowed.spans, slowed.spans[1:], strict=False))
    assert (await read_back(modbus.port))[0] == 400.0


async def test_a_console_write_out_of_range_writes_nothing(rig: Rig, modbus: ModbusServer) -> None:
    before = modbus.requests()
    ok, message = await rig.engine.write_now("press-1", {"command": "set_speed", "value": 2000})
    assert not ok and message.startswith("set_speed: nothing written:"), message
    assert "1500" in message
    assert modbus.requests() == before
