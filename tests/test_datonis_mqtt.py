"""The Datonis MQTT transport against a real mosquitto that checks the login itself and the
platform simulator's MQTT side (hashes verified, acks on httpAck, faults switched on)."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from datonis_edge.protocol.datonis import mqtt_password
from helpers import Gateway, Mosquitto, PlatformSim, base_config, simulator_service, wait_until

AK, SK = "test-ak", "test-sk"
SIM_USER, SIM_PASSWORD = "platform-sim", "sim-password"


@dataclass
class Stack:
    broker: Mosquitto
    sim: PlatformSim

    def config(self, tls: bool = False, **cloud: Any) -> dict[str, Any]:
        endpoint = (
            f"mqtts://localhost:{self.broker.tls_port}"
            if tls
            else f"mqtt://127.0.0.1:{self.broker.port}"
        )
        cfg = base_config(
            self.sim,
            protocol="mqtts" if tls else "mqtt",
            endpoint=endpoint,
            ack_timeout_ms=2000,
            **cloud,
        )
        return cfg

    def login(self, secret: str = SK) -> dict[str, str]:
        return {AK: mqtt_password(AK, secret), SIM_USER: SIM_PASSWORD}


def _stack(tmp_path: Path, tls: tuple[Path, Path] | None = None) -> Stack:
    users = {AK: mqtt_password(AK, SK), SIM_USER: SIM_PASSWORD}
    broker = Mosquitto(tmp_path, users=users, tls=tls).start()
    sim = PlatformSim(
        tmp_path,
        AK,
        SK,
        mqtt_broker=f"mqtt://{SIM_USER}:{SIM_PASSWORD}@127.0.0.1:{broker.port}",
    ).start()
    return Stack(broker, sim)


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    s = _stack(tmp_path)
    yield s
    s.sim.stop()
    s.broker.stop()


def test_events_reach_the_platform_signed_over_the_brokers_login(
    stack: Stack, gateway_factory: Callable[..., Gateway]
) -> None:
    cfg = stack.config()
    cfg["services"] = [simulator_service("press-1")]
    gw = gateway_factory(cfg).start()
    wait_until(lambda: len(stack.sim.events()) >= 100, 30, "100 events over MQTT")
    counts = stack.sim.mqtt()
    assert counts.get("bad_hash", 0) == 0 and counts.get("unknown_key", 0) == 0
    assert counts["ack_200"] >= 1
    events = stack.sim.events()
    assert {e["thing_key"] for e in events} == {"press-1"}
    assert all(e["epoch"] == 1 and e["batch_id"] for e in events)
    ns = [e["data"]["n"] for e in events]
    assert ns == sorted(ns) and len(set(ns)) == len(ns)
    uplink = gw.status()["uplinks"][0]
    assert uplink["type"] == "datonis_mqtt" and uplink["state"] == "connected", uplink
