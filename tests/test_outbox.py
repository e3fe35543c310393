"""The outbox on its own: order, ack, recovery, the cap and its policies."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from datonis_edge.store.outbox import Outbox, OutboxFull


def _events(start: int, n: int, pad: int = 0) -> list[dict]:
    return [
        {"thing_key": "t", "timestamp": i, "data": {"seq": i, "pad": "x" * pad}}
        for i in range(start, start + n)
    ]


async def _drain(outbox: Outbox, size: int) -> list[int]:
    cursor = await outbox.head()
    seqs: list[int] = []
    while True:
        got = await outbox.read(cursor, size)
        if not got.events:
            return seqs
        seqs += [e["data"]["seq"] for e in got.events]
        await outbox.ack(got.after, len(got.events))
        cursor = got.after


async def test_events_leave_in_order_across_appends_and_partial_batches(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path)
    outbox.open()
    try:
        await asyncio.gather(*(outbox.append(_events(i * 7, 7)) for i in range(10)))
        assert outbox.pending == 70
        seqs = await _drain(outbox, size=4)  # batches cut through segments
        assert sorted(seqs) == list(range(70))
        assert outbox.pending == 0 and outbox.stats().bytes == 0
        assert outbox.stats().counters["delivered"] == 70
    finally:
        outbox.close()


async def test_concurrent_appends_share_commits(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path)
    outbox.open()
    try:
        await asyncio.gather(*(outbox.append(_events(i, 1)) for i in range(500)))
        stats = outbox.stats()
        assert stats.appends == 500
        assert stats.commits < 500  # group commit: fewer fsyncs than appends
    finally:
        outbox.close()


async def test_recovery_keeps_committed_and_partly_acked_state(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path)
    outbox.open()
    await outbox.append(_events(0, 10))
    await outbox.append(_events(10, 10))
    got = await outbox.read(await outbox.head(), 15)
    await outbox.ack(got.after, 15)
    outbox.close()

    again = Outbox(tmp_path)
    again.open()
    try:
        assert again.pending == 5
        assert again.stats().counters == {
            "accepted": 20,
            "delivered": 15,
            "declined": 0,
            "evicted": 0,
            "rejected": 0,
            "lost": 0,
        }
        assert await _drain(again, 100) == list(range(15, 20))
    finally:
        again.close()


async def test_drop_oldest_evicts_and_counts(tmp_path: Path) -> None:
    evicted: list[int] = []
    outbox = Outbox(tmp_path, max_bytes=65_536, policy="drop_oldest", on_evict=evicted.append)
    outbox.open()
    try:
        for i in range(100):
            await outbox.append(_events(i * 10, 10, pad=100))
        stats = outbox.stats()
        assert stats.bytes <= 65_536
        assert stats.counters["evicted"] == sum(evicted) > 0
        assert stats.counters["accepted"] == 1000
        assert stats.counters["evicted"] + stats.pending == 1000  # every point is somewhere
        remaining = await _drain(outbox, 1000)
        assert remaining == list(range(1000 - len(remaining), 1000))  # the newest were kept
    finally:
        outbox.close()


async def test_reject_new_refuses_when_full_and_keeps_what_it_has(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path, max_bytes=65_536, policy="reject_new")
    outbox.open()
    try:
        accepted = 0
        with pytest.raises(OutboxFull, match="reject_new"):
            for i in range(100):
                await outbox.append(_events(i * 10, 10, pad=100))
                accepted += 10
        stats = outbox.stats()
        assert stats.counters["evicted"] == 0
        assert stats.counters["rejected"] == 10
        assert await _drain(outbox, 10_000) == list(range(accepted))
    finally:
        outbox.close()


async def test_the_batch_in_flight_is_never_evicted(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path, max_bytes=65_536, policy="drop_oldest")
    outbox.open()
    try:
        await outbox.append(_events(0, 10, pad=100))
        got = await outbox.read(await outbox.head(), 10)
        outbox.hold(got.after)
        for i in range(1, 100):
            await outbox.append(_events(i * 10, 10, pad=100))
        await outbox.ack(got.after, 10)
        stats = outbox.stats()
        assert stats.counters["delivered"] == 10  # not also counted as evicted
        assert stats.counters["delivered"] + stats.counters["evicted"] + stats.pending == 1000
    finally:
        outbox.close()


async def test_a_failing_operation_fails_alone_and_the_writer_lives_on(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path)
    outbox.open()

    def broken(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO segments(n, nbytes, created_ms, payload) VALUES (1, 1, 0, 'x')")
        raise sqlite3.OperationalError("disk I/O error")  # as a failing disk would

    try:
        results = await asyncio.gather(
            outbox.append(_events(0, 5)),
            outbox._submit(broken),
            outbox.append(_events(5, 5)),
            return_exceptions=True,
        )
        assert isinstance(results[1], sqlite3.OperationalError)
        assert not isinstance(results[0], BaseException)
        assert not isinstance(results[2], BaseException)
        await outbox.append(_events(10, 5))  # the next operation works
        assert await _drain(outbox, 100) == list(range(15))  # the broken insert was undone
        assert outbox.stats().counters["accepted"] == 15
    finally:
        outbox.close()
