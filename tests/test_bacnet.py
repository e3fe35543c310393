"""The bacnet adapter against bacpypes3 device applications (tests/servers/bacnet_device.py,
a real process on loopback): present-values of every object type arrive at the platform
exactly, many objects take the fewest ReadPropertyMultiple requests the device's max-APDU
allows (counted at the device), a device without RPM is read by ReadProperty, COV
notifications deliver changes without polling, a device that stops answering affects only
its own tags and resumes, and object ids parse or say how to write them."""

from __future__ import annotations

import json
import signal
import socket
import sys
from pathlib import Path
from typing import Any

import pytest

from datonis_edge.adapters.bacnet.objects import ObjectId, objects_per_request, parse_object_id
from helpers import Proc, base_config, good_and_flaky, silence_one_device, wait_until

SERVER = Path(__file__).parent / "servers" / "bacnet_device.py"


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class BacnetDevices:
    """tests/servers/bacnet_device.py in its own process (SIGSTOP: every device in it silent)."""

    def __init__(self, tmp: Path, devices: list[dict[str, Any]], name: str = "bacnet") -> None:
        for d in devices:
            d.setdefault("port", free_udp_port())
        self.devices = devices
        spec = tmp / f"{name}.json"
        spec.write_text(json.dumps({"devices": devices}))
        self.count_dir = tmp / f"{name}-counts"
        self.count_dir.mkdir(exist_ok=True)
        self.proc = Proc(
            [sys.executable, str(SERVER), "--spec", str(spec), "--count-dir", str(self.count_dir)],
            tmp / f"{name}.log",
        )

    def start(self) -> BacnetDevices:
        self.proc.start()
        try:
            wait_until(lambda: "ready" in self.proc.log(), 60, "the BACnet devices to start")
        except AssertionError:
            self.stop()  # not left running when the test never reaches its finally
            raise
        return self

    def address(self, i: int = 0) -> str:
        return f"127.0.0.1:{self.devices[i]['port']}"

    def counts(self, i: int = 0) -> dict[str, int]:
        try:
            return json.loads((self.count_dir / f"{self.devices[i]['port']}.json").read_text())
        except (FileNotFoundError, ValueError):
            return {}

    def stop(self) -> None:
        self.proc.signal(signal.SIGCONT)
        self.proc.stop()


EVERY_TYPE = [
    ({"id": "analog-input,1", "value": 21.5}, "analog-input,1", 21.5),
    ({"id": "analog-output,2", "value": -3.25}, "AO:2", -3.25),
    ({"id": "analog-value,3", "value": 1000.125}, "analogValue:3", 1000.125),
    ({"id": "binary-input,1", "value": True}, "BI:1", True),
    ({"id": "binary-output,2", "value": False}, "binary-output,2", False),
    ({"id": "binary-value,3", "value": True}, "BV:3", True),
    ({"id": "multi-state-input,1", "value": 3}, "MSI:1", 3),
    ({"id": "multi-state-output,2", "value": 1}, "MO:2", 1),
    ({"id": "multi-state-value,3", "value": 7}, "multi-state-value,3", 7),
]


def _service(devices: BacnetDevices, tags: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    device_keys = extra.pop("device", {})
    return {
        "name": "hvac",
        "type": "bacnet",
        "scan_interval_ms": 200,
        "local_address": f"127.0.0.1/8:{free_udp_port()}",
        "timeout_ms": 500,
        "retries": 0,
        "devices": [
            {
                "name": f"dev-{i}",
                "address": devices.address(i),
                "instance": d["instance"],
                **device_keys,
            }
            for i, d in enumerate(devices.devices)
        ],
        "tags": tags,
        "things": [
            {"thing_key": "ahu-1", "metrics": [{"name": t["name"], "tag": t["name"]} for t in tags]}
        ],
        **extra,
    }


# ----------------------------------------------------------------------- object ids, sizing


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("analog-input,1", ObjectId("analog-input", 1)),
        ("AI:1", ObjectId("analog-input", 1)),
        ("ao : 7", ObjectId("analog-output", 7)),
        ("analogValue:3", ObjectId("analog-value", 3)),
        ("BO:0", ObjectId("binary-output", 0)),
        ("multistate-value,2", ObjectId("multi-state-value", 2)),
        ("MSI:4194302", ObjectId("multi-state-input", 4_194_302)),
        ("MV:5", ObjectId("multi-state-value", 5)),
    ],
)
def test_object_ids_parse(text: str, want: ObjectId) -> None:
    assert parse_object_id(text) == want


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("analog-input", "is not a BACnet object id; write it like analog-input,1 or AI:1"),
        ("analog-inptu,1", "'analog-inptu' is not an object type this adapter reads"),
        ("schedule,1", "is not an object type this adapter reads"),
        ("AI:4194303", "instance 4194303 is past 4194302"),
    ],
)
def test_bad_object_ids_say_how_to_write_them(text: str, error: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_object_id(text)
    assert error in str(info.value)


def test_objects_per_request_follow_the_max_apdu() -> None:
    assert objects_per_request(1476) == 92
    assert objects_per_request(480) == 29
    assert objects_per_request(206) == 12
    assert objects_per_request(50) == 2


# ----------------------------------------------------------------------- against the devices


def test_every_object_type_reaches_the_platform(platform, gateway_factory, tmp_path) -> None:
    objects = [o for o, _, _ in EVERY_TYPE]
    devices = BacnetDevices(tmp_path, [{"instance": 1001, "objects": objects}]).start()
    tags = [{"name": f"t{i}", "object": oid} for i, (_, oid, _) in enumerate(EVERY_TYPE)]
    try:
        config = base_config(platform)
        config["services"] = [_service(devices, tags, device={"cov": False})]
        gw = gateway_factory(config).start()
        event = wait_until(lambda: next(iter(platform.events()), None), what="a BACnet event")
        assert event["thing_key"] == "ahu-1"
        assert event["data"] == {f"t{i}": want for i, (_, _, want) in enumerate(EVERY_TYPE)}
        device = gw.status()["services"][0]["details"]["devices"][0]
        assert device["connected"] is True and device["mode"] == "poll"
        assert device["read_multiple"] is True and device["max_apdu"] == 1476
        assert device["requests_per_scan"] == 1  # nine objects, one RPM
    finally:
        devices.stop()


@pytest.mark.parametrize(
    ("max_apdu", "per_request", "requests_per_scan"),
    [(1476, 92, 2), (480, 29, 4), (206, 12, 9)],
)
def test_a_hundred_objects_take_the_fewest_requests_the_max_apdu_allows(
    platform, gateway_factory, tmp_path, max_apdu: int, per_request: int, requests_per_scan: int
) -> None:
    kinds = ["analog-input", "binary-value", "multi-state-value"]
    objects = [
        {"id": f"{kinds[i % 3]},{i}", "value": [i + 0.5, i % 2 == 0, i % 8 + 1][i % 3]}
        for i in range(100)
    ]
    devices = BacnetDevices(
        tmp_path, [{"instance": 2001, "objects": objects, "max_apdu": max_apdu}]
    ).start()
    tags = [{"name": f"o{i}", "object": o["id"]} for i, o in enumerate(objects)]
    try:
        config = base_config(platform)
        config["services"] = [_service(devices, tags, device={"cov": False})]
        gw = gateway_factory(config).start()
        events = wait_until(lambda: (e := platform.events()) and len(e) >= 3 and e, what="3 scans")
        want = {f"o{i}": o["value"] for i, o in enumerate(objects)}
        assert all(e["data"] == want for e in events)
        device = gw.status()["services"][0]["details"]["devices"][0]
        assert device["max_apdu"] == max_apdu
        assert device["requests_per_scan"] == requests_per_scan
        counts = devices.counts()
        rpm = counts["read_property_multiple"]
        assert rpm >= 3 * requests_per_scan
        # every request but a scan's last is full: the device saw as many objects as planned
        sizes = [per_request] * (requests_per_scan - 1) + [
            100 - per_request * (requests_per_scan - 1)
        ]
        scans, part = divmod(rpm, requests_per_scan)
        assert counts["rpm_objects"] == 100 * scans + sum(sizes[:part])
        assert counts["read_property"] == 2  # the device's capabilities, asked once
    finally:
        devices.stop()


def test_a_device_without_rpm_is_read_by_read_property(platform, gateway_factory, tmp_path) -> None:
    objects = [{"id": "analog-value,1", "value": 4.5}, {"id": "binary-input,2", "value": True}]
    devices = BacnetDevices(
        tmp_path, [{"instance": 3001, "objects": objects, "rpm": False, "cov": False}]
    ).start()
    tags = [{"name": "av1", "object": "AV:1"}, {"name": "bi2", "object": "BI:2"}]
    try:
        config = base_config(platform)
        config["services"] = [_service(devices, tags)]
        gw = gateway_factory(config).start()
        events = wait_until(lambda: (e := platform.events()) and len(e) >= 3 and e, what="3 scans")
        assert all(e["data"] == {"av1": 4.5, "bi2": True} for e in events)
        device = gw.status()["services"][0]["details"]["devices"][0]
        assert device["read_multiple"] is False and device["mode"] == "poll"
        assert device["requests_per_scan"] == 2
        counts = devices.counts()
        assert "read_property_multiple" not in counts and counts["read_property"] >= 2 + 3 * 2
    finally:
        devices.stop()


def test_cov_delivers_changes_without_polling(platform, gateway_factory, tmp_path) -> None:
    objects = [{"id": "analog-input,1", "value": 10.0}, {"id": "binary-value,1", "value": False}]
    devices = BacnetDevices(
        tmp_path,
        [{"instance": 4001, "objects": objects, "ramp": ["analog-input,1"], "ramp_ms": 300}],
    ).start()
    tags = [{"name": "temp", "object": "AI:1"}, {"name": "fan", "object": "BV:1"}]
    try:
        config = base_config(platform)
        config["services"] = [_service(devices, tags, device={"cov_lifetime_s": 4})]
        gw = gateway_factory(config).start()
        wait_until(
            lambda: len({e["data"].get("temp") for e in platform.events()} - {None}) >= 5,
            what="five values of the ramping input",
        )
        device = gw.status()["services"][0]["details"]["devices"][0]
        assert device["mode"] == "cov" and device["cov_subscriptions"] == 2
        assert device["requests_per_scan"] == 0  # nothing polled
        counts = devices.counts()
        assert counts["read_property_multiple"] == 1  # the first full read only
        temps = [e["data"]["temp"] for e in platform.events() if "temp" in e["data"]]
        assert temps == sorted(temps) and temps[-1] > 10.0
        # the subscriptions are renewed every half lifetime (2 s)
        wait_until(lambda: devices.counts()["subscribe_cov"] >= 4, 10, "a renewal")
        assert devices.counts()["read_property_multiple"] == 1
    finally:
        devices.stop()


def test_a_device_that_stops_answering_affects_only_its_own_tags(
    platform, gateway_factory, tmp_path
) -> None:
    good = BacnetDevices(tmp_path, [{"instance": 11, "objects": [{"id": "analog-input,1", "value": 1.5}]}], "good").start()  # fmt: skip
    flaky = BacnetDevices(tmp_path, [{"instance": 22, "objects": [{"id": "analog-input,1", "value": 2.5}]}], "flaky").start()  # fmt: skip
    try:
        config = base_config(platform)
        config["services"] = [
            good_and_flaky(
                {"type": "bacnet", "local_address": f"127.0.0.1/8:{free_udp_port()}",
                 "timeout_ms": 300, "retries": 0},
                {"address": good.address(), "instance": 11, "cov": False},
                {"address": flaky.address(), "instance": 22, "cov": False},
                {"object": "AI:1"},
                {"object": "AI:1"},
            )
        ]  # fmt: skip
        gw = gateway_factory(config).start()
        devices = silence_one_device(gw, platform, flaky.proc, good_scans=10, timeout=4)
        assert "no answer within 300 ms" in devices["flaky"]["last_error"]
        assert all(e["data"] == {"b": 2.5} for e in platform.events() if e["thing_key"] == "m2")
    finally:
        good.stop()
        flaky.stop()


def test_a_missing_object_fails_alone_and_a_wrong_instance_is_named(
    platform, gateway_factory, tmp_path
) -> None:
    devices = BacnetDevices(
        tmp_path,
        [
            {"instance": 5001, "objects": [{"id": "analog-value,1", "value": 5.0}]},
            {"instance": 5002, "objects": [{"id": "analog-value,1", "value": 6.0}]},
        ],
    ).start()
    tags = [
        {"name": "ok", "device": "dev-0", "object": "AV:1"},
        {"name": "gone", "device": "dev-0", "object": "AV:9"},
        {"name": "other", "device": "dev-1", "object": "AV:1"},
    ]
    try:
        config = base_config(platform)
        service = _service(devices, tags, device={"cov": False})
        service["devices"][1]["instance"] = 5999  # not the device at that address
        config["services"] = [service]
        gw = gateway_factory(config).start()
        event = wait_until(lambda: next(iter(platform.events()), None), what="a BACnet event")
        assert event["data"] == {"ok": 5.0}
        states = wait_until(
            lambda: (d := gw.status()["services"][0]["details"]["devices"])[1]["last_error"] and d,
            what="the wrong instance reported",
        )
        assert states[0]["last_error"] == "gone (analog-value,9): object: unknown-object"
        assert states[1]["connected"] is False
        assert (
            "answers object: unknown-object; check the instance number" in states[1]["last_error"]
        )
    finally:
        devices.stop()


def test_a_cov_device_that_goes_silent_is_noticed_at_renewal_and_subscribed_again(
    platform, gateway_factory, tmp_path
) -> None:
    devices = BacnetDevices(
        tmp_path,
        [{"instance": 6001, "objects": [{"id": "analog-input,1", "value": 0.0}],
          "ramp": ["analog-input,1"], "ramp_ms": 200}],
    ).start()  # fmt: skip
    try:
        config = base_config(platform)
        service = _service(devices, [{"name": "flow", "object": "AI:1"}], retry_max_backoff_ms=500)
        service["devices"][0]["cov_lifetime_s"] = 2  # renewed every second
        config["services"] = [service]
        gw = gateway_factory(config).start()
        wait_until(lambda: len(platform.events()) >= 3, what="COV values")
        devices.proc.signal(signal.SIGSTOP)
        device = wait_until(
            lambda: (
                not (d := gw.status()["services"][0]["details"]["devices"][0])["connected"] and d
            ),
            10,
            "the silent device noticed at a renewal",
        )
        assert device["cov_subscriptions"] == 0 and "no answer" in device["last_error"]
        devices.proc.signal(signal.SIGCONT)
        subscribes = devices.counts()["subscribe_cov"]
        seen = len(platform.events())
        device = wait_until(
            lambda: (
                (d := gw.status()["services"][0]["details"]["devices"][0])["connected"]
                and d["cov_subscriptions"] == 1
                and d
            ),
            30,
            "subscribed again",
        )
        assert device["mode"] == "cov"
        wait_until(lambda: len(platform.events()) >= seen + 3, what="COV values again")
        assert devices.counts()["subscribe_cov"] > subscribes
        flows = [e["data"]["flow"] for e in platform.events()]
        assert flows == sorted(flows)  # nothing stale delivered after the silence
    finally:
        devices.stop()


async def test_writes_are_type_checked_before_anything_is_sent() -> None:
    from datonis_edge.adapters.bacnet.adapter import BacnetAdapter
    from datonis_edge.adapters.bacnet.config import BacnetService
    from datonis_edge.adapters.base import ValueRefused

    config = BacnetService.model_validate(
        {
            "type": "bacnet",
            "name": "hvac",
            "local_address": f"127.0.0.1/8:{free_udp_port()}",
            "devices": [{"name": "ahu", "address": "127.0.0.1:9", "instance": 1}],
            "tags": [
                {"name": "sp", "object": "AV:1"},
                {"name": "fan", "object": "BO:1"},
                {"name": "temp", "object": "AI:1"},
            ],
        }
    )

    async def sink(readings: list[Any], raw: Any = None, checked: bool = False) -> int:
        return len(readings)

    adapter = BacnetAdapter(config, sink)
    assert await adapter.check_write("sp", 21) == 21.0
    assert await adapter.check_write("fan", "Active") is True
    assert await adapter.check_write("fan", 0) is False
    assert await adapter.check_write("sp", None) is None  # relinquish
    refusals = {
        ("sp", "warm"): "sp takes a number (float32), not 'warm'",
        ("sp", 1e39): "sp (float32) cannot hold 1e+39",
        ("fan", 2): "fan takes true or false, not 2",
        ("temp", 20): "temp (analog-input,1) is an input object, which the device sets",
        ("nope", 1): "no tag named nope",
    }
    for (tag, value), message in refusals.items():
        with pytest.raises(ValueRefused) as info:
            await adapter.check_write(tag, value)
        assert str(info.value) == message
    await adapter.close_writes()


def test_a_taken_local_port_is_reported_with_the_fix(platform, gateway_factory, tmp_path) -> None:
    devices = BacnetDevices(tmp_path, [{"instance": 8001, "objects": EVERY_TYPE[0][:1]}]).start()
    holder = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    holder.bind(("127.0.0.1", 0))
    port = holder.getsockname()[1]
    try:
        config = base_config(platform)
        service = _service(devices, [{"name": "t", "object": "AI:1"}])
        service["local_address"] = f"127.0.0.1/8:{port}"
        config["services"] = [service]
        gw = gateway_factory(config).start()
        svc = wait_until(
            lambda: (s := gw.status()["services"][0])["last_error"] and s, what="the bind error"
        )
        assert (
            f"local_address 127.0.0.1/8:{port}: cannot bind 127.0.0.1:{port}" in svc["last_error"]
        )
        assert "give this service another local_address" in svc["last_error"]
        holder.close()
        event = wait_until(lambda: next(iter(platform.events()), None), 30, "reads once bound")
        assert event["data"] == {"t": 21.5}
        log = gw.proc.log() if gw.proc else ""
        assert log.count("cannot bind") == 1
    finally:
        holder.close()
        devices.stop()
