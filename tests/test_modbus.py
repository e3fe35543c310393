"""The modbus_tcp adapter against real pymodbus servers: every register kind and data type,
word orders, request batching, and a device that stops answering."""

from __future__ import annotations

import struct

import pytest

from datonis_edge.adapters.modbus_tcp.codec import TagSpec, decode, encode, plan_reads
from helpers import ModbusServer, base_config, good_and_flaky, silence_one_device, wait_until

TYPES = ["int16", "uint16", "int32", "uint32", "int64", "uint64", "float32", "float64"]
ORDERS = ["ABCD", "BADC", "CDAB", "DCBA"]
SAMPLES = {"int16": -1234, "uint16": 54321, "int32": -123456789, "uint32": 3_000_000_000,
           "int64": -(2**40) - 7, "uint64": 2**60 + 5, "float32": 1.5, "float64": -12345.678}  # fmt: skip


@pytest.mark.parametrize("data_type", TYPES)
@pytest.mark.parametrize("endian", ORDERS)
def test_decode_inverts_encode_in_every_word_order(data_type: str, endian: str) -> None:
    assert (
        decode(encode(SAMPLES[data_type], data_type, endian), data_type, endian)
        == SAMPLES[data_type]
    )


def test_word_orders_mean_what_their_names_say() -> None:
    raw = struct.pack(">f", 1.5)  # bytes A B C D
    a, b, c, d = raw
    assert encode(1.5, "float32", "ABCD") == [a << 8 | b, c << 8 | d]
    assert encode(1.5, "float32", "BADC") == [b << 8 | a, d << 8 | c]
    assert encode(1.5, "float32", "CDAB") == [c << 8 | d, a << 8 | b]
    assert encode(1.5, "float32", "DCBA") == [d << 8 | c, b << 8 | a]


def test_reads_are_planned_in_as_few_requests_as_the_protocol_allows() -> None:
    def tag(i: int, addr: int, reg: str = "holding", count: int = 1) -> TagSpec:
        return TagSpec(f"t{i}", "d", 1, reg, addr, count, "uint16", "ABCD", None)

    tags = [tag(i, i) for i in range(100)] + [tag(200, 300)] + [tag(300, 0, "coil")]
    groups = plan_reads(tags, max_gap=16)
    assert sorted((g.register, g.start, g.count) for g in groups) == [
        ("coil", 0, 1),
        ("holding", 0, 100),
        ("holding", 300, 1),
    ]
    big = plan_reads([tag(i, i * 2) for i in range(100)], max_gap=16)  # 199 registers: over 125
    assert [(g.start, g.count) for g in big] == [(0, 125), (126, 73)]


def _server_spec() -> tuple[dict, list[dict], dict]:
    """Known values in every register kind and data type/word order, and the tags that read them."""
    hr: dict[str, list[int]] = {}
    tags: list[dict] = []
    expected: dict[str, object] = {}
    addr = 0
    for data_type in TYPES:
        for endian in ORDERS:
            words = encode(SAMPLES[data_type], data_type, endian)
            hr[str(addr)] = words
            name = f"{data_type}_{endian}"
            # Datonis gateway spellings on half of them, ours on the rest
            if endian in ("ABCD", "CDAB"):
                tags.append(
                    {
                        "name": name,
                        "type": "holding",
                        "refAddr": addr,
                        "valType": data_type,
                        "endian": endian,
                    }
                )
            else:
                tags.append(
                    {
                        "name": name,
                        "register": "holding",
                        "address": addr,
                        "data_type": data_type,
                        "endian": endian,
                    }
                )
            expected[name] = SAMPLES[data_type]
            addr += len(words)
    text = "Press-7"
    hr["500"] = [
        ord(text[i]) << 8 | (ord(text[i + 1]) if i + 1 < len(text) else 0)
        for i in range(0, len(text), 2)
    ]
    tags.append(
        {"name": "label", "register": "holding", "address": 500, "data_type": "string", "count": 4}
    )
    expected["label"] = text
    hr["600"] = [0b0000_0000_0010_0100]
    tags += [
        {"name": "bit2", "register": "holding", "address": 600, "data_type": "bool", "bitIndex": 2},
        {"name": "bit3", "register": "holding", "address": 600, "data_type": "bool", "bitIndex": 3},
    ]
    expected.update(bit2=True, bit3=False)
    spec = {
        "units": {
            "1": {"hr": hr, "ir": {"10": [777]}, "co": {"5": [1, 0, 1]}, "di": {"0": [0, 1]}},
            "2": {"hr": {"0": [42]}},
        }
    }
    tags += [
        {"name": "input10", "register": "input", "address": 10},
        {"name": "coil5", "register": "coil", "address": 5},
        {"name": "coil6", "register": "coils", "address": 6},
        {"name": "di1", "register": "discrete_input", "address": 1},
        {"name": "unit2", "register": "holding", "address": 0, "deviceId": 2},
    ]
    expected.update(input10=777, coil5=True, coil6=False, di1=True, unit2=42)
    return spec, tags, expected


def test_every_register_kind_and_data_type_reaches_the_platform(
    platform, gateway_factory, tmp_path
) -> None:
    spec, tags, expected = _server_spec()
    server = ModbusServer(tmp_path, spec).start()
    try:
        config = base_config(platform)
        config["services"] = [
            {
                "name": "plc",
                "type": "modbus_tcp",
                "scan_interval_ms": 200,
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
        gateway_factory(config).start()
        event = wait_until(lambda: next(iter(platform.events()), None), what="a Modbus event")
        data = event["data"]
        assert data.pop("scaled_input") == pytest.approx(78.7)
        for name, value in expected.items():
            assert (
                data[name] == pytest.approx(value)
                if isinstance(value, float)
                else data[name] == value
            ), name
        assert set(data) == set(expected)
    finally:
        server.stop()


def test_a_hundred_tags_on_one_device_are_one_request_per_scan(
    platform, gateway_factory, tmp_path
) -> None:
    server = ModbusServer(tmp_path, {"units": {"1": {"hr": {"0": list(range(100))}}}}).start()
    try:
        config = base_config(platform)
        config["services"] = [
            {
                "name": "plc",
                "type": "modbus_tcp",
                "scan_interval_ms": 100,
                "devices": [{"name": "plc-1", "port": server.port}],
                "tags": [
                    {"name": f"r{i}", "register": "holding", "address": i} for i in range(100)
                ],
                "things": [
                    {
                        "thing_key": "m",
                        "metrics": [{"name": f"r{i}", "tag": f"r{i}"} for i in range(100)],
                    }
                ],
            }
        ]
        gw = gateway_factory(config).start()
        events = wait_until(
            lambda: (e := platform.events()) and len(e) >= 5 and e, what="5 scans delivered"
        )
        assert all(e["data"] == {f"r{i}": i for i in range(100)} for e in events)
        svc = gw.status()["services"][0]
        assert svc["details"]["requests_per_scan"] == 1
        device_requests = svc["details"]["devices"][0]["requests"]
        scans = svc["counters"]["received"]
        assert device_requests <= scans + 1  # one request per scan, not one per tag
        assert server.requests() >= scans  # the server saw them: the status does not lie
    finally:
        server.stop()


def test_a_device_that_stops_answering_affects_only_its_own_tags(
    platform, gateway_factory, tmp_path
) -> None:
    good = ModbusServer(tmp_path, {"units": {"1": {"hr": {"0": [11]}}}}, "good").start()
    flaky = ModbusServer(tmp_path, {"units": {"1": {"hr": {"0": [22]}}}}, "flaky").start()
    try:
        config = base_config(platform)
        config["services"] = [
            good_and_flaky(
                {"type": "modbus_tcp"},
                {"port": good.port, "timeout_ms": 200},
                {"port": flaky.port, "timeout_ms": 200},
                {"register": "holding", "address": 0},
                {"register": "holding", "address": 0},
            )
        ]
        gw = gateway_factory(config).start()
        silence_one_device(gw, platform, flaky.proc)
        assert all(e["data"] == {"b": 22} for e in platform.events() if e["thing_key"] == "m2")
    finally:
        good.stop()
        flaky.stop()
