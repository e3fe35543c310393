"""No batch can block the ones behind it: what fails on this side of the wire (bytes in the
outbox that do not decode, events the uplink cannot encode, an uplink that raises) is declined
locally with the reason, kept for inspection, alerted and replayable; every reading behind it
is delivered."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from datonis_edge.forwarder import LOCAL_ERROR_ATTEMPTS, Forwarder
from datonis_edge.model import Batch, Outcome
from datonis_edge.status import Alerts
from datonis_edge.store.declined import DeclinedStore
from datonis_edge.store.outbox import Outbox
from datonis_edge.uplinks.base import Uplink
from datonis_edge.uplinks.datonis_http.config import DatonisHttpCloud
from helpers import base_config, free_port, wait_until
from poison import append_segments, deep, event, segment


def _listener_config(platform: Any, **cloud: Any) -> tuple[dict[str, Any], str]:
    config = base_config(platform, **cloud)
    port = free_port()
    config["services"] = [
        {"name": "push", "type": "http_listener", "host": "127.0.0.1", "port": port}
    ]
    return config, f"http://127.0.0.1:{port}/api/v3/things/event.json"


def _post(url: str, *events: dict[str, Any]) -> None:
    r = httpx.post(url, json={"events": list(events)}, timeout=10)
    assert r.status_code == 200, r.text


def _seqs(platform: Any) -> list[int]:
    return [e["data"]["seq"] for e in platform.events()]


def _declined_records(datadir: Path) -> list[tuple[Path, dict[str, Any]]]:
    return [(p, json.loads(p.read_text())) for p in sorted((datadir / "declined").glob("*.json"))]


def test_undecodable_outbox_segments_are_declined_with_their_bytes_and_the_rest_flows(
    platform, gateway_factory
) -> None:
    config, url = _listener_config(platform, bulk_max_elements=10)
    gw = gateway_factory(config).start()
    _post(url, *(event(i) for i in range(3)))
    wait_until(lambda: _seqs(platform) == [0, 1, 2], what="first readings delivered")
    assert gw.stop() == 0

    truncated = b'[{"thing_key": "m1", "timestamp": 1700000000010, "data": {"seq": 10}'
    not_utf8 = b"\xff\xfe\x00garbage"
    append_segments(
        gw.datadir,
        [
            segment(event(3), event(4)),  # good, before the poison
            (truncated, 1),
            (not_utf8, 1),
            segment(event(5)),  # good, behind it
        ],
    )
    gw.start()
    _post(url, *(event(i) for i in range(6, 10)))  # new readings flow too
    wait_until(
        lambda: sorted(_seqs(platform)) == list(range(10)), what="every good reading delivered"
    )
    st = wait_until(
        lambda: (s := gw.status())["declined_batches"] == 2 and s, what="both segments declined"
    )
    assert st["forwarder"]["state"] == "running"
    assert st["counters"]["declined"] == 2
    wait_until(lambda: gw.status()["outbox"]["pending"] == 0, what="outbox drained")
    assert sum("could not be decoded" in a["message"] for a in st["alerts"]) == 2

    records = _declined_records(gw.datadir)
    by_payload = {r["raw_payload"]: (p, r) for p, r in records}
    path, rec = by_payload[truncated.decode()]
    assert rec["status"] is None and rec["local"] is True and rec["count"] == 1
    assert "local error" in rec["reason"] and "JSONDecodeError" in rec["raw_payload_note"]
    binary = next(r for _, r in records if r.get("raw_payload_encoding") == "base64")
    assert binary["raw_payload"] == "//4AZ2FyYmFnZQ=="
    listed = gw.cli("declined", "list", "--datadirpath", str(gw.datadir))
    assert listed.returncode == 0 and "could not be decoded" in listed.stdout

    # replayable: an operator repairs the record's events and asks for a replay
    rec["events"] = [event(10)]
    path.write_text(json.dumps(rec))
    replay = gw.cli("declined", "replay", "--datadirpath", str(gw.datadir), path.stem)
    assert replay.returncode == 0, replay.stderr
    wait_until(lambda: 10 in _seqs(platform), what="the repaired reading delivered")
    assert sorted(_seqs(platform)) == list(range(11))
    assert "Traceback" not in gw.proc.log()


def test_events_too_deep_to_encode_are_declined_locally_and_do_not_block(
    platform, gateway_factory
) -> None:
    """orjson writes at most 254 levels. Such a reading (kept by a version that did not cap
    nesting) cannot be sent by any uplink: it must not be retried forever nor hold up what
    comes after it."""
    config, url = _listener_config(platform, bulk_max_elements=1, max_inflight_batches=1)
    gw = gateway_factory(config).start()
    assert gw.stop() == 0
    append_segments(gw.datadir, [segment(event(0, shape=deep(300)))])
    append_segments(gw.datadir, [segment(event(i)) for i in range(1, 6)])
    gw.start()
    _post(url, *(event(i) for i in range(6, 11)))
    wait_until(lambda: sorted(_seqs(platform)) == list(range(1, 11)), what="the rest delivered")
    st = wait_until(
        lambda: (s := gw.status())["declined_batches"] == 1 and s, what="the deep one declined"
    )
    alert = next(a for a in st["alerts"] if "declined" in a["message"])
    assert "local error: TypeError: Recursion limit reached" in alert["message"]
    assert "this batch could not be encoded; it is kept for inspection" in alert["message"]
    assert st["forwarder"]["counters"].get("retries", 0) == 0  # not a network fault
    assert st["counters"]["declined"] == 1
    [(path, rec)] = _declined_records(gw.datadir)
    assert rec["status"] is None and rec["count"] == 1
    assert rec["events"][0]["data"]["shape"] == deep(300)  # kept whole, though orjson can't

    # a replay of what still cannot be encoded is refused, named, and the batch stays declined
    assert gw.cli("declined", "replay", "--datadirpath", str(gw.datadir)).returncode == 0
    wait_until(
        lambda: any("cannot be replayed" in a["message"] for a in gw.status()["alerts"]),
        what="the replay refused",
    )
    wait_until(lambda: path.exists(), what="the declined batch kept")
    # once the data is repaired, the replay delivers it
    rec["events"][0]["data"]["shape"] = "flattened"
    path.write_text(json.dumps(rec))
    assert gw.cli("declined", "replay", "--datadirpath", str(gw.datadir)).returncode == 0
    wait_until(lambda: 0 in _seqs(platform), what="the repaired reading delivered")
    assert gw.status()["declined_batches"] == 0
    assert "Traceback" not in gw.proc.log()


class _ChokingUplink(Uplink):
    """Raises on any batch holding a reading marked `choke` (a bug in an uplink), else delivers."""

    def __init__(self) -> None:
        super().__init__("choking")
        self.delivered: list[int] = []
        self.attempts = 0

    async def send(self, batch: Batch) -> Outcome:
        if any(e["data"].get("choke") for e in batch.events):
            self.attempts += 1
            raise RuntimeError("the uplink has a bug")
        self.delivered.extend(e["data"]["seq"] for e in batch.events)
        return Outcome.delivered(200)


async def test_an_uplink_that_raises_is_retried_a_few_times_then_the_batch_is_declined(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    outbox = Outbox(tmp_path / "outbox")
    await asyncio.to_thread(outbox.open)
    declined = DeclinedStore(tmp_path / "declined")
    uplink = _ChokingUplink()
    cloud = DatonisHttpCloud(
        endpoint="http://127.0.0.1:1",
        access_key="ak",
        secret_key="sk",
        bulk_max_elements=1,
        bulk_transmit_interval_ms=0,
        retry_max_backoff_ms=200,
    )
    alerts = Alerts()
    forwarder = Forwarder(outbox, declined, uplink, cloud, epoch=1, alerts=alerts)
    await outbox.append([event(0, choke=True)])
    await outbox.append([event(i) for i in range(1, 6)])
    caplog.set_level(logging.INFO, logger="datonis_edge")
    task = asyncio.create_task(forwarder.run())
    try:
        deadline = time.monotonic() + 20
        while (uplink.delivered != [1, 2, 3, 4, 5] or declined.count() != 1) and (
            time.monotonic() < deadline
        ):
            await asyncio.sleep(0.05)
        assert uplink.delivered == [1, 2, 3, 4, 5]
        assert declined.count() == 1
    finally:
        forwarder.stop_soon()
        await asyncio.wait_for(task, 10)
        await asyncio.to_thread(outbox.close)
    assert uplink.attempts == LOCAL_ERROR_ATTEMPTS
    [item] = declined.list()
    assert item.status is None and "RuntimeError: the uplink has a bug" in item.reason
    raised = [r for r in caplog.records if "failed on batch" in r.getMessage()]
    assert len(raised) == 1 and raised[0].levelno == logging.ERROR  # once, not per retry
    assert not any(r.exc_info for r in caplog.records if r.levelno >= logging.INFO)
    assert any("declined" in a.message for a in alerts.items)
