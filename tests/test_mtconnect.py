"""The mtconnect adapter in a gateway process against fixture agents (whose documents follow
the official schemas, see test_mtconnect_agent.py), delivering to the platform simulator:
values of every category arrive exactly; an agent that stops answering is reported and
retried while another keeps delivering, then resumes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from helpers import base_config, wait_until
from servers.mtconnect_fixture import MtconnectAgentProc

TAGS = [
    {"name": "x0", "data_item": "d0_x0"},
    {"name": "x1", "data_item": "d0_x1"},
    {"name": "avail", "data_item": "avail"},
    {"name": "exec", "data_item": "d0_exec"},
    {"name": "mode", "dataItemId": "d0_mode"},
    {"name": "program", "data_item": "program"},
    {"name": "parts", "data_item": "d0_parts"},
    {"name": "system", "data_item": "d0_system"},
    {"name": "system_code", "data_item": "d0_system", "field": "native_code"},
    {"name": "system_text", "data_item": "d0_system", "field": "message"},
    {"name": "temp_cond", "data_item": "temp_cond"},
]


def _config(platform, agents: list[MtconnectAgentProc], mode: str) -> dict[str, Any]:
    config = base_config(platform)
    tags = [{**t, "agent": f"a{i}"} for i in range(len(agents)) for t in TAGS]
    for t in tags:
        t["name"] = f"{t['agent']}_{t['name']}"
    config["services"] = [{
        "name": "cnc", "type": "mtconnect", "mode": mode, "scan_interval_ms": 100,
        "heartbeat_ms": 500, "retry_max_backoff_ms": 500,
        "agents": [{"name": f"a{i}", "url": a.url, "timeout_ms": 1500} for i, a in enumerate(agents)],
        "tags": tags,
        "things": [
            {"thing_key": f"vmc-{i}", "metrics": [{"name": t["name"].split("_", 1)[1], "tag": t["name"]} for t in tags if t["agent"] == f"a{i}"]}
            for i in range(len(agents))
        ],
    }]  # fmt: skip
    return config


def _values(platform, thing_key: str, metric: str) -> list[Any]:
    return [
        e["data"][metric]
        for e in platform.events()
        if e["thing_key"] == thing_key and metric in e["data"]
    ]


@pytest.mark.parametrize("mode", ["streaming", "polling"])
def test_values_of_every_category_arrive_exactly(
    mode, platform, gateway_factory, tmp_path: Path
) -> None:
    agent = MtconnectAgentProc(tmp_path).start()
    try:
        gw = gateway_factory(_config(platform, [agent], mode)).start()
        # the /current state first: UNAVAILABLE samples are null, events their text
        wait_until(lambda: _values(platform, "vmc-0", "exec") == ["READY"], what="the state")
        assert _values(platform, "vmc-0", "x0") == [None]
        assert _values(platform, "vmc-0", "avail") == ["AVAILABLE"]
        assert _values(platform, "vmc-0", "system") == ["normal"]
        seqs = agent.set({
            "d0_x0": 12.5, "d0_x1": -0.001, "d0_exec": "ACTIVE", "d0_mode": "MANUAL_DATA_INPUT",
            "d0_program": "O1234 <rough & finish>", "d0_parts": "42",
            "d0_system": {"level": "fault", "native_code": "E1234", "text": "Spindle overtemp"},
            "d0_temp_cond": {"level": "warning"},
        })  # fmt: skip
        assert len(seqs) == 8
        wait_until(lambda: _values(platform, "vmc-0", "system")[-1:] == ["fault"], what="fault")
        last = {m: _values(platform, "vmc-0", m)[-1] for m in
                ("x0", "x1", "exec", "mode", "program", "parts", "system", "system_code",
                 "system_text", "temp_cond")}  # fmt: skip
        assert last == {
            "x0": 12.5, "x1": -0.001, "exec": "ACTIVE", "mode": "MANUAL_DATA_INPUT",
            "program": "O1234 <rough & finish>", "parts": "42", "system": "fault",
            "system_code": "E1234", "system_text": "Spindle overtemp", "temp_cond": "warning",
        }  # fmt: skip
        agent.set({"d0_system": {"level": "normal"}, "d0_x0": "UNAVAILABLE"})
        wait_until(lambda: _values(platform, "vmc-0", "system")[-1:] == ["normal"], what="normal")
        assert _values(platform, "vmc-0", "x0") == [None, 12.5, None]
        # the agent's timestamps are the events' timestamps: one event per thing and instant
        events = [e for e in platform.events() if e["thing_key"] == "vmc-0"]
        assert len({e["timestamp"] for e in events}) == len(events) == 3
        status = gw.status()["services"][0]
        assert status["state"] == "running"
        agent_state = status["details"]["devices"][0]
        assert agent_state["connected"] and agent_state["gaps"] == 0
        assert agent_state["missing_data_items"] == []
    finally:
        agent.stop()


def test_a_dead_agent_is_reported_and_retried_while_another_delivers(
    platform, gateway_factory, tmp_path: Path
) -> None:
    a0 = MtconnectAgentProc(tmp_path).start()
    a1 = MtconnectAgentProc(tmp_path).start()
    try:
        gw = gateway_factory(_config(platform, [a0, a1], "streaming")).start()
        for key in ("vmc-0", "vmc-1"):
            wait_until(lambda key=key: _values(platform, key, "exec"), what=f"{key} state")
        a0.kill()

        def a0_down() -> Any:
            s = gw.status()["services"][0]
            return s["state"] == "degraded" and not s["details"]["devices"][0]["connected"] and s

        status = wait_until(a0_down, what="a0 reported down")
        assert "a0" in status["last_error"] and status["details"]["devices"][1]["connected"]
        assert "retrying" in status["details"]["devices"][0]["last_error"]
        metrics = gw.http.get("/metrics").text
        assert 'datonis_edge_device_up{device="a0",service="cnc"} 0.0' in metrics
        assert 'datonis_edge_device_up{device="a1",service="cnc"} 1.0' in metrics
        for i in range(5):  # the other agent keeps delivering, every value
            a1.set({"d0_x0": float(i)})
        wait_until(lambda: _values(platform, "vmc-1", "x0")[-1:] == [4.0], what="a1 values")
        assert _values(platform, "vmc-1", "x0") == [None, 0.0, 1.0, 2.0, 3.0, 4.0]
        # a0 comes back (a new instance on the same port): read again, status recovers
        a0 = MtconnectAgentProc(tmp_path, port=a0.port).start()
        a0.set({"d0_x0": 99.0})
        wait_until(lambda: _values(platform, "vmc-0", "x0")[-1:] == [99.0], what="a0 again")
        wait_until(lambda: gw.status()["services"][0]["state"] == "running", what="running")
        log = gw.proc.log() if gw.proc else ""
        assert log.count("agent a0 at") == 2  # one line down, one line back
        assert "does not answer" in log and "answers again" in log
    finally:
        a0.stop()
        a1.stop()
