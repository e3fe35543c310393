"""The Things page's write form, in a real headless Chromium: an admin writes a Modbus holding
register of a real pymodbus server through the thing's instruction rule (values checked, so an
out-of-range one writes nothing); the write is audited; a viewer has no form."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pymodbus.client import ModbusTcpClient

from console_helpers import STRONG, Factory, add_user, audit, log_in, shot, url
from helpers import ModbusServer, PlatformSim, base_config, free_port, wait_until

pytest_plugins = ["console_helpers"]  # the chromium and page fixtures


@pytest.fixture
def modbus(tmp_path: Path) -> Iterator[ModbusServer]:
    server = ModbusServer(tmp_path, {"units": {"1": {"hr": {"0": [0] * 20}}}}).start()
    yield server
    server.stop()


def press(port: int) -> dict[str, Any]:
    return {
        "name": "press",
        "type": "modbus_tcp",
        "scan_interval_ms": 200,
        "devices": [{"name": "plc1", "port": port}],
        "tags": [{"name": "speed_sp", "register": "holding", "address": 10, "data_type": "uint16"}],
        "things": [
            {
                "thing_key": "press-1",
                "metrics": [{"name": "speed_sp", "tag": "speed_sp"}],
                "instructions": [
                    {
                        "name": "set_speed",
                        "match": {"command": "set_speed"},
                        "writes": [{"tag": "speed_sp", "from": "value", "min": 0, "max": 1500}],
                    }
                ],
            }
        ],
    }


def register(port: int) -> int:
    """Read with the blocking client (Playwright's sync API keeps an event loop running)."""
    client = ModbusTcpClient("127.0.0.1", port=port)
    assert client.connect()
    try:
        return client.read_holding_registers(10, count=1).registers[0]
    finally:
        client.close()


def test_an_admin_writes_a_tag_through_its_instruction_rule(
    gateway_factory: Factory, platform: PlatformSim, modbus: ModbusServer, page
) -> None:  # type: ignore[no-untyped-def]
    config = base_config(platform)
    config["services"] = [press(modbus.port)]
    gw = gateway_factory(config).start()
    add_user(gw.datadir, "admin1", STRONG, "admin")
    add_user(gw.datadir, "viewer1", STRONG, "viewer")
    log_in(page, gw, "admin1", STRONG)
    page.wait_for_url(url(gw, "/"))
    page.goto(url(gw, "/things"))
    form = page.locator("form.write-form[data-thing='press-1'][data-rule='set_speed']")

    form.locator("input[name='f.value']").fill("2000")  # above max: nothing written
    form.locator("button").click()
    page.wait_for_selector("#message")
    assert "refused" in page.inner_text("#message") and "max" in page.inner_text("#message")
    assert register(modbus.port) == 0

    form.locator("input[name='f.value']").fill("1234")
    form.locator("button").click()
    page.wait_for_selector("#message")
    assert "written" in page.inner_text("#message"), page.inner_text("#message")
    assert register(modbus.port) == 1234
    writes = [e for e in audit(gw.datadir) if e["action"] == "tag_write"]
    assert [w["success"] for w in writes] == [False, True]
    assert writes[1]["instruction"] == {"command": "set_speed", "value": 1234}
    # both went the instruction engine's one-at-a-time way, neither stored nor acknowledged
    instructions = gw.status()["instructions"]
    assert instructions["counters"]["console_writes"] == 2
    assert instructions["counters"]["received"] == 0
    shot(page, "things-write")

    def shown() -> bool:  # the next scan reads it back: the latest value on the page
        page.goto(url(gw, "/things?q=press-1"))
        return "1234" in page.inner_text("#things")

    wait_until(shown, 10, "the written value read back on the Things page")

    page.click("text=Log out")
    log_in(page, gw, "viewer1", STRONG)
    page.wait_for_url(url(gw, "/"))
    page.goto(url(gw, "/things"))
    assert page.locator("form.write-form").count() == 0


def test_services_shows_each_device_of_a_modbus_service(
    gateway_factory: Factory, platform: PlatformSim, modbus: ModbusServer, page
) -> None:  # type: ignore[no-untyped-def]
    service = press(modbus.port)
    service["devices"].append({"name": "plc2", "port": free_port(), "timeout_ms": 300})
    service["tags"].append({"name": "temp", "register": "holding", "address": 11, "device": "plc2"})
    config = base_config(platform)
    config["services"] = [service]
    gw = gateway_factory(config).start()
    add_user(gw.datadir, "viewer1", STRONG, "viewer")
    log_in(page, gw, "viewer1", STRONG)
    page.wait_for_url(url(gw, "/"))

    def shown() -> bool:
        page.goto(url(gw, "/services"))
        return "not answering" in page.inner_text("tr[data-service=press] .devices")

    wait_until(shown, 15, "plc2 shown as not answering")
    assert "connected" in page.inner_text("tr[data-service=press] [data-device=plc1]")
    assert "not answering" in page.inner_text("tr[data-service=press] [data-device=plc2]")
    assert "degraded" in page.inner_text("tr[data-service=press] .state")
    assert "since" in page.inner_text("tr[data-service=press] .state")
