"""The modbus_tcp writer against a real pymodbus server: every data type in every word order
(read back and decoded as the reader does), strings, one bit of a register, coils, and the
values each type refuses before any request."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pymodbus.client import AsyncModbusTcpClient

from datonis_edge.adapters.base import ValueRefused
from datonis_edge.adapters.modbus_tcp.adapter import ModbusTcpAdapter
from datonis_edge.adapters.modbus_tcp.codec import decode
from datonis_edge.adapters.modbus_tcp.config import ModbusTcpService
from helpers import ModbusServer

TYPES = ["int16", "uint16", "int32", "uint32", "int64", "uint64", "float32", "float64"]
ORDERS = ["ABCD", "BADC", "CDAB", "DCBA"]
SAMPLES = {"int16": -1234, "uint16": 54321, "int32": -123456789, "uint32": 3_000_000_000,
           "int64": -(2**40) - 7, "uint64": 2**60 + 5, "float32": 1.5, "float64": -12345.678}  # fmt: skip
WIDTH = {"int16": 1, "uint16": 1, "int32": 2, "uint32": 2, "float32": 2,
         "int64": 4, "uint64": 4, "float64": 4}  # fmt: skip


def _tags() -> list[dict[str, Any]]:
    tags, addr = [], 0
    for data_type in TYPES:
        for endian in ORDERS:
            tags.append({"name": f"{data_type}_{endian}", "register": "holding",
                         "address": addr, "data_type": data_type, "endian": endian})  # fmt: skip
            addr += 4
    tags += [
        {
            "name": "flag",
            "register": "holding",
            "address": 200,
            "data_type": "bool",
            "bit_index": 5,
        },
        {
            "name": "text",
            "register": "holding",
            "address": 210,
            "data_type": "string",
            "count": 3,
            "endian": "BADC",
        },
        {"name": "valve", "register": "coil", "address": 7},
        {"name": "level", "register": "input", "address": 0},
    ]
    return tags


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ModbusServer]:
    s = ModbusServer(tmp_path, {"units": {"1": {"hr": {"200": [0b1000_0000_0001]}}}}).start()
    yield s
    s.stop()


async def test_every_type_and_word_order_reads_back_as_written(server: ModbusServer) -> None:
    config = ModbusTcpService.model_validate(
        {
            "type": "modbus_tcp",
            "name": "m",
            "devices": [{"name": "plc", "port": server.port}],
            "tags": _tags(),
        }
    )
    adapter = ModbusTcpAdapter(config, None)  # type: ignore[arg-type]
    client = AsyncModbusTcpClient("127.0.0.1", port=server.port)
    await client.connect()
    try:
        for data_type in TYPES:
            for endian in ORDERS:
                tag = f"{data_type}_{endian}"
                await adapter.write(tag, await adapter.check_write(tag, SAMPLES[data_type]))
        for tag, value in (("flag", True), ("text", "Hello"), ("valve", True)):
            await adapter.write(tag, await adapter.check_write(tag, value))
        regs = (await client.read_holding_registers(0, count=64)).registers
        regs += (await client.read_holding_registers(64, count=64)).registers
        addr = 0
        for data_type in TYPES:
            for endian in ORDERS:
                got = decode(regs[addr : addr + WIDTH[data_type]], data_type, endian)
                assert got == SAMPLES[data_type], (data_type, endian)
                addr += 4
        flag = (await client.read_holding_registers(200, count=1)).registers[0]
        assert flag == 0b1000_0010_0001  # bit 5 set, the other bits kept
        text = (await client.read_holding_registers(210, count=3)).registers
        assert decode(text, "string", "BADC") == "Hello"
        assert (await client.read_coils(7, count=1)).bits[0] is True
        await adapter.write("flag", await adapter.check_write("flag", False))
        assert (await client.read_holding_registers(200, count=1)).registers[0] == 0b1000_0000_0001
    finally:
        client.close()
        await adapter.close_writes()


@pytest.mark.parametrize(
    ("tag", "value", "words"),
    [
        ("int16_ABCD", 40000, "int16_ABCD (int16) takes -32768 to 32767, not 40000"),
        ("uint16_ABCD", -1, "takes 0 to 65535, not -1"),
        ("uint64_ABCD", 2**64, "takes 0 to 18446744073709551615"),
        ("int32_ABCD", 1.5, "takes a whole number, not 1.5"),
        ("float32_ABCD", 1e39, "cannot hold 1e+39"),
        ("float64_ABCD", True, "takes a number (float64), not True"),
        ("valve", "open", "valve takes true or false, not 'open'"),
        ("text", "Grüße!!", "text holds 6 characters"),
        ("text", "日本", "Latin-1 characters only"),
        ("level", 1, "level is a read-only input register"),
        ("nope", 1, "no tag named nope"),
    ],
)
async def test_values_that_do_not_fit_are_refused_before_any_request(
    server: ModbusServer, tag: str, value: Any, words: str
) -> None:
    config = ModbusTcpService.model_validate(
        {
            "type": "modbus_tcp",
            "name": "m",
            "devices": [{"name": "plc", "port": server.port}],
            "tags": _tags(),
        }
    )
    adapter = ModbusTcpAdapter(config, None)  # type: ignore[arg-type]
    before = server.requests()
    with pytest.raises(ValueRefused) as err:
        await adapter.check_write(tag, value)
    assert words in err.value.reason
    assert server.requests() == before
    await adapter.close_writes()
