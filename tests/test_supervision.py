"""No part dies silently: a failed part shows `failed` (with the error and the time) while it is
down, is logged once at ERROR, restarted with backoff, and logged once at INFO when it runs
again; the status never says `running` for a dead task."""

from __future__ import annotations

import asyncio
import logging
import shutil
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from datonis_edge import supervision
from datonis_edge.backoff import Backoff
from datonis_edge.pipeline import Pipeline
from datonis_edge.root_config import parse_config
from datonis_edge.status import Alerts, PartStatus
from helpers import base_config, free_port, wait_until


async def _until(predicate: Any, timeout: float = 10, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


async def test_a_failing_part_shows_failed_is_restarted_and_logged_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(supervision, "RUNNING_AGAIN_AFTER_S", 0.3)
    alerts = Alerts()
    gw = Pipeline(tmp_path, parse_config(base_config(None)), 1, alerts)
    runs = 0
    states_while_down: list[str] = []

    async def flaky() -> None:
        nonlocal runs
        runs += 1
        if runs <= 3:
            raise OSError(f"disk gone ({runs})")
        await asyncio.sleep(3600)

    status = PartStatus(name="flaky", type="task")
    gw.parts.add("flaky", flaky, status).backoff = Backoff(0.1, 0.2)
    caplog.set_level(logging.INFO, logger="datonis_edge")
    gw.parts.start("flaky")
    try:
        await _until(lambda: status.state == "failed", what="failed shown")
        assert status.last_error is not None and "OSError: disk gone (1)" in status.last_error
        assert status.last_error_ms is not None
        while runs <= 3:  # sample the state while it is down between restarts
            states_while_down.append(status.state)
            await asyncio.sleep(0.005)
        await _until(lambda: any("running again" in a.message for a in alerts.items))
        assert status.state == "running"
        assert status.counters["failures"] == 3 and status.counters["restarts"] == 3
        assert {"failed", "starting"} >= set(states_while_down)
        assert [t["name"] for t in gw.snapshot()["tasks"]] == ["flaky"]
    finally:
        gw.abort()
        await gw.parts.cancel()
    lines = [(r.levelno, r.getMessage()) for r in caplog.records if "flaky" in r.getMessage()]
    assert lines == [
        (logging.ERROR, "flaky failed: OSError: disk gone (1); restarting in " + lines[0][1][-5:]),
        (logging.INFO, "flaky is running again"),
    ]
    assert sum("flaky failed" in a.message for a in alerts.items) == 1


def test_a_failed_forwarder_is_shown_failed_then_restarted_and_delivers(
    platform, gateway_factory
) -> None:
    """declined/ turned into a file (an operator's slip): the 422 the platform answers cannot
    be kept, so the forwarder fails on every try until the directory is back."""
    port = free_port()
    config = base_config(platform, bulk_max_elements=5)
    config["services"] = [
        {"name": "push", "type": "http_listener", "host": "127.0.0.1", "port": port}
    ]
    gw = gateway_factory(config).start()
    declined = gw.datadir / "declined"
    shutil.rmtree(declined)
    declined.write_text("not a directory\n")
    platform.fault(status=422, count=-1)
    events = [{"thing_key": "m1", "data": {"seq": i}} for i in range(5)]
    r = httpx.post(f"http://127.0.0.1:{port}/api/v3/things/event.json", json={"events": events})
    assert r.status_code == 200

    st = wait_until(
        lambda: (
            (f := gw.status()["forwarder"])["state"] == "failed"
            and f["counters"].get("failures", 0) >= 2
            and f
        ),
        what="the forwarder shown failed, twice",
    )
    assert "declined" in st["last_error"] and "restarting in" in st["last_error"]
    assert st["last_error_ms"] > 0
    assert any("forwarder failed" in a["message"] for a in gw.status()["alerts"])

    declined.unlink()
    platform.http.delete("/sim/faults").raise_for_status()
    wait_until(
        lambda: sorted(e["data"]["seq"] for e in platform.events()) == list(range(5)),
        what="delivery after the restart",
    )
    wait_until(lambda: "forwarder is running again" in gw.proc.log(), what="recovery logged")
    assert gw.status()["forwarder"]["state"] == "running"
    log = gw.proc.log()
    assert log.count("forwarder failed") == 1  # once, though it failed on every restart
    assert log.count("forwarder is running again") == 1
    assert "Traceback" not in log
