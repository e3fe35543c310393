"""The s7 writer against python-snap7's S7 server: every type written reads back as the
reader decodes it (checked with snap7's own client), a BOOL changes only its bit, a STRING
keeps the PLC's declared maximum; values that do not fit, and inputs, are refused before any
request; a PLC that does not answer fails the write with its name."""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import snap7
from snap7.type import Area

from datonis_edge.adapters.base import ValueRefused, WriteFailed
from datonis_edge.adapters.s7.adapter import S7Adapter
from datonis_edge.adapters.s7.config import S7Service
from helpers import free_port
from test_s7 import S7Plcs

SAMPLES = [
    ("real", "DB1.DBD0", "REAL", 1200.5, ">f"),
    ("int", "DB1.DBW4", "INT", -1234, ">h"),
    ("byte", "DB1.DBB7", "BYTE", 200, ">B"),
    ("dint", "DB1.DBD8", "DINT", -123_456_789, ">i"),
    ("word", "DB1.DBW12", "WORD", 54_321, ">H"),
    ("dword", "DB1.DBD14", "DWORD", 3_000_000_000, ">I"),
    ("lreal", "DB1.DBB18", "LREAL", -12_345.678_9, ">d"),
    ("mw10", "MW10", "INT", -5, ">h"),
    ("md20", "MD20", "REAL", 3.75, ">f"),
    ("qw2", "QW2", "WORD", 65_535, ">H"),
    ("sint", "DB1.DBB40", "SINT", -100, ">b"),
    ("usint", "DB1.DBB41", "USINT", 255, ">B"),
    ("uint", "DB1.DBW42", "UINT", 60_000, ">H"),
    ("udint", "DB1.DBD44", "UDINT", 4_000_000_000, ">I"),
]


def _config(port: int, timeout_ms: int = 1000) -> S7Service:
    tags: list[dict[str, Any]] = [{"name": n, "address": a, "type": t} for n, a, t, _, _ in SAMPLES]
    tags += [
        {"name": "flag", "address": "DB1.DBX6.5"},
        {"name": "out", "address": "Q0.3"},
        {"name": "marker", "area": "M", "offset": 1, "bit": 7, "type": "BOOL"},
        {"name": "text", "address": "DB1.DBB26", "type": "STRING", "length": 10},
        {"name": "sensor", "address": "IW0"},
    ]
    return S7Service.model_validate(
        {"type": "s7", "name": "w", "devices": [{"name": "plc", "port": port, "timeout_ms": timeout_ms}],
         "tags": tags}
    )  # fmt: skip


@pytest.fixture
def plc(tmp_path: Path) -> Iterator[S7Plcs]:
    db1 = bytearray(64)
    db1[6] = 0b1000_0001  # bits 0 and 7 set: a write of bit 5 must keep them
    db1[26] = 10  # STRING[10]: the declared maximum the PLC keeps
    server = S7Plcs(
        tmp_path, {"DB1": bytes(db1), "M": bytes(32), "Q": bytes([0b0100_0000]), "I": bytes(4)}
    )
    yield server.start()
    server.stop()


def _read(port: int, area: Area, db: int, start: int, size: int) -> bytes:
    client = snap7.Client()
    client.connect("127.0.0.1", 0, 1, port)
    try:
        return bytes(client.read_area(area, db, start, size))
    finally:
        client.disconnect()


async def test_every_type_reads_back_as_written(plc: S7Plcs) -> None:
    adapter = S7Adapter(_config(plc.port), None)  # type: ignore[arg-type]
    try:
        for name, _, _, value, _ in SAMPLES:
            await adapter.write(name, await adapter.check_write(name, value))
        for name, address, _, value, fmt in SAMPLES:
            tag = adapter.config.tags[[t.name for t in adapter.config.tags].index(name)].s7
            area = {"DB": Area.DB, "M": Area.MK, "Q": Area.PA}[tag.area]
            raw = _read(plc.port, area, tag.db, tag.offset, tag.size)
            assert struct.unpack(fmt, raw)[0] == pytest.approx(value), (name, address)
        # the readers' own scan decodes them the same way
        values = await adapter.plcs[0].read()
        for name, _, _, value, _ in SAMPLES:
            assert values[name] == pytest.approx(value), name
    finally:
        await adapter.close_writes()
        await adapter.plcs[0].link.close()


async def test_a_bool_changes_only_its_bit_and_a_string_keeps_its_maximum(plc: S7Plcs) -> None:
    adapter = S7Adapter(_config(plc.port), None)  # type: ignore[arg-type]
    try:
        await adapter.write("flag", await adapter.check_write("flag", True))
        assert _read(plc.port, Area.DB, 1, 6, 1) == bytes([0b1010_0001])
        await adapter.write("flag", await adapter.check_write("flag", False))
        assert _read(plc.port, Area.DB, 1, 6, 1) == bytes([0b1000_0001])
        await adapter.write("out", await adapter.check_write("out", 1))
        assert _read(plc.port, Area.PA, 0, 0, 1) == bytes([0b0100_1000])
        await adapter.write("marker", await adapter.check_write("marker", True))
        assert _read(plc.port, Area.MK, 0, 1, 1) == bytes([0b1000_0000])
        await adapter.write("text", await adapter.check_write("text", "Recipe-7"))
        assert _read(plc.port, Area.DB, 1, 26, 10) == bytes([10, 8]) + b"Recipe-7"
        values = await adapter.plcs[0].read()
        assert values["text"] == "Recipe-7" and values["flag"] is False and values["out"] is True
    finally:
        await adapter.close_writes()
        await adapter.plcs[0].link.close()


@pytest.mark.parametrize(
    ("tag", "value", "reason"),
    [
        ("int", 40_000, "int (int16) takes -32768 to 32767, not 40000"),
        ("byte", -1, "byte (uint8) takes 0 to 255, not -1"),
        ("sint", 128, "sint (int8) takes -128 to 127, not 128"),
        ("word", 1.5, "word (uint16) takes a whole number, not 1.5"),
        ("real", "hot", "real takes a number (float32), not 'hot'"),
        ("flag", 2, "flag takes true or false, not 2"),
        ("text", "much too long", "text holds 10 characters, 'much too long' has 13"),
        ("text", "Ω", "text takes Latin-1 characters only"),
        ("sensor", 1, "sensor (IW0) is an input, which the PLC overwrites every cycle"),
        ("nope", 1, "no tag named nope"),
    ],
)
async def test_values_that_do_not_fit_are_refused_before_any_request(
    plc: S7Plcs, tag: str, value: Any, reason: str
) -> None:
    adapter = S7Adapter(_config(plc.port), None)  # type: ignore[arg-type]
    before = _read(plc.port, Area.DB, 1, 0, 64)
    with pytest.raises(ValueRefused) as info:
        await adapter.check_write(tag, value)
    assert reason in info.value.reason
    assert _read(plc.port, Area.DB, 1, 0, 64) == before
    assert not adapter._writer.links  # not even a connection


async def test_a_plc_that_does_not_answer_fails_the_write_naming_it() -> None:
    adapter = S7Adapter(_config(free_port(), timeout_ms=200), None)  # type: ignore[arg-type]
    with pytest.raises(WriteFailed) as info:
        await adapter.check_write("int", 5, wait_s=0.5)
    assert info.value.reason.startswith("PLC plc at 127.0.0.1:")
    assert "does not answer: cannot connect" in info.value.reason
    await adapter.close_writes()
