"""BACnet/IP devices for tests and benchmarks (bacpypes3 device applications), in their own
process on loopback: objects of every type the bacnet adapter reads, with known values;
COV subscriptions; requests counted.

    python bacnet_device.py --spec spec.json [--count-dir D]

spec.json: {"devices": [{"instance": 1001, "port": 47901, "max_apdu": 1476,
            "rpm": true, "cov": true,
            "objects": [{"id": "analog-input,1", "value": 21.5}, ...],
            "ramp": ["analog-value,9"], "ramp_ms": 200}]}

Each device is an application bound to `127.0.0.1/8:<port>` (never the host's interface:
no broadcasts leave loopback). `rpm: false` makes a device without ReadPropertyMultiple
(not in protocol-services-supported; a request is rejected), `cov: false` one without
SubscribeCOV. Objects named in `ramp` count up by one every `ramp_ms` (COV tests). With
--count-dir, `<port>.json` holds the requests the device answered by service, and the
objects read by RPM. SIGTERM stops it; SIGSTOP makes every device in it silent.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
from argparse import Namespace
from pathlib import Path
from typing import Any

from bacpypes3.app import Application
from bacpypes3.basetypes import ServicesSupported
from bacpypes3.errors import UnrecognizedService
from bacpypes3.local.analog import AnalogInputObject, AnalogOutputObject, AnalogValueObjectCmd
from bacpypes3.local.binary import BinaryInputObject, BinaryOutputObject, BinaryValueObject
from bacpypes3.local.cmd import Commandable
from bacpypes3.local.cov import GenericCriteria
from bacpypes3.local.multistate import (
    MultiStateInputObject,
    MultiStateOutputObject,
    MultiStateValueObject,
)
from bacpypes3.primitivedata import ObjectIdentifier

logging.disable(logging.CRITICAL)


# bacpypes3's own commandable binary value lacks COV, and its multi-state objects look for a
# cov-increment they do not have: these report every change, as the standard says they do
class CommandableBinaryValue(Commandable, BinaryValueObject):
    pass


class MultiStateInput(MultiStateInputObject):
    _cov_criteria = GenericCriteria


class MultiStateOutput(MultiStateOutputObject):
    _cov_criteria = GenericCriteria


class CommandableMultiStateValue(Commandable, MultiStateValueObject):
    _cov_criteria = GenericCriteria


OBJECT_CLASSES: dict[str, Any] = {
    "analog-input": AnalogInputObject,
    "analog-output": AnalogOutputObject,
    "analog-value": AnalogValueObjectCmd,
    "binary-input": BinaryInputObject,
    "binary-output": BinaryOutputObject,
    "binary-value": CommandableBinaryValue,
    "multi-state-input": MultiStateInput,
    "multi-state-output": MultiStateOutput,
    "multi-state-value": CommandableMultiStateValue,
}


class CountingDevice(Application):
    """A device application that counts what it answers and may lack RPM or COV."""

    rpm = True
    cov = True
    count_file: Path | None = None

    def setup(self, rpm: bool, cov: bool, count_file: Path | None) -> None:
        self.rpm, self.cov, self.count_file = rpm, cov, count_file
        self.counts: dict[str, int] = {}

    def _count(self, service: str, objects: int = 0) -> None:
        self.counts[service] = self.counts.get(service, 0) + 1
        if objects:
            self.counts["rpm_objects"] = self.counts.get("rpm_objects", 0) + objects
        if self.count_file is not None:  # whole or not at all: a reader never sees half
            partial = self.count_file.with_suffix(".tmp")
            partial.write_text(json.dumps(self.counts))
            partial.replace(self.count_file)

    def get_services_supported(self) -> ServicesSupported:
        supported = super().get_services_supported()
        if not self.rpm:
            supported[ServicesSupported.readPropertyMultiple] = 0
        if not self.cov:
            supported[ServicesSupported.subscribeCOV] = 0
        return supported

    async def do_ReadPropertyRequest(self, apdu: Any) -> None:
        self._count("read_property")
        await super().do_ReadPropertyRequest(apdu)

    async def do_ReadPropertyMultipleRequest(self, apdu: Any) -> None:
        if not self.rpm:
            raise UnrecognizedService()
        self._count("read_property_multiple", len(apdu.listOfReadAccessSpecs))
        await super().do_ReadPropertyMultipleRequest(apdu)

    async def do_SubscribeCOVRequest(self, apdu: Any) -> None:
        if not self.cov:
            raise UnrecognizedService()
        self._count("subscribe_cov")
        await super().do_SubscribeCOVRequest(apdu)

    async def do_WritePropertyRequest(self, apdu: Any) -> None:
        self._count("write_property")
        await super().do_WritePropertyRequest(apdu)


def make_object(spec: dict[str, Any]) -> Any:
    kind, instance = spec["id"].split(",")
    value = spec["value"]
    extra: dict[str, Any] = {}
    if kind.startswith("binary"):
        value = "active" if value else "inactive"
    if kind.startswith("multi-state"):
        extra["numberOfStates"] = spec.get("states", 8)
    if kind.startswith("analog"):
        extra["covIncrement"] = 0.0
    return OBJECT_CLASSES[kind](
        objectIdentifier=ObjectIdentifier(f"{kind},{instance}"),
        objectName=spec.get("name", f"{kind}-{instance}"),
        presentValue=value,
        statusFlags=[0, 0, 0, 0],
        **extra,
    )


def start_device(spec: dict[str, Any], count_dir: Path | None) -> CountingDevice:
    args = Namespace(
        name=f"device-{spec['instance']}",
        instance=spec["instance"],
        vendoridentifier=999,
        address=f"127.0.0.1/8:{spec['port']}",  # loopback only, never the host's interface
        network=0,
        foreign=None,
        ttl=30,
        bbmd=None,
    )
    app = CountingDevice.from_args(args)
    app.device_object.maxApduLengthAccepted = spec.get("max_apdu", 1476)
    app.setup(
        spec.get("rpm", True),
        spec.get("cov", True),
        count_dir / f"{spec['port']}.json" if count_dir else None,
    )
    for obj in spec.get("objects", []):
        app.add_object(make_object(obj))
    return app


async def ramp(app: CountingDevice, ids: list[str], every_s: float) -> None:
    objects = [app.get_object_id(ObjectIdentifier(i)) for i in ids]
    while True:
        await asyncio.sleep(every_s)
        for obj in objects:
            obj.presentValue = obj.presentValue + 1


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--spec", required=True, type=Path)
    parser.add_argument("--count-dir", type=Path)
    args = parser.parse_args()
    spec = json.loads(args.spec.read_text())
    apps = [start_device(d, args.count_dir) for d in spec["devices"]]
    ramps = [
        asyncio.create_task(ramp(app, d["ramp"], d.get("ramp_ms", 200) / 1000))
        for app, d in zip(apps, spec["devices"], strict=True)
        if d.get("ramp")
    ]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    print("ready", flush=True)
    await stop.wait()
    for task in ramps:
        task.cancel()
    for app in apps:
        app.close()


if __name__ == "__main__":
    asyncio.run(main())
