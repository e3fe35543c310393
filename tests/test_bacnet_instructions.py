"""An instruction end to end to a BACnet device: the platform simulator publishes through a
real mosquitto, a real gateway process writes an analog value, a binary output at priority 8
and a multi-state value to a bacpypes3 device, and the acknowledgement comes back; a state
past the object's number-of-states writes nothing and is acked failed."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bacpypes3.pdu import Address
from bacpypes3.primitivedata import ObjectIdentifier

from datonis_edge.adapters.bacnet.link import BacnetLink, to_python
from datonis_edge.adapters.bacnet.objects import parse_object_id
from helpers import Gateway, wait_until
from test_bacnet import BacnetDevices, free_udp_port
from test_instructions_e2e import Stack, gateway_config, stack  # noqa: F401 - the fixture


def _read(address: str) -> dict[str, Any]:
    """present-values, and what priority 8 of the binary output holds, read by a client of
    the test's own (not the gateway's)."""

    async def read() -> dict[str, Any]:
        link = BacnetLink(f"127.0.0.1/8:{free_udp_port()}", 4_194_000, 1000, 1)
        try:
            values = {
                oid: await link.read_one(address, parse_object_id(oid))
                for oid in ("AV:1", "BO:1", "MSV:1")
            }
            app = link.open()
            slot = await app.read_property(
                Address(address), ObjectIdentifier("binary-output,1"), "priority-array", 8
            )
            values["BO:1@8"] = to_python(getattr(slot, slot._choice)) if slot._choice else None
            return values
        finally:
            link.close()

    return asyncio.run(read())


def test_an_instruction_writes_every_kind_at_its_priority_and_is_acked(
    stack: Stack,  # noqa: F811 - the fixture imported above
    tmp_path: Path,
    gateway_factory: Callable[..., Gateway],
) -> None:
    objects = [
        {"id": "analog-value,1", "value": 18.0},
        {"id": "binary-output,1", "value": False},
        {"id": "multi-state-value,1", "value": 1, "states": 4},
    ]
    devices = BacnetDevices(tmp_path, [{"instance": 7001, "objects": objects}]).start()
    try:
        service = {
            "name": "hvac",
            "type": "bacnet",
            "scan_interval_ms": 200,
            "local_address": f"127.0.0.1/8:{free_udp_port()}",
            "timeout_ms": 500,
            "devices": [{"name": "ahu", "address": devices.address(), "instance": 7001}],
            "tags": [
                {"name": "setpoint", "object": "AV:1"},
                {"name": "fan", "object": "BO:1", "priority": 8},
                {"name": "mode", "object": "MSV:1"},
            ],
            "things": [
                {
                    "thing_key": "ahu-1",
                    "metrics": [{"name": "setpoint", "tag": "setpoint"}],
                    "instructions": [
                        {
                            "name": "set_point",
                            "match": {"command": "set_point"},
                            "writes": [
                                {"tag": "setpoint", "from": "value", "min": 10, "max": 30},
                                {"tag": "fan", "value": True},
                                {"tag": "mode", "from": "mode"},
                            ],
                        }
                    ],
                }
            ],
        }
        gw = gateway_factory(gateway_config(stack, service)).start()
        wait_until(
            lambda: gw.status()["instructions"]["details"].get("receiving"), 10, "subscribed"
        )
        wait_until(lambda: gw.status()["uplinks"][0]["state"] == "connected", 20, "connected")
        key = stack.sim.send_instruction(
            "ahu-1", {"command": "set_point", "value": 21.5, "mode": 3}
        )
        ack = stack.ack(key)
        assert ack["data"] == {"execution_status": "success"}
        assert ack["message"] == "set_point: wrote setpoint=21.5, fan=true, mode=3"
        address = devices.address()
        assert _read(address) == {"AV:1": 21.5, "BO:1": True, "MSV:1": 3, "BO:1@8": True}
        # a state the object does not have: nothing written, acked failed
        key = stack.sim.send_instruction("ahu-1", {"command": "set_point", "value": 25, "mode": 9})
        ack = stack.ack(key)
        assert ack["data"] == {"execution_status": "failed"}
        assert "takes a state 1 to 4, not 9" in ack["message"]
        assert _read(address)["AV:1"] == 21.5 and _read(address)["MSV:1"] == 3
        # the written set point is what the gateway delivers (by COV)
        wait_until(
            lambda: any(e["data"].get("setpoint") == 21.5 for e in stack.sim.events()),
            what="the written set point read back",
        )
        assert devices.counts()["write_property"] == 3
    finally:
        devices.stop()
