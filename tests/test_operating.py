"""Operators hear about trouble (DESIGN.md, "Operating it"): every change to act on is one log
line naming the cause and the fix, its recovery one INFO line; the status says `health:
degraded` with the reason; /metrics and /readyz say the same. Each test runs a real gateway
process and reads its log file and its HTTP API."""

from __future__ import annotations

import json
import logging
import re
import shutil
import signal
import socket
import warnings
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from helpers import (
    Gateway,
    ModbusServer,
    PlatformSim,
    base_config,
    free_port,
    simulator_service,
    wait_until,
)

# logs.TEXT_FORMAT: "%(asctime)s %(levelname)s %(name)s: %(message)s"
LINE = re.compile(
    r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ (?P<level>[A-Z]+) (?P<logger>\S+): (?P<msg>.*)$"
)


def log_lines(gw: Gateway, level: str | None = None, containing: str = "") -> list[str]:
    """The messages of the gateway's log records (of one level, or of the levels separated
    by `|`) that contain a text, in order."""
    assert gw.proc is not None
    levels = level.split("|") if level else None
    out = []
    for line in gw.proc.log().splitlines():
        m = LINE.match(line)
        if m and (levels is None or m["level"] in levels) and containing in m["msg"]:
            out.append(m["msg"])
    return out


def problems(gw: Gateway) -> list[str]:
    """Every WARNING and ERROR line, but the one about running the tests as root."""
    lines = log_lines(gw, "WARNING|ERROR|CRITICAL")
    return [line for line in lines if not line.startswith("running as root")]


def metrics(gw: Gateway) -> dict[str, Any]:
    """The gateway's /metrics by family name (counters without their `_total`)."""
    r = gw.http.get("/metrics")
    assert r.status_code == 200, r.text
    return {f.name: f for f in text_string_to_metric_families(r.text)}


def sample(gw: Gateway, name: str, **labels: str) -> float | None:
    """The value of the sample `name` (full sample name) whose labels include `labels`."""
    for family in metrics(gw).values():
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    return None


def listener(platform: PlatformSim | None, port: int | None = None, **cloud: Any):
    config = base_config(platform, **cloud)
    port = port or free_port()
    config["services"] = [
        {"name": "push", "type": "http_listener", "host": "127.0.0.1", "port": port}
    ]
    return config, f"http://127.0.0.1:{port}/api/v3/things/event.json"


def post(url: str, start: int, count: int, thing: str = "m1") -> httpx.Response:
    events = [
        {"thing_key": thing, "timestamp": 1_700_000_000_000 + i, "data": {"seq": i}}
        for i in range(start, start + count)
    ]
    return httpx.post(url, json={"events": events}, timeout=10)


def seqs(platform: PlatformSim) -> list[int]:
    return sorted(e["data"]["seq"] for e in platform.events())


# ---------------------------------------------------------------------- 401: keys refused


def test_a_401_is_one_error_line_naming_the_fix_degraded_health_and_counted(
    platform, gateway_factory
) -> None:
    config, url = listener(platform, bulk_max_elements=5, bulk_transmit_interval_ms=0)
    gw = gateway_factory(config).start()
    assert post(url, 0, 5).status_code == 200
    wait_until(lambda: seqs(platform) == list(range(5)), what="first batch delivered")
    assert gw.status()["health"] == "ok"
    uplink = gw.status()["uplinks"][0]["name"]

    platform.set_keys("rotated-ak", "rotated-sk")  # the platform no longer knows our key
    for start in (5, 10, 15):  # three batches, each declined within the minute
        assert post(url, start, 5).status_code == 200
    st = wait_until(
        lambda: (s := gw.status())["counters"].get("declined") == 15 and s,
        what="three batches declined",
    )
    assert st["declined_batches"] == 3
    assert st["health"] == "degraded"
    assert any("401" in r and "access_key" in r for r in st["reasons"]), st["reasons"]
    declined = sample(gw, "datonis_edge_events_declined_total", uplink=uplink, status="401")
    assert declined == 15
    assert sample(gw, "datonis_edge_uplink_up", uplink=uplink) == 0  # it does not deliver

    errors = log_lines(gw, "ERROR")
    assert len(errors) == 1, errors
    assert "declined" in errors[0] and "401" in errors[0]
    assert "access_key" in errors[0] and "secret_key" in errors[0]
    assert problems(gw) == errors  # nothing else, no WARNING per batch either

    platform.set_keys(platform.access_key, platform.secret_key)  # keys fixed
    assert post(url, 20, 5).status_code == 200
    wait_until(lambda: 24 in seqs(platform), timeout=30, what="delivery after the fix")
    wait_until(lambda: gw.status()["health"] == "ok", what="health ok again")
    assert len(log_lines(gw, "INFO", "accepts the keys again")) == 1


# ---------------------------------------------------------------------- platform unreachable


def platform_outage(platform: PlatformSim, gateway_factory: Any) -> tuple[Gateway, str]:
    """A gateway delivering a simulator's readings, then the platform gone: what an operator
    sees while it is gone. Returns the gateway and its uplink's name."""
    config = base_config(platform, retry_max_backoff_ms=300)
    config["services"] = [simulator_service()]
    gw = gateway_factory(config).start()
    wait_until(lambda: platform.events(), what="readings delivered")
    uplink = gw.status()["uplinks"][0]["name"]
    assert sample(gw, "datonis_edge_uplink_up", uplink=uplink) == 1

    platform.stop()
    st = wait_until(
        lambda: (s := gw.status())["health"] == "degraded" and s, what="health degraded"
    )
    assert any(uplink in r for r in st["reasons"]), st["reasons"]
    assert gw.http.get("/readyz").status_code == 200  # the master keeps accepting readings
    retries = wait_until(
        lambda: (n := sample(gw, "datonis_edge_uplink_retries_total", uplink=uplink)) and n,
        what="retries counted",
    )
    wait_until(
        lambda: sample(gw, "datonis_edge_uplink_retries_total", uplink=uplink) >= retries + 3,
        what="retries growing",
    )
    assert sample(gw, "datonis_edge_uplink_up", uplink=uplink) == 0
    age = sample(gw, "datonis_edge_outbox_oldest_age_seconds")
    wait_until(
        lambda: sample(gw, "datonis_edge_outbox_oldest_age_seconds") > age + 0.5,
        what="the oldest pending reading ageing",
    )
    warnings = problems(gw)
    assert len(warnings) == 1, warnings  # one line, not one per retry
    assert log_lines(gw, "WARNING", f"uplink {uplink}") == warnings
    assert "retrying" in warnings[0]
    return gw, uplink


def test_an_unreachable_platform_is_one_warning_degraded_but_ready_and_recovers(
    platform, gateway_factory, tmp_path: Path
) -> None:
    gw, uplink = platform_outage(platform, gateway_factory)
    back = PlatformSim(tmp_path, port=platform.port).start()
    try:
        wait_until(lambda: back.events(), timeout=30, what="readings delivered again")
        wait_until(lambda: gw.status()["health"] == "ok", what="health ok again")
        assert sample(gw, "datonis_edge_uplink_up", uplink=uplink) == 1
        wait_until(lambda: len(back.events()) >= 60, what="a while of deliveries")
        assert len(log_lines(gw, "INFO", f"uplink {uplink} answers again")) == 1
        assert len(problems(gw)) == 1, problems(gw)  # no second WARNING after the recovery
    finally:
        gw.stop()  # before the platform, whose going would be a new outage
        back.stop()


# ---------------------------------------------------------------------- a PLC stops answering


def test_a_plc_that_stops_answering_is_one_warning_naming_it_and_one_recovery(
    platform, gateway_factory, tmp_path: Path
) -> None:
    plc = ModbusServer(tmp_path, {"units": {"1": {"hr": {"0": [42]}}}}, "plc").start()
    try:
        config = base_config(platform)
        config["services"] = [
            {
                "name": "press-line",
                "type": "modbus_tcp",
                "scan_interval_ms": 50,
                "retry_max_backoff_ms": 200,
                "devices": [{"name": "plc-7", "port": plc.port, "timeout_ms": 100}],
                "tags": [{"name": "t", "device": "plc-7", "register": "holding", "address": 0}],
                "things": [{"thing_key": "press-1", "metrics": [{"name": "t", "tag": "t"}]}],
            }
        ]
        gw = gateway_factory(config).start()
        wait_until(lambda: platform.events(), what="readings delivered")
        device = {"service": "press-line", "device": "plc-7"}
        assert sample(gw, "datonis_edge_device_up", **device) == 1
        assert sample(gw, "datonis_edge_tag_read_errors_total", **device) == 0

        plc.proc.signal(signal.SIGSTOP)  # powered but silent: every read times out
        wait_until(
            lambda: sample(gw, "datonis_edge_device_up", **device) == 0, what="device shown down"
        )
        errors = wait_until(
            lambda: (n := sample(gw, "datonis_edge_tag_read_errors_total", **device)) and n,
            what="read errors counted",
        )
        wait_until(
            lambda: sample(gw, "datonis_edge_tag_read_errors_total", **device) >= errors + 3,
            what="read errors growing, scan after scan",
        )
        st = gw.status()
        assert st["health"] == "degraded"
        assert any("press-line" in r and "plc-7" in r for r in st["reasons"]), st["reasons"]
        warnings = problems(gw)
        assert len(warnings) == 1, warnings  # one line, not one per scan
        assert "press-line" in warnings[0] and "plc-7" in warnings[0]
        assert "does not answer" in warnings[0] and f":{plc.port}" in warnings[0]  # cause, where
        assert "check that each device is powered and reachable" in warnings[0]  # the hint

        plc.proc.signal(signal.SIGCONT)
        wait_until(lambda: sample(gw, "datonis_edge_device_up", **device) == 1, timeout=30)
        recovered = wait_until(
            lambda: log_lines(gw, "INFO", "plc-7 at 127.0.0.1"), what="recovery logged"
        )
        assert len(recovered) == 1 and "answers again" in recovered[0]
        wait_until(lambda: gw.status()["health"] == "ok", what="health ok again")
        assert len(problems(gw)) == 1
    finally:
        plc.stop()


# ---------------------------------------------------------------------- a listener's port taken


def test_a_listener_whose_port_is_taken_is_one_error_naming_the_port_and_the_fix(
    platform, gateway_factory
) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        config, _ = listener(platform, port=port)
        config["services"].append(simulator_service())
        gw = gateway_factory(config).start()
        st = wait_until(
            lambda: (
                (s := gw.status())["services"][0]["counters"].get("failures", 0) >= 2
                and s["health"] == "degraded"
                and s
            ),
            what="the listener failing, twice",
        )
        push = st["services"][0]
        assert push["state"] in ("failed", "starting"), push  # between two restarts
        assert f"port {port}" in push["last_error"]
        assert any(f"port {port}" in r for r in st["reasons"]), st["reasons"]
        # the rest of the pipeline runs: the simulator's readings reach the platform
        assert gw.http.get("/readyz").status_code == 200
        wait_until(lambda: platform.events(), what="the simulator's readings delivered")
        lines = problems(gw)
        assert len(lines) == 1, lines  # once, though it fails on every restart
        assert f"port {port}" in lines[0] and "already in use" in lines[0]
        assert "stop what uses it or choose another port" in lines[0]

    # the port is free again: the listener binds at its next restart
    wait_until(
        lambda: gw.status()["services"][0]["state"] == "listening", timeout=40, what="listening"
    )
    wait_until(lambda: log_lines(gw, "INFO", "running again"), what="its recovery logged")
    wait_until(lambda: gw.status()["health"] == "ok", what="health ok again")
    assert len(problems(gw)) == 1


# ---------------------------------------------------------------------- /readyz


def test_readyz_is_503_while_the_forwarder_is_down_and_200_once_it_runs_again(
    platform, gateway_factory
) -> None:
    """declined/ turned into a file: a 422 cannot be kept, the forwarder fails on every try
    (the injection of test_supervision.py)."""
    config, url = listener(platform, bulk_max_elements=5)
    gw = gateway_factory(config).start()
    assert gw.http.get("/readyz").status_code == 200
    declined = gw.datadir / "declined"
    shutil.rmtree(declined)
    declined.write_text("not a directory\n")
    platform.fault(status=422, count=-1)
    assert post(url, 0, 5).status_code == 200

    wait_until(lambda: gw.http.get("/readyz").status_code == 503, what="not ready")
    answers = []

    def failed_again() -> bool:  # every probe during the failing spell, restarts included
        r = gw.http.get("/readyz")
        answers.append((r.status_code, r.json()))
        return gw.status()["forwarder"]["counters"].get("failures", 0) >= 3

    wait_until(failed_again, timeout=30, what="the forwarder failing three times")
    assert {code for code, _ in answers} == {503}, answers
    body = answers[-1][1]
    assert body["ready"] is False and body["role"] == "master"
    assert "pipeline failed" in body["reason"]
    assert gw.status()["health"] == "degraded"

    declined.unlink()
    platform.http.delete("/sim/faults").raise_for_status()
    wait_until(lambda: gw.http.get("/readyz").status_code == 200, timeout=40, what="ready")
    assert gw.http.get("/healthz").status_code == 200


def test_readyz_on_a_standby_is_503_naming_the_master(
    platform, gateway_factory, tmp_path: Path
) -> None:
    config = base_config(platform)
    config["services"] = [simulator_service()]
    master = gateway_factory(config, datadir=tmp_path / "shared").start()
    standby = gateway_factory(None, datadir=tmp_path / "shared").start(wait_master=False)
    standby.wait_role("standby")

    r = standby.http.get("/readyz")
    assert r.status_code == 503
    assert r.json()["role"] == "standby"
    assert master.name in r.json()["reason"]
    assert f"127.0.0.1:{master.http_port}" in r.json()["reason"]
    alive = standby.http.get("/healthz")  # alive, only not ready
    assert alive.status_code == 200 and alive.json()["role"] == "standby"
    assert master.http.get("/readyz").status_code == 200
    assert sample(standby, "datonis_edge_ha_master") == 0
    assert sample(master, "datonis_edge_ha_master") == 1
    # health is the master's pipeline's: a standby is no 0 for `health_ok == 0` to fire on
    assert sample(standby, "datonis_edge_health_ok") is None
    assert sample(master, "datonis_edge_health_ok") == 1


# ---------------------------------------------------------------------- --log-format json


def test_json_logs_are_one_json_object_per_line_warnings_and_all(
    gateway_factory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A gateway with trouble everywhere (no platform, a silent PLC, a taken port) and a
    clean stop: every line it writes is one JSON object (the process inherits the env)."""
    monkeypatch.setenv("DATONIS_EDGE_LOG_FORMAT", "json")
    plc = ModbusServer(tmp_path, {"units": {"1": {"hr": {"0": [1]}}}}, "plc").start()
    try:
        with socket.socket() as squatter:
            squatter.bind(("127.0.0.1", 0))
            squatter.listen()
            config, _ = listener(None, port=squatter.getsockname()[1])  # no platform there
            config["services"] += [
                simulator_service(),
                {
                    "name": "press-line",
                    "type": "modbus_tcp",
                    "scan_interval_ms": 50,
                    "devices": [{"name": "plc-7", "port": plc.port, "timeout_ms": 100}],
                    "tags": [{"name": "t", "device": "plc-7", "register": "holding", "address": 0}],
                    "things": [{"thing_key": "p", "metrics": [{"name": "t", "tag": "t"}]}],
                },
            ]
            gw = gateway_factory(config).start()
            plc.proc.signal(signal.SIGSTOP)
            assert gw.http.post("/api/v1/declined/replay", json={"ids": 5}).status_code == 400
            assert gw.proc is not None
            wait_until(
                lambda: all(
                    text in gw.proc.log()
                    for text in ("already in use", "retrying with backoff", "plc-7")
                ),
                what="the three problems logged",
            )
    finally:
        plc.stop()
    assert gw.stop() == 0
    records = []
    for line in gw.proc.log().splitlines():
        record = json.loads(line)  # fails on any line that is not JSON
        assert isinstance(record, dict), line
        assert {"time", "level", "logger", "message"} <= record.keys(), line
        records.append(record)
    levels = {r["level"] for r in records}
    assert {"info", "warning", "error"} <= levels, levels
    loggers = {r["logger"] for r in records}
    modbus = "datonis_edge.adapters.modbus_tcp.adapter"  # its devices, one line each
    assert {"datonis_edge.forwarder", "datonis_edge.pipeline", modbus} <= loggers


def test_json_logging_takes_in_library_records_and_python_warnings(
    capfd: pytest.CaptureFixture[str],
) -> None:
    """uvicorn logs through our handler (serving.py passes log_config=None), a traceback
    stays inside its record, and Python's warnings are records too."""
    from datonis_edge import logs

    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        logs.setup("info", "json")
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            logging.getLogger("uvicorn.error").exception("Exception in ASGI application")
        warnings.warn("a library's warning", RuntimeWarning, stacklevel=1)
        logging.getLogger("uvicorn.access").info("GET / 200")  # kept quiet
    finally:
        logging.captureWarnings(False)
        root.handlers[:] = handlers
        root.setLevel(level)
    lines = capfd.readouterr().err.splitlines()
    records = [json.loads(line) for line in lines]
    assert [(r["logger"], r["level"]) for r in records] == [
        ("uvicorn.error", "error"),
        ("py.warnings", "warning"),
    ]
    assert "RuntimeError: boom" in records[0]["exception"]
    assert "a library's warning" in records[1]["message"]


def test_a_replay_body_that_is_not_a_list_of_ids_is_a_400_never_all(
    platform, gateway_factory
) -> None:
    config, url = listener(platform, bulk_max_elements=5)
    gw = gateway_factory(config).start()
    platform.fault(status=422, count=1)
    assert post(url, 0, 5).status_code == 200
    wait_until(lambda: gw.status()["declined_batches"] == 1, what="a declined batch")
    for body in ({"ids": 5}, {"ids": [5]}, ["x"], {"ids": "all"}):
        r = gw.http.post("/api/v1/declined/replay", json=body)
        assert r.status_code == 400, (body, r.text)
        assert "ids" in r.json()["error"]
    assert gw.http.post("/api/v1/declined/replay", json={"ids": []}).json() == {
        "replayed_events": 0
    }
    assert gw.status()["declined_batches"] == 1  # nothing replayed by a bad body
    assert gw.http.post("/api/v1/declined/replay", json={"ids": None}).status_code == 200
    wait_until(lambda: seqs(platform) == list(range(5)), what="replayed on purpose")
    assert "Traceback" not in gw.proc.log()
    assert len(problems(gw)) == 1  # the 422


# ---------------------------------------------------------------------- the outbox fills up


def test_an_outbox_filling_up_is_one_warning_and_evicting_one_line_a_minute(
    gateway_factory,
) -> None:
    config, url = listener(None)  # no platform: everything stays in the outbox
    config["outbox"] = {"max_bytes": 1 << 20, "policy": "drop_oldest"}
    gw = gateway_factory(config).start()
    producer = httpx.Client(timeout=10)
    sent = 0

    def post_until(done: Any, what: str) -> Any:
        """Post 200 events at a time until `done()` says so (at most 40 MB worth)."""
        nonlocal sent
        for _ in range(3000):
            if result := done():
                return result
            events = [{"thing_key": "m1", "data": {"seq": i}} for i in range(sent, sent + 200)]
            r = producer.post(url, json={"events": events})
            assert r.status_code == 200, r.text  # drop_oldest: room is made, never refused
            sent += 200
        raise AssertionError(f"never {what}")

    try:
        post_until(lambda: gw.status()["outbox"]["fill"] >= 0.8, "80 % full")
        st = wait_until(
            lambda: (
                (s := gw.status())["health"] == "degraded"
                and any("80 %" in r for r in s["reasons"])
                and s
            ),
            what="the fill shown in health",
        )
        lines = wait_until(lambda: log_lines(gw, "WARNING", "outbox is"), what="fill logged")
        assert "outbox.max_bytes" in lines[0]  # the fix
        assert sum("the outbox is" in a["message"] for a in st["alerts"]) == 1
        assert sample(gw, "datonis_edge_outbox_bytes") >= 0.8 * (1 << 20)

        # past the cap: the oldest go, append after append
        post_until(lambda: gw.status()["counters"].get("evicted", 0) >= 2000, "evicted")
    finally:
        producer.close()
    evicted = wait_until(lambda: sample(gw, "datonis_edge_events_evicted_total"))
    assert evicted >= 2000
    evicting = log_lines(gw, "WARNING", "bytes reached")
    assert len(evicting) == 1, evicting  # not one per eviction
    assert "drop_oldest" in evicting[0] and "outbox.max_bytes" in evicting[0]
    alerts = [a for a in gw.status()["alerts"] if "bytes reached" in a["message"]]
    assert len(alerts) == 1, alerts  # nor an alert per eviction
    assert len(log_lines(gw, "WARNING", "outbox is")) == 1
    # and nothing else: the alerts that cannot reach the platform are not a line of their own
    assert len(problems(gw)) == 3, problems(gw)  # uplink unreachable, evicting, 80 % full
