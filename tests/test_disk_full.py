"""A full disk is a state, not a crash: readings are refused (503, counted), the master stays
master, delivery goes on and frees space, and readings are accepted again by themselves.
On a real small filesystem (tmpfs), in process and through a gateway process."""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from datonis_edge.store.diskspace import file_bytes
from datonis_edge.store.outbox import DiskFull, Outbox, OutboxFull
from datonis_edge.supervisor import heartbeat_survives
from helpers import PlatformSim, base_config, free_port, wait_until
from small_disk import fill, tmpfs

FULL = "the disk of the data directory is full"


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Path]:
    with tmpfs(tmp_path / "disk", "4m") as path:
        yield path


def _events(start: int, n: int, pad: int = 1000) -> list[dict[str, Any]]:
    return [
        {"thing_key": "t", "timestamp": i, "data": {"seq": i, "pad": "x" * pad}}
        for i in range(start, start + n)
    ]


async def _drain(outbox: Outbox) -> list[int]:
    cursor = await outbox.head()
    seqs: list[int] = []
    while True:
        got = await outbox.read(cursor, 50)
        if not got.events:
            return seqs
        seqs += [e["data"]["seq"] for e in got.events]
        await outbox.ack(got.after, len(got.events))
        cursor = got.after


async def _until(predicate: Any, what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def _fill_outbox(outbox: Outbox) -> tuple[int, int, DiskFull]:
    """Append until the disk refuses; the last round goes concurrently (a group commit)."""
    stored = refused = 0
    refusal: DiskFull | None = None
    seq = 0
    while refusal is None:
        batch = [_events(seq + i * 10, 10) for i in range(8)]
        seq += 80
        results = await asyncio.gather(*(outbox.append(b) for b in batch), return_exceptions=True)
        for r in results:
            if isinstance(r, BaseException):
                assert isinstance(r, DiskFull), f"not a refusal: {r!r}"
                refusal, refused = r, refused + 10
            else:
                stored += 10
    return stored, refused, refusal


async def test_a_full_disk_refuses_counts_and_accepts_again_once_delivery_frees_space(
    disk: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="datonis_edge")
    alerts: list[tuple[str, str]] = []
    outbox = Outbox(disk / "outbox", on_alert=lambda level, msg: alerts.append((level, msg)))
    outbox.open()
    try:
        stored, refused, refusal = await _fill_outbox(outbox)
        assert isinstance(refusal, OutboxFull)  # the http_listener answers 503 for it
        assert str(refusal).startswith(FULL) and "lower outbox.max_bytes" in str(refusal)
        with pytest.raises(DiskFull):  # refused at once while full, the writer still alive
            await outbox.append(_events(10**6, 10))
        refused += 10
        await _until(lambda: outbox.stats().counters["rejected"] == refused, "rejected counted")
        stats = outbox.stats()
        assert stats.disk_full and stats.reserve_bytes == 0
        assert stats.counters["accepted"] == stored == stats.pending
        assert [a[0] for a in alerts] == ["error"] and alerts[0][1].startswith(FULL)

        # delivery on a full disk: every ack commits, and the space comes back
        assert len(await _drain(outbox)) == stored
        await _until(lambda: not outbox.stats().disk_full, "the disk to have room again")
        assert alerts[-1][0] == "info" and "disk has room again" in alerts[-1][1]
        await outbox.append(_events(2 * 10**6, 10))  # accepted again, by itself
        counters = outbox.stats().counters
        assert counters["delivered"] == stored
        assert counters["accepted"] == stored + 10 == counters["delivered"] + outbox.pending
    finally:
        outbox.close()
    warnings = [r for r in caplog.records if FULL in r.getMessage()]
    assert [r.levelno for r in warnings] == [logging.WARNING]
    assert sum("disk has room again" in r.getMessage() for r in caplog.records) == 1


async def test_acks_that_find_no_room_at_all_are_kept_and_committed_later(disk: Path) -> None:
    outbox = Outbox(disk / "outbox")
    outbox.open()
    filler = disk / "someone-else"
    try:
        stored, _, _ = await _fill_outbox(outbox)
        wal = disk / "outbox" / "outbox.db-wal"
        await _until(lambda: file_bytes(wal) == 0, "the full disk's WAL given back")
        fill(filler)  # another writer takes the room the reserve gave back: not a byte left
        got = await outbox.read(await outbox.head(), 30)
        await outbox.ack(got.after, 30)  # never raises: kept for the next commit that works
        assert outbox.pending == stored  # not committed: no room for a single WAL frame
        filler.unlink()
        rest = await _drain(outbox)
        await _until(lambda: outbox.stats().counters["delivered"] == stored, "every ack counted")
        assert len(rest) == stored - 30 and outbox.pending == 0
    finally:
        outbox.close()


def test_only_a_full_disk_lets_the_master_keep_mastership() -> None:
    assert heartbeat_survives(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)))
    assert heartbeat_survives(OSError(errno.EDQUOT, os.strerror(errno.EDQUOT)))
    # EIO: a lost NFS lease (and lock) or a failing device; EROFS: remounted after errors
    assert not heartbeat_survives(OSError(errno.EIO, os.strerror(errno.EIO)))
    assert not heartbeat_survives(OSError(errno.EROFS, os.strerror(errno.EROFS)))


# ---------------------------------------------------------------------- a gateway process


def test_full_disk_gives_503_keeps_mastership_and_recovers_by_itself(
    tmp_path: Path, platform: PlatformSim, gateway_factory
) -> None:
    with tmpfs(tmp_path / "disk", "8m") as disk:
        _full_disk_scenario(disk, platform, gateway_factory)


def _full_disk_scenario(disk: Path, platform: PlatformSim, gateway_factory) -> None:
    platform.fault(status=503, retry_after=1, count=-1)  # delivery held back
    port = free_port()
    config = base_config(platform, bulk_max_elements=200)
    config["services"] = [
        {"name": "push", "type": "http_listener", "host": "127.0.0.1", "port": port}
    ]
    gw = gateway_factory(config, datadir=disk / "data").start()
    pid = gw.proc.p.pid
    url = f"http://127.0.0.1:{port}/api/v3/things/event.json"
    acked: set[int] = set()
    answers: dict[int, int] = {}
    seq = iter(range(10**9))
    lock = threading.Lock()

    def post(http: httpx.Client, n: int = 20) -> httpx.Response:
        with lock:
            seqs = [next(seq) for _ in range(n)]
        events = [
            {
                "thing_key": "m",
                "timestamp": 1_700_000_000_000 + s,
                "data": {"seq": s, "pad": "y" * 400},
            }
            for s in seqs
        ]
        r = http.post(url, json={"events": events})
        with lock:
            answers[r.status_code] = answers.get(r.status_code, 0) + 1
            if r.status_code == 200:
                acked.update(seqs)
        return r

    with httpx.Client(timeout=10) as http:
        # 1. the disk fills: 503 with Retry-After and the reason, never a 500
        for _ in range(5000):
            r = post(http)
            if r.status_code == 503:
                break
            assert r.status_code == 200, r.text
        assert r.status_code == 503, "the disk never filled"
        assert r.headers["retry-after"] and r.json()["reason"].startswith(FULL)
        for _ in range(5):
            assert post(http).status_code == 503
        assert set(answers) == {200, 503}

        def rejected() -> int:
            return gw.status()["counters"]["rejected"]

        wait_until(lambda: rejected() >= answers[503] * 20, what="refusals counted")
        wait_until(
            lambda: any(FULL in a["message"] for a in gw.status()["alerts"]), what="an alert"
        )

        # 2. another writer takes every byte that frees up: even the heartbeat finds no
        # room, and the master stays master, degraded and alerted
        filler = disk / "other-files"
        stop = threading.Event()

        def take_the_room() -> None:
            while not stop.is_set():
                fill(filler)
                stop.wait(0.01)

        thief = threading.Thread(target=take_the_room, daemon=True)
        thief.start()
        try:
            st = wait_until(
                lambda: (s := gw.status()).get("heartbeat", {}).get("failures", 0) >= 3 and s,
                what="three heartbeats that could not be written",
            )
            assert st["role"] == "master" and gw.proc.p.poll() is None and gw.proc.p.pid == pid
            assert st["degraded"]
            assert any("heartbeat not written" in a["message"] for a in st["alerts"])
            assert gw.http.get("/readyz").status_code == 200
        finally:
            stop.set()
            thief.join(10)
            filler.unlink()

        # 3. room again and delivery resumes: space freed, readings accepted by themselves
        platform.http.delete("/sim/faults").raise_for_status()
        wait_until(lambda: post(http).status_code == 200, timeout=60, what="a 200 again")
        wait_until(lambda: gw.status()["heartbeat"]["ok"], what="the heartbeat written again")

    def delivered() -> set[int]:
        return {e["data"]["seq"] for e in platform.events()}

    wait_until(lambda: acked <= delivered(), timeout=60, what="every acknowledged reading")
    assert gw.proc.p.poll() is None and gw.proc.p.pid == pid and gw.status()["role"] == "master"
    log = gw.proc.log()
    assert log.count(FULL) == 1, log[-4000:]  # logged once (the alert and 503s say it too)
    assert "disk has room again" in log and "Traceback" not in log
    assert gw.stop() == 0
