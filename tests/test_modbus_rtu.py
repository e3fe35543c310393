"""The modbus_rtu adapter on a real serial line: a socat pty pair with pymodbus' serial
server on the far end serving several unit ids (tests/servers/modbus_rtu_rig.py). Every
register kind and data type, one request per unit per scan, one request on the wire at a
time with the inter-frame silence kept, a unit that stops answering, and an instruction that
writes a unit through mosquitto and the platform simulator."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import test_modbus as tcp_cases  # the modbus_tcp cases: the same tag model, the same values
from datonis_edge.adapters.modbus_rtu.config import ModbusRtuService
from datonis_edge.adapters.modbus_tcp.codec import encode
from helpers import Gateway, base_config, wait_until
from servers.modbus_rtu_rig import RtuLine
from test_instructions_e2e import Stack, gateway_config, stack  # noqa: F401 - the fixture


@pytest.fixture
def rtu(tmp_path: Path) -> Iterator[Callable[..., RtuLine]]:
    lines: list[RtuLine] = []

    def start(spec: dict[str, Any], **kw: Any) -> RtuLine:
        line = RtuLine(tmp_path, spec, name=f"rtu{len(lines)}", **kw)
        lines.append(line)
        return line.start()

    yield start
    for line in lines:
        line.stop()


def rtu_service(line: RtuLine, **extra: Any) -> dict[str, Any]:
    return {
        "name": "line1",
        "type": "modbus_rtu",
        "port": str(line.gateway_port),
        "baudrate": 19200,
        "parity": "N",
        "scan_interval_ms": 200,
        **extra,
    }


def test_inter_frame_silence_is_three_and_a_half_characters_or_fixed_above_19200() -> None:
    def service(**kw: Any) -> ModbusRtuService:
        return ModbusRtuService.model_validate(
            {
                "name": "l",
                "type": "modbus_rtu",
                "port": "/dev/ttyUSB0",
                "devices": [{"name": "u", "unit_id": 1}],
                **kw,
            }
        )

    assert service(baudrate=9600).inter_frame_s == pytest.approx(3.5 * 10 / 9600)  # 8N1
    assert service(baudrate=9600, parity="even").bits_per_char == 11  # 8E1
    assert service(baudrate=9600, parity="E", stopbits=2).bits_per_char == 12
    assert service(baudrate=115200).inter_frame_s == pytest.approx(0.00175)
    assert service(baudrate=115200, inter_frame_ms=5).inter_frame_s == pytest.approx(0.005)


def test_every_register_kind_and_data_type_on_two_units_reaches_the_platform(
    platform, gateway_factory, rtu
) -> None:
    spec, tags, expected = tcp_cases._server_spec()  # unit 1: every type; unit 2: one register
    line = rtu(spec)
    config = base_config(platform)
    config["services"] = [
        rtu_service(
            line,
            devices=[{"name": "press", "unit_id": 1}, {"name": "meter", "deviceId": 2}],
            tags=[t for t in tags if t["name"] != "unit2"]
            + [{"name": "unit2", "device": "meter", "register": "holding", "address": 0}],
            things=[
                {
                    "thing_key": "press-7",
                    "metrics": [{"name": t["name"], "tag": t["name"]} for t in tags],
                }
            ],
        )
    ]
    gw = gateway_factory(config).start()
    event = wait_until(lambda: next(iter(platform.events()), None), what="an RTU event")
    data = event["data"]
    for name, value in expected.items():
        assert data[name] == (pytest.approx(value) if isinstance(value, float) else value), name
    assert set(data) == set(expected)
    svc = gw.status()["services"][0]
    assert {d["name"]: d["connected"] for d in svc["details"]["devices"]} == {
        "press": True,
        "meter": True,
    }
    assert svc["details"]["line"]["framing"] == "8N1"


def test_fifty_registers_on_each_of_three_units_are_one_request_per_unit_per_scan_one_at_a_time(
    platform, gateway_factory, rtu
) -> None:
    units = {str(u): {"hr": {"0": [u * 1000 + i for i in range(50)]}} for u in (1, 2, 3)}
    line = rtu({"units": units})
    config = base_config(platform)
    config["services"] = [
        rtu_service(
            line,
            scan_interval_ms=100,
            inter_frame_ms=20,  # long enough to be measured through a pty
            devices=[{"name": f"u{u}", "unit_id": u} for u in (1, 2, 3)],
            tags=[
                {"name": f"u{u}_r{i}", "device": f"u{u}", "register": "holding", "address": i}
                for u in (1, 2, 3)
                for i in range(50)
            ],
            things=[
                {
                    "thing_key": f"unit-{u}",
                    "metrics": [{"name": f"r{i}", "tag": f"u{u}_r{i}"} for i in range(50)],
                }
                for u in (1, 2, 3)
            ],
        )
    ]
    gw = gateway_factory(config).start()
    events = wait_until(
        lambda: (e := platform.events()) and len(e) >= 15 and e, what="5 scans of 3 units"
    )
    for e in events:
        u = int(e["thing_key"].split("-")[1])
        assert e["data"] == {f"r{i}": u * 1000 + i for i in range(50)}
    svc = gw.status()["services"][0]
    assert svc["details"]["requests_per_scan"] == 3
    seen = line.line()
    scans = svc["counters"]["received"] // 3  # a reading per unit per scan
    for u in (1, 2, 3):
        # one request per unit per scan (a scan may be on the wire as we look)
        assert scans - 1 <= line.requests()[u] <= scans + 2, (u, line.requests(), scans)
    assert seen["overlaps"] == 0  # one request on the wire at a time
    assert seen["min_gap_ms"] >= 15  # the configured silence (20 ms) is kept, within pty jitter


def test_a_unit_that_stops_answering_is_skipped_while_the_others_keep_delivering_then_resumes(
    platform, gateway_factory, rtu
) -> None:
    line = rtu({"units": {"1": {"hr": {"0": [11]}}, "2": {"hr": {"0": [22]}}}})
    config = base_config(platform)
    config["services"] = [
        rtu_service(
            line,
            scan_interval_ms=100,
            timeout_ms=200,
            retry_max_backoff_ms=1000,
            devices=[{"name": "good", "unit_id": 1}, {"name": "dead", "unit_id": 2}],
            tags=[
                {"name": "a", "device": "good", "register": "holding", "address": 0},
                {"name": "b", "device": "dead", "register": "holding", "address": 0},
            ],
            things=[
                {"thing_key": "m1", "metrics": [{"name": "a", "tag": "a"}]},
                {"thing_key": "m2", "metrics": [{"name": "b", "tag": "b"}]},
            ],
        )
    ]
    gw = gateway_factory(config).start()
    wait_until(
        lambda: {e["thing_key"] for e in platform.events()} == {"m1", "m2"},
        what="both units delivering",
    )
    line.mute(2)
    svc = wait_until(
        lambda: (s := gw.status()["services"][0])["state"] == "degraded" and s,
        what="unit 2 reported down",
    )
    devices = {d["name"]: d for d in svc["details"]["devices"]}
    assert devices["dead"]["connected"] is False and "retrying" in devices["dead"]["last_error"]
    assert devices["good"]["connected"] is True
    seen = len(platform.events())
    asked = line.requests()[2]
    m1_before = sum(1 for e in platform.events() if e["thing_key"] == "m1")
    wait_until(
        lambda: sum(1 for e in platform.events() if e["thing_key"] == "m1") >= m1_before + 10,
        what="unit 1 keeps delivering",
    )
    assert [e for e in platform.events()[seen:] if e["thing_key"] == "m2"] == []
    # skipped for a backoff (0.5, 1, 1 s), not asked every 100 ms scan
    assert line.requests()[2] - asked <= 4
    assert "does not answer" in (gw.proc and gw.proc.log())
    line.mute()
    m2_before = sum(1 for e in platform.events() if e["thing_key"] == "m2")
    wait_until(
        lambda: sum(1 for e in platform.events() if e["thing_key"] == "m2") > m2_before + 2,
        what="unit 2 resumes",
    )
    wait_until(lambda: gw.status()["services"][0]["state"] == "running", what="service healthy")
    assert "answers again" in (gw.proc and gw.proc.log())
    assert line.line()["overlaps"] == 0


def test_an_instruction_writes_a_register_and_a_coil_of_a_unit_and_is_acked(
    stack: Stack,  # noqa: F811 - the fixture
    gateway_factory: Callable[..., Gateway],
    rtu,
) -> None:
    line = rtu({"units": {"1": {"hr": {"0": [5]}}, "3": {"hr": {"10": encode(0.0, "float32")}}}})
    service = rtu_service(
        line,
        devices=[{"name": "other", "unit_id": 1}, {"name": "drive", "unit_id": 3}],
        tags=[
            {"name": "x", "device": "other", "register": "holding", "address": 0},
            {
                "name": "speed_sp",
                "device": "drive",
                "register": "holding",
                "address": 10,
                "data_type": "float32",
            },
            {"name": "run", "device": "drive", "register": "coil", "address": 3},
        ],
        things=[
            {
                "thing_key": "drive-1",
                "metrics": [{"name": n, "tag": n} for n in ("x", "speed_sp", "run")],
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
    )
    gw = gateway_factory(gateway_config(stack, service)).start()
    wait_until(lambda: gw.status()["instructions"]["details"].get("receiving"), 10, "subscribed")
    wait_until(lambda: gw.status()["uplinks"][0]["state"] == "connected", 20, "connected")
    key = stack.sim.send_instruction("drive-1", {"command": "set_speed", "value": 1200.5})
    ack = stack.ack(key)
    assert ack["data"] == {"execution_status": "success"}
    assert ack["message"] == "set_speed: wrote speed_sp=1200.5, run=true"
    # the unit holds the values: the next scans read them back over the line
    wait_until(
        lambda: any(
            e["data"].get("speed_sp") == 1200.5 and e["data"].get("run") is True
            for e in stack.sim.events()
        ),
        what="the written values read back from unit 3",
    )
    assert line.line()["overlaps"] == 0  # the write waited for the reads on the line


def test_a_serial_port_that_is_not_there_is_reported_and_read_once_it_appears(
    platform, gateway_factory, tmp_path
) -> None:
    line = RtuLine(tmp_path, {"units": {"5": {"ir": {"0": [1234]}}}}, name="late")
    config = base_config(platform)
    config["services"] = [
        rtu_service(
            line,
            scan_interval_ms=100,
            timeout_ms=200,
            retry_max_backoff_ms=500,
            devices=[{"name": "meter", "unit_id": 5}],
            tags=[{"name": "flow", "register": "input", "address": 0}],
            things=[{"thing_key": "meter-5", "metrics": [{"name": "flow", "tag": "flow"}]}],
        )
    ]
    gw = gateway_factory(config).start()
    try:
        svc = wait_until(
            lambda: (s := gw.status()["services"][0])["state"] == "degraded" and s,
            what="the missing port reported",
        )
        error = svc["details"]["devices"][0]["last_error"]
        assert f"cannot open serial port {line.gateway_port}" in error
        line.start(probe=False)  # the adapter is plugged in
        event = wait_until(lambda: next(iter(platform.events()), None), what="the meter read")
        assert event["data"] == {"flow": 1234}
        wait_until(lambda: gw.status()["services"][0]["state"] == "running", what="healthy")
    finally:
        line.stop()
