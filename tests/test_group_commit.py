"""The commit window: at a low steady rate appends share commits; a lone append commits alone."""

from __future__ import annotations

import asyncio
from pathlib import Path

from datonis_edge.store import group_commit
from datonis_edge.store.outbox import Outbox


def _event(i: int) -> list[dict]:
    return [{"thing_key": "t", "timestamp": 1_700_000_000_000 + i, "data": {"seq": i}}]


async def _drain_seqs(outbox: Outbox) -> list[int]:
    got = await outbox.read(await outbox.head(), 10_000)
    return [e["data"]["seq"] for e in got.events]


async def test_a_low_steady_rate_of_appends_shares_commits(tmp_path: Path) -> None:
    """One append a millisecond, each from its own producer that does not wait for the one
    before (as MQTT messages arrive): alone, each would be a commit of its own (the fsync of
    a small transaction is about as quick); the window joins them."""
    outbox = Outbox(tmp_path)
    outbox.open()
    try:
        commits0 = outbox.stats().commits
        appends = []
        for i in range(300):
            appends.append(asyncio.ensure_future(outbox.append(_event(i))))
            await asyncio.sleep(0.001)
        await asyncio.gather(*appends)
        stats = outbox.stats()
        assert stats.appends == 300
        assert (stats.commits - commits0) * 2 <= 300, stats.commits - commits0
        assert await _drain_seqs(outbox) == list(range(300))  # in order, every one
    finally:
        outbox.close()


async def test_a_lone_append_after_a_pause_commits_alone_and_is_durable(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path)
    outbox.open()
    try:
        await asyncio.gather(*(outbox.append(_event(i)) for i in range(20)))  # busy before
        await asyncio.sleep(group_commit.WINDOW_S * 10)  # then a pause: the window is closed
        commits = outbox.stats().commits
        await outbox.append(_event(20))  # returns: it was committed, not kept for company
        assert outbox.stats().commits == commits + 1
    finally:
        outbox.close()
    again = Outbox(tmp_path)
    again.open()
    try:
        assert 20 in await _drain_seqs(again)
    finally:
        again.close()


async def test_a_producer_that_waits_for_each_commit_is_not_slowed_by_fruitless_windows(
    tmp_path: Path,
) -> None:
    """Appends one after the other: a window can catch nothing (the producer waits for the
    commit), so after fruitless windows most groups commit without one."""
    outbox = Outbox(tmp_path)
    outbox.open()
    try:
        for i in range(200):
            await outbox.append(_event(i))
        writer = outbox._writer
        assert writer._fruitless > 0 and writer._skip > 0
        assert await _drain_seqs(outbox) == list(range(200))
    finally:
        outbox.close()
