"""The Datonis MQTT transport against a real mosquitto that checks the login itself and the
platform simulator's MQTT side (hashes verified, acks on httpAck, faults switched on)."""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from datonis_edge.model import OutcomeKind
from datonis_edge.protocol.datonis import mqtt_password
from datonis_edge.protocol.instructions import InstructionError, verify_instruction
from datonis_edge.store.outbox import Outbox
from datonis_edge.uplinks.datonis_mqtt.config import DatonisMqttCloud
from datonis_edge.uplinks.datonis_mqtt.uplink import DatonisMqttUplink
from helpers import (
    Gateway,
    Mosquitto,
    PlatformSim,
    base_config,
    free_port,
    simulator_service,
    wait_until,
)

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
        cloud = {"ack_timeout_ms": 2000, **cloud}
        protocol = "mqtts" if tls else "mqtt"
        return base_config(self.sim, protocol=protocol, endpoint=endpoint, **cloud)

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


def _counter_values(sim: PlatformSim) -> list[int]:
    return [e["data"]["n"] for e in sim.events()]


def _contiguous_from_zero(values: list[int], at_least: int) -> bool:
    seen = set(values)
    return len(seen) >= at_least and seen == set(range(len(seen)))


def test_401_ack_declines_with_the_platforms_reason_and_later_batches_flow(
    stack: Stack, gateway_factory: Callable[..., Gateway]
) -> None:
    stack.sim.mqtt_fault(http_code=401, http_msg="access key revoked", count=1)
    cfg = stack.config()
    cfg["services"] = [simulator_service("press-1")]
    gw = gateway_factory(cfg).start()
    wait_until(lambda: len(stack.sim.events()) >= 50, 30, "later batches delivered")
    alerts = [a["message"] for a in gw.status()["alerts"]]
    declined = [m for m in alerts if "declined" in m]
    assert declined and "401 Unauthorized: 401: access key revoked" in declined[0], alerts
    assert stack.sim.mqtt()["ack_401"] == 1
    assert 0 not in _counter_values(stack.sim)  # the declined batch is in declined/, not sent


def test_no_ack_is_retried_after_the_ack_timeout_and_nothing_is_lost(
    stack: Stack, gateway_factory: Callable[..., Gateway]
) -> None:
    stack.sim.mqtt_fault(no_ack=True, count=2)
    cfg = stack.config(ack_timeout_ms=500)
    cfg["services"] = [simulator_service("press-1")]
    gw = gateway_factory(cfg).start()
    wait_until(
        lambda: _contiguous_from_zero(_counter_values(stack.sim), 100), 30, "0..99 delivered"
    )
    assert stack.sim.mqtt()["not_acked"] == 2
    assert gw.status()["forwarder"]["counters"]["retries"] >= 1


def test_parse_error_fails_the_oldest_message_which_is_sent_again(
    stack: Stack, gateway_factory: Callable[..., Gateway]
) -> None:
    stack.sim.mqtt_fault(parse_error=True, count=1)
    cfg = stack.config(max_inflight_batches=1)
    cfg["services"] = [simulator_service("press-1")]
    gw = gateway_factory(cfg).start()
    wait_until(lambda: _contiguous_from_zero(_counter_values(stack.sim), 60), 30, "0..59")
    assert stack.sim.mqtt()["ack_500"] == 1
    assert gw.status()["forwarder"]["counters"]["retries"] >= 1


def test_refused_login_is_shown_alerted_logged_once_and_recovers_when_the_key_is_fixed(
    stack: Stack, gateway_factory: Callable[..., Gateway]
) -> None:
    stack.broker.set_users(stack.login(secret="an-old-secret"))
    cfg = stack.config()
    cfg["services"] = [simulator_service("press-1")]
    gw = gateway_factory(cfg).start()

    def refused() -> bool:
        st = gw.status()
        uplink = st["uplinks"][0]
        return uplink["state"] == "unauthorized" and any(
            "refused the login" in a["message"] for a in st["alerts"]
        )

    wait_until(refused, 20, "the refusal in status and alerts")
    assert "check access_key and secret_key" in gw.status()["uplinks"][0]["last_error"]
    assert stack.sim.events() == []
    wait_until(
        lambda: stack.broker.proc.log().count("not authorised") >= 3, 20, "three refused logins"
    )  # still one log line
    assert gw.proc is not None
    assert gw.proc.log().count("refused the login of access key") == 1
    stack.broker.set_users(stack.login())
    wait_until(lambda: len(stack.sim.events()) >= 20, 30, "delivery once the key is fixed")
    assert gw.status()["uplinks"][0]["state"] == "connected"
    assert "accepts the keys again" in gw.proc.log()


def test_sigkill_while_batches_wait_for_acks_loses_no_acknowledged_reading(
    stack: Stack, gateway_factory: Callable[..., Gateway], shared_dir: Path
) -> None:
    port = free_port()
    cfg = stack.config(bulk_max_elements=10, ack_timeout_ms=60_000)
    cfg["services"] = [{"name": "push", "type": "http_listener", "host": "127.0.0.1", "port": port}]
    a = gateway_factory(cfg, datadir=shared_dir, name="node").start()
    b = gateway_factory(None, datadir=shared_dir, name="node").start(wait_master=False)
    b.wait_role("standby")
    stack.sim.mqtt_fault(no_ack=True, count=-1)  # the platform holds every answer back
    acked: set[int] = set()
    with httpx.Client(timeout=5) as http:
        for s in range(0, 200, 5):
            body = {"events": [{"thing_key": "m", "data": {"seq": i}} for i in range(s, s + 5)]}
            r = http.post(f"http://127.0.0.1:{port}/api/v3/things/event.json", json=body)
            assert r.status_code == 200, r.text
            acked.update(range(s, s + 5))
    wait_until(lambda: stack.sim.mqtt().get("not_acked", 0) >= 1, 20, "a batch waiting for its ack")
    a.kill()
    stack.sim.http.delete("/sim/mqtt/faults").raise_for_status()
    b.wait_role("master", timeout=10)
    wait_until(
        lambda: acked <= {e["data"]["seq"] for e in stack.sim.events()},
        60,
        "every acknowledged reading delivered by the new master",
    )
    assert stack.sim.mqtt().get("bad_hash", 0) == 0


def test_lzf_bodies_over_1_kb_go_to_the_lzf_topic_and_decode_at_the_platform(
    stack: Stack, gateway_factory: Callable[..., Gateway]
) -> None:
    cfg = stack.config(use_compression=True, bulk_max_elements=50, bulk_transmit_interval_ms=200)
    cfg["services"] = [simulator_service("press-1", scan_interval_ms=10)]
    gateway_factory(cfg).start()
    wait_until(lambda: _contiguous_from_zero(_counter_values(stack.sim), 200), 30, "0..199")
    counts = stack.sim.mqtt()
    assert counts["lzf"] >= 1 and counts.get("bad_lzf", 0) == 0
    assert counts.get("bad_hash", 0) == 0


def _test_ca(tmp: Path) -> tuple[Path, Path, Path]:
    """A test CA and a server certificate for localhost / 127.0.0.1 signed by it."""
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", "/CN=datonis-edge test CA", "-keyout", str(tmp / "ca.key"),
         "-out", str(tmp / "ca.pem")],
        check=True, capture_output=True,
    )  # fmt: skip
    subprocess.run(
        ["openssl", "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost",
         "-keyout", str(tmp / "server.key"), "-out", str(tmp / "server.csr")],
        check=True, capture_output=True,
    )  # fmt: skip
    (tmp / "san.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    subprocess.run(
        ["openssl", "x509", "-req", "-in", str(tmp / "server.csr"), "-CA", str(tmp / "ca.pem"),
         "-CAkey", str(tmp / "ca.key"), "-CAcreateserial", "-days", "2",
         "-extfile", str(tmp / "san.ext"), "-out", str(tmp / "server.pem")],
        check=True, capture_output=True,
    )  # fmt: skip
    return tmp / "ca.pem", tmp / "server.pem", tmp / "server.key"


def test_mqtts_to_a_broker_signed_by_the_plant_ca_given_as_ca_file(
    tmp_path: Path, gateway_factory: Callable[..., Gateway]
) -> None:
    ca, cert, key = _test_ca(tmp_path)
    s = _stack(tmp_path, tls=(cert, key))
    try:
        cfg = s.config(tls=True, ca_file=str(ca))
        cfg["services"] = [simulator_service("press-1")]
        gw = gateway_factory(cfg).start()
        wait_until(lambda: len(s.sim.events()) >= 20, 30, "events over TLS")
        assert gw.status()["uplinks"][0]["details"]["broker"] == f"localhost:{s.broker.tls_port}"
        # without the plant CA the broker's certificate is not trusted: nothing is sent
        cfg2 = s.config(tls=True)
        cfg2["services"] = [simulator_service("press-2")]
        gw2 = gateway_factory(cfg2, datadir=tmp_path / "data2", name="untrusting").start()
        time.sleep(2)
        assert "press-2" not in {e["thing_key"] for e in s.sim.events()}
        assert gw2.status()["uplinks"][0]["state"] != "connected"
    finally:
        s.sim.stop()
        s.broker.stop()


def _uplink(stack: Stack, **cloud: Any) -> DatonisMqttUplink:
    keys = {"access_key": AK, "secret_key": SK, "ack_timeout_ms": 5000, **cloud}
    endpoint = f"mqtt://127.0.0.1:{stack.broker.port}"
    return DatonisMqttUplink(DatonisMqttCloud(protocol="mqtt", endpoint=endpoint, **keys))


def test_instructions_reach_the_sink_and_their_acks_and_alerts_are_acknowledged(
    stack: Stack,
) -> None:
    async def scenario() -> None:
        uplink = _uplink(stack, register_things=True)
        taken: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()

        async def sink(thing_key: str, payload: bytes) -> None:
            await taken.put((thing_key, payload))

        assert uplink.receive_instructions(["press-1"], sink)
        await uplink.start()
        try:
            await asyncio.wait_for(uplink._connected.wait(), 10)
            alert_key = await asyncio.to_thread(
                stack.sim.send_instruction, "press-1", {"setpoint": 42.5}
            )
            thing_key, payload = await asyncio.wait_for(taken.get(), 10)
            verified = verify_instruction(payload, AK, SK)
            assert thing_key == "press-1" and verified["alert_key"] == alert_key
            assert verified["instruction"] == {"setpoint": 42.5}
            # a bad hash still reaches the sink, whose check refuses it (never executed)
            await asyncio.to_thread(stack.sim.send_instruction, "press-1", {"a": 1}, bad_hash=True)
            _, forged = await asyncio.wait_for(taken.get(), 10)
            with pytest.raises(InstructionError):
                verify_instruction(forged, AK, SK)

            acked = await uplink.instruction_ack(alert_key, "press-1", True, "wrote setpoint")
            assert acked.kind is OutcomeKind.DELIVERED, acked
            alert = await uplink.alert("press-1", "warning", "door open", {"door": 3})
            assert alert.kind is OutcomeKind.DELIVERED, alert
            assert (await uplink.heartbeat(["press-1"])).kind is OutcomeKind.DELIVERED
        finally:
            await uplink.close()

    asyncio.run(scenario())
    acks = stack.sim.instructions()["acks"]
    assert [a["alert_key"] for a in acks] == [stack.sim.instructions()["sent"][0]["alert_key"]]
    assert acks[0]["data"] == {"execution_status": "success"}
    assert acks[0]["message"] == "wrote setpoint"
    alerts = [a for a in stack.sim.alerts() if a.get("message") == "door open"]
    assert alerts and alerts[0]["alert_type"] == 1 and alerts[0]["data"] == {"door": 3}
    wait_until(lambda: stack.sim.stats()["heartbeats"] >= 1, 10, "the heartbeat")
    registered = stack.sim.mqtt()["registrations"]
    assert registered and registered[0]["thing_key"] == "press-1"
    assert registered[0]["bi_directional"] is True


def test_an_instruction_is_acknowledged_to_the_broker_only_after_the_sink_returned(
    stack: Stack,
) -> None:
    async def scenario() -> None:
        uplink = _uplink(stack)
        release = asyncio.Event()
        entered = asyncio.Event()

        async def slow_sink(thing_key: str, payload: bytes) -> None:
            entered.set()
            await release.wait()

        uplink.receive_instructions(["press-1"], slow_sink)
        await uplink.start()
        try:
            await asyncio.wait_for(uplink._connected.wait(), 10)
            client = uplink._client
            assert client is not None
            acks: list[tuple[int, int]] = []
            real_ack = client.ack
            client.ack = lambda mid, qos: acks.append((mid, qos)) or real_ack(mid, qos)  # type: ignore[method-assign]
            await asyncio.to_thread(stack.sim.send_instruction, "press-1", {"go": 1})
            await asyncio.wait_for(entered.wait(), 10)
            await asyncio.sleep(0.3)
            assert acks == []  # the sink has not returned: the broker has no PUBCOMP yet
            release.set()
            for _ in range(200):
                if acks:
                    break
                await asyncio.sleep(0.01)
            assert [qos for _, qos in acks] == [2]
        finally:
            await uplink.close()

    asyncio.run(scenario())


def test_a_broker_restart_reconnects_and_subscribes_again_so_acks_still_settle_batches(
    stack: Stack, gateway_factory: Callable[..., Gateway]
) -> None:
    cfg = stack.config()
    cfg["services"] = [simulator_service("press-1")]
    gw = gateway_factory(cfg).start()
    wait_until(lambda: len(stack.sim.events()) >= 20, 30, "delivery before the restart")
    stack.broker.stop()
    wait_until(lambda: gw.status()["uplinks"][0]["state"] == "disconnected", 20, "the drop")
    stack.broker.start()
    wait_until(lambda: stack.sim.mqtt()["connected"], 20, "the simulator back on the broker")
    before = len(stack.sim.events())
    # delivered again only if the new session subscribed httpAck again
    wait_until(lambda: len(stack.sim.events()) >= before + 40, 30, "delivery after the restart")
    assert gw.status()["uplinks"][0]["state"] == "connected"
    assert _contiguous_from_zero(_counter_values(stack.sim), before + 40)


def test_several_batches_wait_for_their_acks_at_once_and_all_settle(
    stack: Stack, gateway_factory: Callable[..., Gateway], tmp_path: Path
) -> None:
    datadir = tmp_path / "backlog"
    outbox = Outbox(datadir / "outbox", max_bytes=1 << 30)
    outbox.open()
    outbox.append_sync([{"thing_key": "m", "data": {"seq": i}} for i in range(200)])
    outbox.close()
    stack.sim.mqtt_fault(no_ack=True, count=-1)
    cfg = stack.config(bulk_max_elements=10, max_inflight_batches=4, ack_timeout_ms=5000)
    gw = gateway_factory(cfg, datadir=datadir).start()
    wait_until(
        lambda: gw.status()["uplinks"][0]["details"]["waiting_acks"] == 4,
        20,
        "four batches waiting for their acks",
    )
    assert stack.sim.mqtt()["not_acked"] == 4
    stack.sim.http.delete("/sim/mqtt/faults").raise_for_status()
    wait_until(lambda: gw.status()["outbox"]["pending"] == 0, 60, "the backlog settled")
    assert {e["data"]["seq"] for e in stack.sim.events()} == set(range(200))
