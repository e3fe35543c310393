"""A damaged outbox is salvaged, not a crash loop; a torn WAL tail is reported, not hidden.
With real damaged files: 4 KB overwritten inside outbox.db, a WAL cut mid-frame after SIGKILL."""

from __future__ import annotations

import logging
import random
import re
import sqlite3
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from datonis_edge.store.outbox import Outbox
from datonis_edge.store.salvage import clean
from helpers import PlatformSim, base_config, free_port, wait_until

SALVAGED = re.compile(r"(\d+) readings salvaged, (\d+) lost")
TORN = "acknowledged before the crash are missing from the outbox"


def _events(start: int, n: int, pad: int = 100) -> list[dict[str, Any]]:
    return [
        {"thing_key": "t", "timestamp": i, "data": {"seq": i, "pad": "x" * pad}}
        for i in range(start, start + n)
    ]


def _overwrite_middle(db: Path, seed: int = 6) -> bytes:
    """4 KB of noise in the middle of the file, not aligned to a page; returns the result."""
    size = db.stat().st_size
    with open(db, "r+b") as f:
        f.seek(size // 2 + 100)
        f.write(random.Random(seed).randbytes(4096))
    return db.read_bytes()


async def _drain(outbox: Outbox) -> list[dict[str, Any]]:
    cursor = await outbox.head()
    out: list[dict[str, Any]] = []
    while True:
        got = await outbox.read(cursor, 100)
        if not got.events:
            return out
        out += got.events
        await outbox.ack(got.after, len(got.events))
        cursor = got.after


async def _filled(directory: Path, segments: int = 400) -> None:
    outbox = Outbox(directory)
    outbox.open()
    for i in range(segments):
        await outbox.append(_events(i * 10, 10))
    outbox.close()


async def test_a_damaged_outbox_is_moved_aside_and_what_can_be_read_is_salvaged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="datonis_edge")
    directory = tmp_path / "outbox"
    await _filled(directory)
    damaged = _overwrite_middle(directory / "outbox.db")

    alerts: list[tuple[str, str]] = []
    outbox = Outbox(directory, on_alert=lambda level, msg: alerts.append((level, msg)))
    outbox.open()  # no exception: salvaged
    try:
        report = outbox.salvage
        assert report is not None and report.lost is not None
        assert 0 < report.lost < 100 and report.salvaged + report.lost == 4000
        assert report.unreadable_rows > 0
        kept = list(directory.glob("damaged-*"))
        assert len(kept) == 1 and [p.name for p in kept[0].iterdir()] == ["outbox.db"]
        assert (kept[0] / "outbox.db").read_bytes() == damaged  # kept as it was found
        assert alerts == [("error", alerts[0][1])]
        assert SALVAGED.search(alerts[0][1]).groups() == (str(report.salvaged), str(report.lost))
        assert kept[0].name in alerts[0][1]

        stats = outbox.stats()
        assert stats.damaged is not None and stats.damaged["salvaged"] == report.salvaged
        assert stats.pending == report.salvaged
        assert stats.counters["accepted"] == 4000 and stats.counters["lost"] == report.lost
        events = await _drain(outbox)
        seqs = [e["data"]["seq"] for e in events]
        assert seqs == sorted(set(seqs)) and set(seqs) <= set(range(4000))
        assert len(seqs) == report.salvaged
        counters = outbox.stats().counters
        assert counters["accepted"] == counters["delivered"] + counters["lost"]
    finally:
        outbox.close()
    assert any(
        r.levelno == logging.WARNING and "the outbox was damaged" in r.getMessage()
        for r in caplog.records
    )
    again = Outbox(directory)  # the salvaged outbox is sound: no second salvage
    again.open()
    assert again.salvage is None and len(list(directory.glob("damaged-*"))) == 1
    again.close()


async def test_salvaged_rows_that_are_not_json_objects_are_dropped_and_counted(
    tmp_path: Path,
) -> None:
    directory = tmp_path / "outbox"
    await _filled(directory)
    with sqlite3.connect(directory / "outbox.db") as conn:  # rows an old bug could have left
        conn.execute("UPDATE segments SET payload = ? WHERE id = 1", (b'[{"thing_key": "t", "da',))
        mixed = [*_events(10, 7), 42, "text", None]
        conn.execute("UPDATE segments SET payload = ? WHERE id = 2", (orjson.dumps(mixed),))
    _overwrite_middle(directory / "outbox.db")
    outbox = Outbox(directory)
    outbox.open()
    try:
        assert outbox.salvage is not None and outbox.salvage.dropped == 10 + 3
        events = await _drain(outbox)
        assert all(isinstance(e, dict) and e["thing_key"] == "t" for e in events)
        assert [e["data"]["seq"] for e in events[:7]] == list(range(10, 17))
    finally:
        outbox.close()


def test_clean_keeps_the_pending_json_objects_of_a_row() -> None:
    row = orjson.dumps([{"a": 1}, {"a": 2}, 3, {"a": 4}])
    assert clean(row, 4, 0) == ([{"a": 1}, {"a": 2}, {"a": 4}], 1)
    assert clean(row, 4, 2) == ([{"a": 4}], 1)  # acknowledged ones are not pending
    assert clean(b"[{", 4, 1) == ([], 3)
    assert clean(b'{"a": 1}', 1, 0) == ([], 1)


async def test_readings_missing_since_the_last_heartbeat_are_reported_and_counted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    await _filled(tmp_path / "outbox", segments=10)
    alerts: list[tuple[str, str]] = []
    outbox = Outbox(tmp_path / "outbox", on_alert=lambda level, msg: alerts.append((level, msg)))
    outbox.open()
    try:
        assert outbox.reconcile({"accepted": 100, "delivered": 0}) is None  # as it should be
        heartbeat = {"accepted": 130, "delivered": 0, "declined": 0, "evicted": 0, "lost": 0}
        message = outbox.reconcile(heartbeat)  # master.json said more than the file holds
        assert message is not None and message.startswith(f"30 readings {TORN}")
        assert alerts == [("error", message)]
        counters = outbox.stats().counters
        assert counters["accepted"] == 130 and counters["lost"] == 30 and outbox.pending == 100
    finally:
        outbox.close()
    assert [r.levelno for r in caplog.records if TORN in r.getMessage()] == [logging.WARNING]

    gone = Outbox(tmp_path / "elsewhere")  # an outbox deleted by hand
    gone.open()
    try:
        assert "was not there at start" in (gone.reconcile({"accepted": 5}) or "")
    finally:
        gone.close()


# ---------------------------------------------------------------------- a gateway process


def _listener_config(platform: PlatformSim | None, port: int) -> dict[str, Any]:
    config = base_config(platform, bulk_max_elements=100)
    config["services"] = [
        {"name": "push", "type": "http_listener", "host": "127.0.0.1", "port": port}
    ]
    return config


def _post(port: int, start: int, n: int, pad: int = 150) -> None:
    events = [
        {"thing_key": "m", "timestamp": 1_700_000_000_000 + s, "data": {"seq": s, "pad": "z" * pad}}
        for s in range(start, start + n)
    ]
    r = httpx.post(f"http://127.0.0.1:{port}/api/v3/things/event.json", json={"events": events})
    assert r.status_code == 200, r.text


def test_a_damaged_outbox_is_salvaged_at_start_and_its_readings_delivered(
    tmp_path: Path, platform: PlatformSim, gateway_factory
) -> None:
    platform.fault(status=503, retry_after=1, count=-1)  # nothing leaves before the damage
    port = free_port()
    gw = gateway_factory(_listener_config(platform, port)).start()
    for i in range(300):
        _post(port, i * 10, 10)
    assert gw.stop() == 0
    outbox_dir = gw.datadir / "outbox"
    _overwrite_middle(outbox_dir / "outbox.db")
    platform.http.delete("/sim/faults").raise_for_status()

    gw.start()  # master, no crash loop (wait_role fails if the process exits)
    alert = wait_until(
        lambda: next((a for a in gw.status()["alerts"] if SALVAGED.search(a["message"])), None),
        what="the salvage alert",
    )
    salvaged, lost = map(int, SALVAGED.search(alert["message"]).groups())
    assert lost > 0 and salvaged + lost == 3000
    assert [p.name for p in next(outbox_dir.glob("damaged-*")).iterdir()] == ["outbox.db"]

    def delivered() -> list[int]:
        return [e["data"]["seq"] for e in platform.events()]

    wait_until(lambda: len(delivered()) >= salvaged, timeout=60, what="the salvaged readings")
    seqs = delivered()
    assert len(seqs) == len(set(seqs)) == salvaged and set(seqs) <= set(range(3000))
    st = gw.status()
    assert st["role"] == "master" and st["counters"]["delivered"] == salvaged
    assert st["counters"]["accepted"] == 3000
    assert any(a["message"] == alert["message"] for a in platform.alerts())  # sent out too
    log = gw.proc.log()
    assert "the outbox was damaged" in log and "Traceback" not in log
    assert gw.stop() == 0


def test_a_wal_torn_at_the_end_after_sigkill_is_reported_not_hidden(
    tmp_path: Path, gateway_factory
) -> None:
    port = free_port()
    gw = gateway_factory(_listener_config(None, port)).start()  # the platform is unreachable
    for i in range(5):
        _post(port, i * 10, 10)
    master = gw.datadir / "ha" / "master.json"
    wait_until(
        lambda: orjson.loads(master.read_bytes()).get("counters", {}).get("accepted") == 50,
        what="a heartbeat with every reading counted",
    )
    gw.kill()
    wal = gw.datadir / "outbox" / "outbox.db-wal"
    size = wal.stat().st_size
    assert size > 4096 * 5  # the last commits are still in the WAL
    with open(wal, "r+b") as f:
        f.truncate(size - 2000)  # mid-frame: the last commit did not fully reach the disk

    gw.start()
    alert = wait_until(
        lambda: next((a for a in gw.status()["alerts"] if TORN in a["message"]), None),
        what="the torn-tail report",
    )
    assert alert["message"].startswith("10 readings") and alert["level"] == "error"
    st = gw.status()
    assert st["role"] == "master" and st["counters"]["accepted"] == 50
    assert st["outbox"]["pending"] == 40
    log = gw.proc.log()
    assert log.count(TORN) == 1 and "WARNING" in next(ln for ln in log.splitlines() if TORN in ln)
    assert gw.stop() == 0


def test_damage_found_while_running_stops_the_gateway_and_the_next_start_salvages(
    tmp_path: Path, platform: PlatformSim, gateway_factory
) -> None:
    platform.fault(status=503, retry_after=1, count=-1)
    port = free_port()
    gw = gateway_factory(_listener_config(platform, port)).start()
    for i in range(120):  # ~12 MB: most of it checkpointed into outbox.db, beyond SQLite's cache
        _post(port, i * 100, 100, pad=1000)
    db = gw.datadir / "outbox" / "outbox.db"
    with open(db, "r+b") as f:  # the disk corrupts a block under the running gateway
        f.seek(db.stat().st_size // 3 + 100)
        f.write(random.Random(3).randbytes(4096))
    platform.http.delete("/sim/faults").raise_for_status()  # delivery reads into the damage

    assert gw.proc.p.wait(30) == 5  # stopped on purpose: the service manager restarts it
    assert "the next start salvages it" in gw.proc.log()
    gw.start()
    alert = wait_until(
        lambda: next((a for a in gw.status()["alerts"] if SALVAGED.search(a["message"])), None),
        what="the salvage alert",
    )
    salvaged, lost = map(int, SALVAGED.search(alert["message"]).groups())
    assert salvaged > 0 and lost > 0
    wait_until(lambda: gw.status()["outbox"]["pending"] == 0, timeout=60, what="the rest delivered")
    seqs = [e["data"]["seq"] for e in platform.events()]
    assert set(seqs) <= set(range(12_000)) and len(set(seqs)) == 12_000 - lost
    assert "Traceback" not in gw.proc.log()
