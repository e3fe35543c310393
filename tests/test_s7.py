"""The s7 adapter against python-snap7's own S7 server (tests/servers/s7_server.py, a real
process on loopback): every area and data type arrives at the platform exactly, a scan of
many tags is one read request (counted at the server), a PLC that stops answering affects
only its own tags and resumes, and TSAP connections."""

from __future__ import annotations

import json
import signal
import struct
import sys
from pathlib import Path
from typing import Any

import pytest

from datonis_edge.adapters.s7.address import parse_address, spelled_address
from datonis_edge.adapters.s7.codec import TagRead, plan_blocks, plan_requests
from helpers import (
    Proc,
    base_config,
    free_port,
    good_and_flaky,
    silence_one_device,
    wait_port,
    wait_until,
)

SERVER = Path(__file__).parent / "servers" / "s7_server.py"


class S7Plcs:
    """tests/servers/s7_server.py in its own process: one PLC per port (SIGSTOP: dead PLCs)."""

    def __init__(
        self,
        tmp: Path,
        spec: dict[str, bytes],
        count: int = 1,
        name: str = "s7",
        ports: list[int] | None = None,
    ) -> None:
        self.ports = ports or [free_port() for _ in range(count)]
        spec_path = tmp / f"{name}-{self.ports[0]}.json"
        spec_path.write_text(json.dumps({k: v.hex() for k, v in spec.items()}))
        self.count_dir = tmp / f"{name}-counts"
        self.count_dir.mkdir(exist_ok=True)
        self.proc = Proc(
            [sys.executable, str(SERVER), "--ports", ",".join(map(str, self.ports)),
             "--spec", str(spec_path), "--count-dir", str(self.count_dir)],
            tmp / f"{name}-{self.ports[0]}.log",
        )  # fmt: skip

    @property
    def port(self) -> int:
        return self.ports[0]

    def start(self) -> S7Plcs:
        self.proc.start()
        for port in self.ports:
            wait_port(port)
        return self

    def reads(self, port: int | None = None) -> tuple[int, int]:
        """(read requests, variables in them) the PLC on `port` has answered."""
        try:
            text = (self.count_dir / f"{port or self.port}.count").read_text()
            requests, items = text.split()
            return int(requests), int(items)
        except (FileNotFoundError, ValueError):
            return 0, 0

    def stop(self) -> None:
        self.proc.signal(signal.SIGCONT)
        self.proc.stop()


def _memory() -> tuple[dict[str, bytes], list[dict[str, Any]], dict[str, Any]]:
    """Known values of every type in DB, M, I and Q, and the tags that read them (Siemens
    addresses on some, the Datonis spelling on others)."""
    db1 = bytearray(200)
    struct.pack_into(">f", db1, 0, 21.5)  # DBD0 REAL
    struct.pack_into(">h", db1, 4, -1234)  # DBW4 INT
    db1[6] = 0b0000_1000  # DBX6.3 true, DBX6.2 false
    db1[7] = 0xA5  # DBB7 BYTE
    struct.pack_into(">i", db1, 8, -123_456_789)  # DBD8 DINT
    struct.pack_into(">H", db1, 12, 54_321)  # DBW12 WORD
    struct.pack_into(">I", db1, 14, 3_000_000_000)  # DBD14 DWORD
    struct.pack_into(">d", db1, 18, -12_345.678_9)  # DBB18 LREAL
    db1[26:28] = bytes([20, 7])  # DBB26 STRING[20] = 'Press-7'
    db1[28:35] = b"Press-7"
    db1[40] = 0xFB  # DBB40 SINT -5
    db1[41] = 250  # DBB41 USINT
    struct.pack_into(">H", db1, 42, 60_000)  # DBW42 UINT
    struct.pack_into(">I", db1, 44, 4_000_000_000)  # DBD44 UDINT
    db2 = bytearray(8)
    struct.pack_into(">f", db2, 4, -0.25)
    m = bytearray(32)
    struct.pack_into(">H", m, 10, 4242)  # MW10
    struct.pack_into(">f", m, 20, 3.75)  # MD20 REAL
    m[0] = 0b10  # M0.1
    i = bytearray(8)
    i[0] = 0b10  # I0.1
    struct.pack_into(">h", i, 4, -7)  # IW4 INT
    q = bytearray(8)
    q[0] = 0b1  # Q0.0
    q[1] = 99  # QB1
    spec = {"DB1": bytes(db1), "DB2": bytes(db2), "M": bytes(m), "I": bytes(i), "Q": bytes(q)}
    tags = [
        {"name": "real", "address": "DB1.DBD0", "type": "REAL"},
        {"name": "int", "address": "DB1.DBW4", "type": "INT"},
        {"name": "bit_on", "address": "DB1.DBX6.3"},
        {"name": "bit_off", "address": "DB1.DBX6.2"},
        {"name": "byte", "address": "DB1.DBB7"},
        {"name": "dint", "area": "DB", "db": 1, "offset": 8, "type": "DINT"},
        {"name": "word", "address": "DB1.DBW12"},
        {"name": "dword", "address": "DB1.DBD14"},
        {"name": "lreal", "area": "DB", "db": 1, "offset": 18, "type": "LREAL"},
        {"name": "text", "address": "DB1.DBB26", "type": "STRING", "length": 20},
        {"name": "sint", "address": "DB1.DBB40", "type": "SINT"},
        {"name": "usint", "address": "DB1.DBB41", "type": "USINT"},
        {"name": "uint", "address": "DB1.DBW42", "type": "UINT"},
        {"name": "udint", "area": "DB", "db": 1, "offset": 44, "type": "UDINT"},
        {"name": "db2_real", "area": "db", "db_number": 2, "offset": 4, "type": "real"},
        {"name": "mw10", "address": "MW10"},
        {"name": "md20", "address": "MD20", "type": "REAL"},
        {"name": "m0_1", "address": "M0.1"},
        {"name": "m0_0", "area": "M", "offset": 0, "bit": 0, "type": "BOOL"},
        {"name": "i0_1", "address": "I0.1"},
        {"name": "iw4", "address": "IW4", "type": "INT"},
        {"name": "q0_0", "address": "Q0.0"},
        {"name": "qb1", "address": "QB1"},
        {"name": "ew4", "address": "EW4"},  # the German mnemonic of IW4, as a WORD
    ]
    expected = {
        "real": 21.5, "int": -1234, "bit_on": True, "bit_off": False, "byte": 0xA5,
        "dint": -123_456_789, "word": 54_321, "dword": 3_000_000_000, "lreal": -12_345.678_9,
        "text": "Press-7", "sint": -5, "usint": 250, "uint": 60_000, "udint": 4_000_000_000,
        "db2_real": -0.25, "mw10": 4242, "md20": 3.75, "m0_1": True,
        "m0_0": False, "i0_1": True, "iw4": -7, "q0_0": True, "qb1": 99, "ew4": 65_529,
    }  # fmt: skip
    return spec, tags, expected


def _service(port: int, tags: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {
        "name": "plc",
        "type": "s7",
        "scan_interval_ms": 200,
        "devices": [{"name": "plc-1", "port": port, "rack": 0, "slot": 1}],
        "tags": tags,
        "things": [
            {
                "thing_key": "press-7",
                "metrics": [{"name": t["name"], "tag": t["name"]} for t in tags],
            }
        ],
        **extra,
    }


# ----------------------------------------------------------------------- addresses, planning


@pytest.mark.parametrize(
    ("text", "data_type", "want"),
    [
        ("DB1.DBD0", None, ("DB", 1, 0, 0, "DWORD")),
        ("DB1.DBD0", "REAL", ("DB", 1, 0, 0, "REAL")),
        ("DB1.DBX6.3", None, ("DB", 1, 6, 3, "BOOL")),
        ("DB1.DBW2", "INT", ("DB", 1, 2, 0, "INT")),
        ("DB1.DBB4", None, ("DB", 1, 4, 0, "BYTE")),
        ("db 10.dbb 8", "LREAL", ("DB", 10, 8, 0, "LREAL")),
        ("MW10", None, ("M", 0, 10, 0, "WORD")),
        ("MD20", "DINT", ("M", 0, 20, 0, "DINT")),
        ("M0.1", None, ("M", 0, 0, 1, "BOOL")),
        ("I0.1", None, ("I", 0, 0, 1, "BOOL")),
        ("IW4", None, ("I", 0, 4, 0, "WORD")),
        ("E1.7", None, ("I", 0, 1, 7, "BOOL")),
        ("Q0.0", None, ("Q", 0, 0, 0, "BOOL")),
        ("QB1", None, ("Q", 0, 1, 0, "BYTE")),
        ("AW2", None, ("Q", 0, 2, 0, "WORD")),
    ],
)
def test_siemens_addresses_parse(text: str, data_type: str | None, want: tuple) -> None:
    a = parse_address(text, data_type)
    assert (a.area, a.db, a.offset, a.bit, a.data_type) == want


def test_spelled_out_addresses_are_the_same_as_siemens_ones() -> None:
    assert spelled_address("DB", 1, 0, None, "real", None) == parse_address("DB1.DBD0", "REAL")
    assert spelled_address("merker", None, 0, 1, "BOOL", None) == parse_address("M0.1")
    assert spelled_address("outputs", None, 1, None, "BYTE", None) == parse_address("QB1")
    s = spelled_address("DB", 3, 10, None, "STRING", 16)
    assert (s.size, s.length) == (18, 16)


@pytest.mark.parametrize(
    ("text", "data_type", "error"),
    [
        ("DB1.DBX6.9", None, "bit 9 is not 0-7"),
        ("DB1.DBQ0", None, "is not an S7 address; write it like DB1.DBD0"),
        ("MW10.1", None, "drop '.1'"),
        ("M10", None, "names no size"),
        ("DB1.DBW0", "REAL", "holds a WORD and cannot be read as REAL; use INT, UINT or WORD"),
        ("DB1.DBD0", "FLOT", "type: 'FLOT' is not an S7 data type"),
        ("DB0.DBW0", None, "data block numbers run from 1"),
    ],
)
def test_bad_addresses_say_what_to_write(text: str, data_type: str | None, error: str) -> None:
    with pytest.raises(ValueError, match=None) as info:
        parse_address(text, data_type)
    assert error in str(info.value)


def test_reads_are_packed_within_the_pdu_and_twenty_variables() -> None:
    def tags(area: str, db: int, offsets: range, data_type: str = "WORD") -> list[TagRead]:
        return [TagRead(f"{area}{db}-{o}", spelled_address(area, db or None, o, None, data_type, None))
                for o in offsets]  # fmt: skip

    # 300 words in a row: one range, cut to what one answer carries (480 - 18 = 462 bytes)
    blocks = plan_blocks(tags("DB", 1, range(0, 600, 2)), max_gap=16)
    assert [(b.start, b.length) for b in blocks] == [(0, 600)]
    requests = plan_requests(blocks, 480)
    assert sorted(i.length for r in requests for i in r.items) == [138, 462]
    assert all(r.response_bytes <= 480 for r in requests)
    # 40 data blocks of one word each: 40 variables, at most 20 a request -> 2 requests
    scattered = [t for db in range(1, 41) for t in tags("DB", db, range(0, 2))]
    requests = plan_requests(plan_blocks(scattered, 16), 480)
    assert [len(r.items) for r in requests] == [20, 20]
    # a small PDU (240) holds fewer variables: (240 - 14) // 12 = 18 addresses per request
    requests = plan_requests(plan_blocks(scattered, 16), 240)
    assert all(len(r.items) <= 18 and r.response_bytes <= 240 for r in requests)
    assert len(requests) == 3
    # tags further apart than max_gap are separate ranges
    far = plan_blocks(tags("M", 0, range(0, 100, 50)), max_gap=16)
    assert [(b.start, b.length) for b in far] == [(0, 2), (50, 2)]


# ----------------------------------------------------------------------- against the server


def test_every_area_and_data_type_reaches_the_platform(platform, gateway_factory, tmp_path) -> None:
    spec, tags, expected = _memory()
    plc = S7Plcs(tmp_path, spec).start()
    try:
        config = base_config(platform)
        config["services"] = [_service(plc.port, tags)]
        gw = gateway_factory(config).start()
        event = wait_until(lambda: next(iter(platform.events()), None), what="an S7 event")
        assert event["thing_key"] == "press-7"
        assert event["data"] == expected  # exactly: floats chosen to be exact in REAL
        svc = gw.status()["services"][0]
        device = svc["details"]["devices"][0]
        assert device["connected"] is True and device["pdu_size"] == 480
        # DB1, DB2, M, I, Q: five ranges, one request
        assert device["requests_per_scan"] == 1
    finally:
        plc.stop()


@pytest.mark.parametrize(
    ("pdu_size", "requests_per_scan", "variables"),
    [
        (480, 2, 3),  # DB1's 800 bytes as 462 + 338, M's 100: two requests
        (240, 5, 5),  # answers of 222 bytes at most: DB1 in four variables, M in one
    ],
)
def test_five_hundred_tags_take_the_fewest_requests_the_pdu_allows(
    platform, gateway_factory, tmp_path, pdu_size: int, requests_per_scan: int, variables: int
) -> None:
    db1 = b"".join(struct.pack(">H", i) for i in range(400))
    plc = S7Plcs(tmp_path, {"DB1": db1, "M": bytes(range(100))}).start()
    tags = [{"name": f"w{i}", "address": f"DB1.DBW{2 * i}"} for i in range(400)]
    tags += [{"name": f"m{i}", "address": f"M{i}.{i % 8}"} for i in range(100)]
    try:
        config = base_config(platform)
        service = _service(plc.port, tags, scan_interval_ms=100)
        service["devices"][0]["pdu_size"] = pdu_size
        config["services"] = [service]
        gw = gateway_factory(config).start()
        events = wait_until(lambda: (e := platform.events()) and len(e) >= 5 and e, what="5 scans")
        want = {f"w{i}": i for i in range(400)} | {
            f"m{i}": bool(i >> (i % 8) & 1) for i in range(100)
        }
        assert all(e["data"] == want for e in events)
        device = gw.status()["services"][0]["details"]["devices"][0]
        assert device["pdu_size"] == pdu_size  # the server granted what was asked
        assert device["requests_per_scan"] == requests_per_scan
        requests, items = plc.reads()
        assert requests >= 5 * requests_per_scan
        assert requests <= device["requests"] + requests_per_scan  # the server saw no more
        # variables per request as planned (a scan may be under way when counted)
        assert items / requests == pytest.approx(variables / requests_per_scan, rel=0.1)
    finally:
        plc.stop()


def test_a_plc_that_stops_answering_affects_only_its_own_tags(
    platform, gateway_factory, tmp_path
) -> None:
    good = S7Plcs(tmp_path, {"DB1": struct.pack(">h", 11)}, name="good").start()
    flaky = S7Plcs(tmp_path, {"DB1": struct.pack(">h", 22)}, name="flaky").start()
    try:
        config = base_config(platform)
        config["services"] = [
            good_and_flaky(
                {"type": "s7"},
                {"port": good.port, "timeout_ms": 300},
                {"port": flaky.port, "timeout_ms": 5000},
                {"address": "DB1.DBW0", "type": "INT"},
                {"address": "DB1.DBW0", "type": "INT"},
            )
        ]
        gw = gateway_factory(config).start()
        # at its own pace: the silent PLC's 5 s timeouts do not hold up the good one's scans
        silence_one_device(gw, platform, flaky.proc, good_scans=15, timeout=4)
        assert all(e["data"] == {"b": 22} for e in platform.events() if e["thing_key"] == "m2")
    finally:
        good.stop()
        flaky.stop()


def test_a_restarted_plc_is_reconnected_and_read_with_its_new_values(
    platform, gateway_factory, tmp_path
) -> None:
    plc = S7Plcs(tmp_path, {"DB1": struct.pack(">h", 1)}).start()
    tags = [{"name": "v", "address": "DB1.DBW0", "type": "INT"}]
    try:
        config = base_config(platform)
        config["services"] = [_service(plc.port, tags, retry_max_backoff_ms=500)]
        gw = gateway_factory(config).start()
        wait_until(lambda: platform.events(), what="a first event")
        plc.stop()  # connection reset, then refused
        wait_until(
            lambda: gw.status()["services"][0]["state"] == "degraded", what="PLC reported down"
        )
        plc = S7Plcs(tmp_path, {"DB1": struct.pack(">h", 2)}, ports=[plc.port]).start()
        wait_until(
            lambda: any(e["data"] == {"v": 2} for e in platform.events()),
            timeout=30,
            what="the new PLC's value",
        )
        wait_until(lambda: gw.status()["services"][0]["state"] == "running", what="healthy again")
    finally:
        plc.stop()


def test_a_missing_data_block_fails_only_its_tags_and_is_named(
    platform, gateway_factory, tmp_path
) -> None:
    plc = S7Plcs(tmp_path, {"DB1": struct.pack(">h", 5)}).start()
    tags = [
        {"name": "ok", "address": "DB1.DBW0", "type": "INT"},
        {"name": "gone", "address": "DB9.DBW0", "type": "INT"},
    ]
    try:
        config = base_config(platform)
        config["services"] = [_service(plc.port, tags)]
        gw = gateway_factory(config).start()
        event = wait_until(lambda: next(iter(platform.events()), None), what="an S7 event")
        assert event["data"] == {"ok": 5}
        device = gw.status()["services"][0]["details"]["devices"][0]
        assert device["connected"] is True
        assert device["last_error"] == "gone: the object does not exist (no such data block)"
        wait_until(lambda: len(platform.events()) >= 5, what="5 scans")
        log = gw.proc.log() if gw.proc else ""
        assert log.count("refused variables: gone: the object does not exist") == 1, log
        assert gw.status()["services"][0]["state"] == "running"  # the PLC answers
    finally:
        plc.stop()


def test_a_plc_is_reached_by_tsap(platform, gateway_factory, tmp_path) -> None:
    plc = S7Plcs(tmp_path, {"M": struct.pack(">H", 77)}).start()
    try:
        config = base_config(platform)
        service = _service(plc.port, [{"name": "mw0", "address": "MW0"}])
        service["devices"] = [
            {"name": "s7-200", "port": plc.port, "local_tsap": "10.00", "remote_tsap": "0x1001"}
        ]
        config["services"] = [service]
        gateway_factory(config).start()
        event = wait_until(lambda: next(iter(platform.events()), None), what="an S7 event")
        assert event["data"] == {"mw0": 77}
    finally:
        plc.stop()
