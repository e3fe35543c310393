"""The ethernet_ip adapter against cpppo's Logix server (tests/servers/enip_server.py, a real
process on loopback): every atomic type, the strings, arrays, ranges, a UDT member's path and a
bit arrive at the platform exactly; a scan of many tags is one request (counted at the server);
a PLC that stops answering affects only its own tags and resumes; the wire bytes of our
requests are pylogix's own for the same tag."""

from __future__ import annotations

import signal
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from pylogix import PLC

from datonis_edge.adapters.ethernet_ip import codec
from datonis_edge.adapters.ethernet_ip.reader import TagRead, plan
from datonis_edge.adapters.ethernet_ip.tagpath import parse
from helpers import (
    Proc,
    base_config,
    free_port,
    good_and_flaky,
    silence_one_device,
    wait_port,
    wait_until,
)

SERVER = Path(__file__).parent / "servers" / "enip_server.py"


class EnipPlc:
    """tests/servers/enip_server.py in its own process (SIGSTOP: a PLC that stops answering)."""

    def __init__(self, tmp: Path, tags: list[str], name: str = "plc") -> None:
        self.port = free_port()
        self.count_file = tmp / f"{name}-{self.port}.count"
        self.proc = Proc(
            [sys.executable, str(SERVER), "--count-file", str(self.count_file),
             "--address", f"127.0.0.1:{self.port}", *tags],
            tmp / f"{name}-{self.port}.log",
        )  # fmt: skip

    def start(self) -> EnipPlc:
        self.proc.start()
        wait_port(self.port, timeout=30)
        return self

    def seed(self, *writes: str) -> None:
        """Values written by cpppo's own client (`Tag=(TYPE)value`), not by the code under test."""
        done = subprocess.run(
            [sys.executable, "-m", "cpppo.server.enip.client", "--address",
             f"127.0.0.1:{self.port}", "--print", *writes],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert done.returncode == 0 and "FAILURE" not in done.stdout, done.stdout + done.stderr

    def requests(self) -> int:
        try:
            return int(self.count_file.read_text() or 0)
        except (FileNotFoundError, ValueError):
            return 0

    def stop(self) -> None:
        self.proc.signal(signal.SIGCONT)
        self.proc.kill()  # cpppo's server takes its time over SIGTERM


@pytest.fixture
def plcs(tmp_path: Path):
    made: list[EnipPlc] = []

    def make(tags: list[str], name: str = "plc") -> EnipPlc:
        made.append(EnipPlc(tmp_path, tags, f"{name}{len(made)}").start())
        return made[-1]

    yield make
    for plc in made:
        plc.stop()


def service(devices: list[dict[str, Any]], tags: list[dict[str, Any]], **keys: Any) -> dict:
    return {
        "name": "logix",
        "type": "ethernet_ip",
        "scan_interval_ms": 200,
        "devices": devices,
        "tags": tags,
        "things": [
            {
                "thing_key": "line-4",
                "metrics": [{"name": t["name"], "tag": t["name"]} for t in tags],
            }
        ],
        **keys,
    }


# ------------------------------------------------------------------ wire bytes, no server


@pytest.mark.parametrize(
    "address", ["Speed", "Recipe[3]", "Recipe[300]", "Recipe[70000]", "Grid[1,2]", "Motor.Speed",
                "Line[2].Motor.Speed", "Program:Main.Count", "Abc"],
)  # fmt: skip
def test_tag_paths_are_the_bytes_pylogix_sends(address: str) -> None:
    assert parse(address).path == PLC()._build_ioi(address, 0xC4)


def test_a_bit_of_an_integer_is_its_integer_read_and_pylogix_rmw_bytes() -> None:
    a = parse("Status.5")
    assert (a.path, a.bit) == (parse("Status").path, 5)
    ioi = PLC()._build_ioi("Status", 0xC4)
    for value, masks in ((True, (1 << 5, 0xFFFFFFFF)), (False, (0, 0xFFFFFFFF & ~(1 << 5)))):
        ours = codec.bit_write_service(a.path, codec.TypeInfo(0xC4), 5, value)
        signed = [struct.unpack("<i", struct.pack("<I", m))[0] for m in masks]  # pylogix packs "<i"
        assert ours == PLC()._add_mod_write_service(ioi, 0xC4, *signed)


@pytest.mark.parametrize(
    ("code", "values"),
    [(0xC1, [True]), (0xC2, [-5]), (0xC3, [-300, 7]), (0xC4, [-123456789]), (0xC5, [-(2**40)]),
     (0xC6, [200]), (0xC7, [60000]), (0xC8, [4_000_000_000]), (0xCA, [1.5]), (0xCB, [-0.1]),
     (0xA0, ["Logix STRING"])],
)  # fmt: skip
def test_writes_are_the_bytes_pylogix_sends(code: int, values: list[Any]) -> None:
    path = parse("Tag").path
    kind = codec.TypeInfo(code, codec.LOGIX_STRING_HANDLE if code == 0xA0 else None)
    assert codec.write_service(path, kind, values) == PLC()._add_write_service(path, values, code)


def test_ranges_and_counts() -> None:
    assert (parse("Recipe[2..5]").count, parse("Recipe[2..5]").path) == (4, parse("Recipe[2]").path)
    assert parse("Recipe", 10).count == 10
    for bad, why in [
        ("Recipe[5..2]", "the range ends before it starts"),
        ("Motor..Speed", "is not a Logix tag address"),
        ("Status.64", "past the last bit"),
        ("Program:Main", "names a program"),
        ("9lives", "is not a Logix tag address"),
    ]:
        with pytest.raises(ValueError, match=why):
            parse(bad)


def test_packets_fill_the_connection_and_learned_sizes_shrink_the_plan() -> None:
    reads = [TagRead.of(f"t{i}", parse(f"Tag_{i:03d}")) for i in range(500)]
    first = plan(reads, 4002)  # sizes unknown: 88 bytes each
    assert len(first) == 13  # 40 a packet
    for r in reads:
        r.reply_size = 4 + 2 + 4  # a DINT's reply
    second = plan(reads, 4002)
    # each request service: 2 + 10 (symbol "Tag_000" padded) + 2 = 14 bytes, + 2 for its offset
    assert [len(p) for p in second] == [249, 249, 2]
    assert len(plan(reads, 504)) == 17  # a small Forward Open: more, smaller packets
    for packet in second:
        assert 8 + sum(len(r.service) + 2 for r in packet) <= 4002 - 8


def test_an_array_planned_alone_joins_a_packet_once_its_size_is_known() -> None:
    arr = TagRead.of("arr", parse("Arr[0..49]"))  # 50 × 88 guessed bytes: too big
    small = TagRead.of("small", parse("Small"))
    assert plan([arr, small], 4002) == [[arr], [small]] and arr.alone
    arr.reply_size, small.reply_size = 4 + 2 + 50 * 4, 4 + 2 + 4  # what the PLC answered
    assert plan([arr, small], 4002) == [[arr, small]] and not arr.alone
    arr.too_big = True  # the PLC answered "partial": fragments for good
    assert plan([arr, small], 4002) == [[arr], [small]]


def test_values_of_every_type_decode_and_encode_back() -> None:
    cases = [(0xC1, [True, False]), (0xC2, [-5, 7]), (0xC3, [-300]), (0xC4, [-123456789]),
             (0xC5, [-(2**40)]), (0xC6, [200]), (0xC7, [60000]), (0xC8, [4_000_000_000]),
             (0xC9, [2**60]), (0xCA, [23.7, -0.1]), (0xCB, [3.14159265358979])]  # fmt: skip
    for code, values in cases:
        kind = codec.TypeInfo(code)
        data = codec.encode_values(kind, values)
        assert codec.decode_values(data[:2] + data[4:], len(values)) == (kind, values)
    for kind in (codec.TypeInfo(0xD0), codec.TypeInfo(0xDA), codec.TypeInfo(0xA0, 0x0FCE)):
        data = codec.encode_values(kind, ["odd", "even"])
        head = 4 if kind.code == 0xA0 else 2
        assert codec.decode_values(data[:head] + data[head + 2 :], 2) == (kind, ["odd", "even"])
    nan = struct.pack("<BBf", 0xCA, 0, float("nan"))
    assert codec.decode_values(nan, 1)[1] == [None]


# ------------------------------------------------------------------ against cpppo


ALL_TYPES = ["B=BOOL", "S=SINT", "I=INT", "D=DINT", "L=LINT", "US=USINT", "UI=UINT", "UD=UDINT",
             "UL=ULINT", "R=REAL", "LR=LREAL", "STR=STRING", "SS=SSTRING", "Arr=DINT[10]",
             "Motor.Speed=REAL"]  # fmt: skip
SEED = ["B=(BOOL)1", "S=(SINT)-5", "I=(INT)-300", "D=(DINT)-123456789",
        f"L=(LINT){-(2**40) - 7}", "US=(USINT)200", "UI=(UINT)60000", "UD=(UDINT)4000000000",
        f"UL=(ULINT){2**60 + 5}", "R=(REAL)23.7", "LR=(LREAL)-12345.678",
        "STR=(STRING)Press-7", "SS=(SSTRING)hey", "Arr[2-4]=(DINT)7,8,9",
        "Motor.Speed=(REAL)12.5"]  # fmt: skip
EXPECTED = {"b": True, "s": -5, "i": -300, "d": -123456789, "l": -(2**40) - 7, "us": 200,
            "ui": 60000, "ud": 4_000_000_000, "ul": 2**60 + 5, "r": 23.7, "lr": -12345.678,
            "str": "Press-7", "ss": "hey", "arr3": 8, "range": [7, 8, 9], "speed": 12.5,
            "d_bit3": bool((-123456789 >> 3) & 1), "d_bit4": bool((-123456789 >> 4) & 1)}  # fmt: skip
ADDRESSES = {"b": "B", "s": "S", "i": "I", "d": "D", "l": "L", "us": "US", "ui": "UI",
             "ud": "UD", "ul": "UL", "r": "R", "lr": "LR", "str": "STR", "ss": "SS",
             "arr3": "Arr[3]", "range": "Arr[2..4]", "speed": "Motor.Speed", "d_bit3": "D.3",
             "d_bit4": "D.4"}  # fmt: skip


def test_every_type_arrives_at_the_platform_exactly(platform, gateway_factory, plcs) -> None:
    plc = plcs(ALL_TYPES)
    plc.seed(*SEED)
    config = base_config(platform)
    tags = [{"name": n, "address": a} for n, a in ADDRESSES.items()]
    config["services"] = [service([{"name": "plc-1", "host": "127.0.0.1", "port": plc.port}], tags)]
    gw = gateway_factory(config).start()
    event = wait_until(lambda: next(iter(platform.events()), None), what="a Logix event")
    assert event["data"] == EXPECTED
    device = gw.status()["services"][0]["details"]["devices"][0]
    assert device["connected"] is True and device["tag_errors"] == {}
    assert device["connection_size"] == 4002  # cpppo takes a Large Forward Open


def test_three_hundred_tags_are_one_request_per_scan_counted_at_the_plc(
    platform, gateway_factory, plcs
) -> None:
    plc = plcs([f"T{i:03d}=DINT" for i in range(300)])
    plc.seed(*[f"T{i:03d}=(DINT){i * 1000 + 1}" for i in range(0, 300, 7)])
    config = base_config(platform)
    tags = [{"name": f"t{i}", "address": f"T{i:03d}"} for i in range(300)]
    plc_1 = {"name": "plc-1", "host": "127.0.0.1", "port": plc.port, "timeout_ms": 20_000}
    config["services"] = [service([plc_1], tags)]
    gw = gateway_factory(config).start()
    # cpppo parses ~1 ms of CPU a tag: a 300-tag scan takes seconds on a loaded machine
    events = wait_until(lambda: (e := platform.events()) and len(e) >= 3 and e, 90, "3 scans")
    assert events[-1]["data"] == {f"t{i}": (i * 1000 + 1 if i % 7 == 0 else 0) for i in range(300)}
    device = gw.status()["services"][0]["details"]["devices"][0]
    # 300 read services of 12 bytes and their replies fit one 4002-byte packet
    assert device["requests_per_scan"] == 1
    before, scans = plc.requests(), len(platform.events())
    wait_until(lambda: len(platform.events()) >= scans + 4, 90, "4 more scans")
    after, scans_after = plc.requests(), len(platform.events())
    assert after - before <= scans_after - scans + 1  # the PLC saw one request a scan, not 300
    assert gw.status()["services"][0]["details"]["devices"][0]["errors"] == 0  # no reconnects


def test_a_small_forward_open_packs_to_its_504_bytes(platform, gateway_factory, plcs) -> None:
    plc = plcs([f"T{i:03d}=DINT" for i in range(100)])
    plc.seed("T099=(DINT)99")
    config = base_config(platform)
    tags = [{"name": f"t{i}", "address": f"T{i:03d}"} for i in range(100)]
    small = {"name": "plc-1", "host": "127.0.0.1", "port": plc.port, "connection_size": 504,
             "timeout_ms": 20_000}  # fmt: skip
    config["services"] = [service([small], tags)]
    gw = gateway_factory(config).start()
    events = wait_until(lambda: (e := platform.events()) and len(e) >= 2 and e, 90, "2 scans")
    assert events[-1]["data"]["t99"] == 99 and len(events[-1]["data"]) == 100
    device = gw.status()["services"][0]["details"]["devices"][0]
    # 12 bytes of request and of reply a tag: 40 in 496 bytes, so 100 tags are 3 requests
    assert (device["connection_size"], device["requests_per_scan"]) == (504, 3)


def test_an_array_larger_than_the_connection_is_read_by_fragments(
    platform, gateway_factory, plcs
) -> None:
    plc = plcs(["Big=DINT[1000]", "Small=INT"])
    plc.seed("Big[0]=(DINT)-1", "Big[999]=(DINT)42", "Small=(INT)5")
    config = base_config(platform)
    tags = [{"name": "big", "address": "Big", "count": 1000}, {"name": "small", "address": "Small"}]
    config["services"] = [service([{"name": "plc-1", "host": "127.0.0.1", "port": plc.port}], tags)]
    gw = gateway_factory(config).start()
    event = wait_until(lambda: next(iter(platform.events()), None), what="a Logix event")
    assert event["data"] == {"big": [-1] + [0] * 998 + [42], "small": 5}
    device = gw.status()["services"][0]["details"]["devices"][0]
    assert device["requests_per_scan"] >= 3 and device["tag_errors"] == {}  # fragments + Small


def test_a_tag_the_plc_does_not_have_fails_alone(platform, gateway_factory, plcs) -> None:
    plc = plcs(["Here=DINT", "Also=REAL"])
    plc.seed("Here=(DINT)7", "Also=(REAL)0.5")
    config = base_config(platform)
    tags = [{"name": "here", "address": "Here"}, {"name": "gone", "address": "Gone"},
            {"name": "also", "address": "Also"}, {"name": "nobits", "address": "Also.3"}]  # fmt: skip
    config["services"] = [service([{"name": "plc-1", "host": "127.0.0.1", "port": plc.port}], tags)]
    gw = gateway_factory(config).start()
    event = wait_until(lambda: next(iter(platform.events()), None), what="a Logix event")
    assert event["data"] == {"here": 7, "also": 0.5}
    device = gw.status()["services"][0]["details"]["devices"][0]
    assert device["requests_per_scan"] == 1
    assert device["tag_errors"] == {
        "gone": "Gone: no such tag in the PLC (status 0x05, extended 0x0000)",
        "nobits": "Also.3: is a REAL, which has no bits; drop the .3",
    }
    wait_until(lambda: len(platform.events()) >= 3, what="more scans")
    assert gw.proc.log().count("tag gone on PLC plc-1") == 1  # once, not every scan


def test_a_plc_that_stops_answering_affects_only_its_own_tags(
    platform, gateway_factory, plcs
) -> None:
    good, flaky = plcs(["A=DINT"], "good"), plcs(["B=DINT"], "flaky")
    good.seed("A=(DINT)11")
    flaky.seed("B=(DINT)22")
    config = base_config(platform)
    config["services"] = [
        good_and_flaky(
            {"type": "ethernet_ip"},
            {"host": "127.0.0.1", "port": good.port, "timeout_ms": 5000},
            {"host": "127.0.0.1", "port": flaky.port, "timeout_ms": 1000},
            {"address": "A"},
            {"address": "B"},
        )
    ]
    gw = gateway_factory(config).start()
    # the good PLC keeps its pace: 10 scans of 100 ms while the other times out (1 s each)
    devices = silence_one_device(gw, platform, flaky.proc, good_scans=10, timeout=5)
    assert "retrying in" in devices["flaky"]["last_error"]


def test_slot_and_route_become_the_forward_open_path() -> None:
    """cpppo accepts any connection path, so the route is checked in the bytes pylogix sends:
    CIP port segments (Vol. 1 C-1.4.1), then the message router."""
    from datonis_edge.adapters.ethernet_ip.config import EnipDevice
    from datonis_edge.adapters.ethernet_ip.session import Session

    def path(**keys: Any) -> bytes:
        device = EnipDevice(name="p", host="127.0.0.1", **keys)
        return Session(device)._new_plc().conn._connected_path()[1]

    router = b"\x20\x02\x24\x01"
    assert path() == b"\x01\x00" + router  # backplane, slot 0
    assert path(slot=3) == b"\x01\x03" + router
    assert path(route="1/4/2/10.0.3.5/1/0") == (
        b"\x01\x04" + b"\x12\x0810.0.3.5" + b"\x01\x00" + router
    )  # slot 4, out of port 2 to 10.0.3.5 (an extended link address), then slot 0
    assert path(micro800=True) == router


async def test_a_refused_tag_is_logged_once_and_its_recovery_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from datonis_edge.adapters.ethernet_ip.adapter import EthernetIpAdapter
    from datonis_edge.adapters.ethernet_ip.config import EthernetIpService

    config = EthernetIpService.model_validate(
        {"type": "ethernet_ip", "name": "logix", "devices": [{"name": "plc-1", "host": "10.0.3.40"}],
         "tags": [{"name": "a", "address": "A"}, {"name": "b", "address": "B"}]}
    )  # fmt: skip

    async def sink(readings: Any, raw: Any = None, checked: bool = False) -> int:
        return len(readings)

    adapter = EthernetIpAdapter(config, sink)
    device = adapter.devices[0]
    caplog.set_level("INFO", logger="datonis_edge.adapters.ethernet_ip.adapter")
    device.state.update(connected=True, tag_errors={"a": "A: no such tag in the PLC"})
    for _ in range(5):
        adapter._report(device)
    device.state.update(connected=False)  # the PLC goes away: its tags' errors are stale
    adapter._report(device)
    device.state.update(connected=True, tag_errors={})
    for _ in range(3):
        adapter._report(device)
    await adapter.close_writes()
    lines = [r.getMessage() for r in caplog.records]
    assert sum("tag a on PLC plc-1" in line and "cannot be read" in line for line in lines) == 1
    assert sum("tag a on PLC plc-1" in line and "reads again" in line for line in lines) == 1
    assert not any("tag b" in line for line in lines)
