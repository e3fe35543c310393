"""The compact forms that keep a plant-sized config small (bench/memory.py measures how small):
YAML values built from the parser's events equal PyYAML's, with the same errors; Modbus tags
and thing metrics kept as slotted records read the same values as the validated models say,
for every register kind and data type, from a real pymodbus server."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import yaml

from datonis_edge.adapters.modbus_tcp.adapter import ModbusTcpAdapter
from datonis_edge.adapters.modbus_tcp.codec import TagSpec
from datonis_edge.adapters.modbus_tcp.config import ModbusTag
from datonis_edge.config.models import MetricConfig, MetricRecord
from datonis_edge.config.yaml_values import LOADER, load_yaml
from datonis_edge.root_config import parse_config
from datonis_edge.things.mapping import ThingMap
from helpers import ModbusServer, base_config
from test_modbus import _server_spec

ROOT = Path(__file__).resolve().parent.parent

DOCUMENTS = [
    "",
    "a: 1",
    "- 1\n- 2",
    "a: &a {b: 1, c: 2}\nd:\n  <<: *a\n  c: 3\n",
    "a: &a {bbbb: 1}\nb: &b {bbbb: 2, z: 1}\nc: {<<: [*a, *b], q: 1}\n",
    "a: !!str 123\nb: !!int '7'\nc: 2020-01-01\nd: ~\ne: yes\nf: 0x1f\ng: 1e3\nh: .nan\n",
    "=: 1",
    "a: =",
    "? [1]\n: 2",
    "a: *x",
    "a: &x 1\nb: &x 2",
    "--- 1\n--- 2",
    "a: !!set {x, y}",
    "a: !!omap [{x: 1}]",
    "a: !foo 1",
    "a: !!binary aGk=",
    "a: {b: [1, &c {x: 1}, *c]}",
    "a: &l [1, *l]",
    "a: {<<: 1}",
    "a: {<<: [{x: 1}, 2]}",
    "a: !!int x",
    "a:\n  - b\n c",
    "k: {b: 1, b: 2}",
    "'1': 1\n1: 2",
]


def _outcome(load, text: str) -> tuple[str, object]:  # type: ignore[no-untyped-def]
    try:
        return "value", load(text)
    except Exception as exc:  # what PyYAML raises is the answer, whatever its class
        return type(exc).__name__, str(exc)


@pytest.mark.parametrize(
    "text",
    DOCUMENTS
    + [
        p.read_text()
        for p in sorted((ROOT / "tests" / "config_cases").glob("*/edge.yaml"))
        if p.parent.name != "alias_bomb"  # equal, but printing 9^9 values to compare them is not
    ],
)
def test_yaml_values_and_errors_are_pyyamls(text: str) -> None:
    ours = _outcome(load_yaml, text)
    theirs = _outcome(lambda t: yaml.load(t, Loader=LOADER), text)
    assert repr(ours) == repr(theirs)


def test_an_alias_is_the_same_object_as_its_anchor() -> None:
    # the size and depth checks measure each anchor once: aliases must not be copies
    data = load_yaml("x-a: &a [1, 2]\nb: [*a, *a]\nc: &m {k: 1}\nd: {<<: *m, j: 2}\n")
    assert data["b"][0] is data["x-a"] and data["b"][1] is data["x-a"]
    assert data["d"] == {"k": 1, "j": 2}


def test_records_carry_every_validated_value() -> None:
    _, tags, _ = _server_spec()
    for raw in tags:
        model = ModbusTag.model_validate(raw)
        record = model.record()
        assert isinstance(record, TagSpec)
        assert record.name == model.name and record.register_kind == model.register_kind
        assert (record.address, record.count, record.data_type, record.endian) == (
            model.address,
            model.count,
            model.data_type,
            model.endian,
        )
        assert record.bit_index == model.bit_index and record.unit_id == model.unit_id
    metric = MetricConfig.model_validate(
        {
            "name": "rate",
            "expression": "latestValue[0] - previousValue[0]",
            "inputs": ["count"],
            "scale": 0.5,
            "offset": 1,
            "diff": True,
            "deadband": 2,
        }
    )
    assert metric.record() == MetricRecord(
        "rate", "", "latestValue[0] - previousValue[0]", ("count",), 0.5, 1.0, True, 2.0
    )


def test_compact_tags_read_every_register_kind_and_data_type(tmp_path: Path) -> None:
    spec, tags, expected = _server_spec()
    server = ModbusServer(tmp_path, spec).start()
    try:
        config = base_config(None)
        config["services"] = [
            {
                "name": "plc",
                "type": "modbus_tcp",
                "devices": [{"name": "plc-1", "port": server.port, "unit_id": 1}],
                "tags": tags,
                "things": [
                    {
                        "thing_key": "press-7",
                        "metrics": [{"name": t["name"], "tag": t["name"]} for t in tags]
                        + [{"name": "scaled_input", "tag": "input10", "scale": 0.1, "offset": 1}],
                    }
                ],
            }
        ]
        service = parse_config(config).services[0]
        assert all(isinstance(t, TagSpec) for t in service.tags)
        assert all(isinstance(m, MetricRecord) for m in service.things[0].metrics)
        # a tag that names no unit reads from its device's unit; deviceId 2 keeps its own
        assert {t.name: t.unit_id for t in service.tags}["unit2"] == 2
        assert {t.name: t.unit_id for t in service.tags}["input10"] == 1

        async def sink(readings: list) -> None:  # type: ignore[type-arg]
            raise AssertionError("scan() alone does not store")

        adapter = ModbusTcpAdapter(service, sink)

        async def scan_once() -> list:  # type: ignore[type-arg]
            try:
                return await adapter.scan()
            finally:
                for device in adapter.devices:
                    device.close()

        readings = asyncio.run(scan_once())
        assert len(readings) == 1
        data = ThingMap(service.things).apply(readings)[0]["data"]
        assert data.pop("scaled_input") == pytest.approx(78.7)
        for name, value in expected.items():
            assert data[name] == (pytest.approx(value) if isinstance(value, float) else value), name
        assert set(data) == set(expected)
    finally:
        server.stop()
