"""The outbox's cap: what an append may take of outbox.db, and the policy when it is full.

`outbox.max_bytes` bounds outbox.db and its WAL in real pages (room.py: `live_limit` is the
cap less the WAL bound). An append needs twice its size at its peak (written into the WAL,
then copied into outbox.db by a checkpoint while the WAL still holds it) plus the few other
pages a transaction touches. When it does not fit, `drop_oldest` evicts the oldest segments
that are not on the wire, in the same transaction (counted `evicted`, reported to `on_evict`),
and `reject_new` refuses it (counted `rejected`). Runs on the outbox's writer thread.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

from .counters import Counters
from .group_commit import Op
from .room import Room, live_bytes
from .segments import Segments

EVICT_ROUND = 256  # segments looked at per eviction round (the pages in use are measured after)


class OutboxFull(Exception):
    """Readings refused, nothing stored: the producer should send them again later (HTTP 503,
    no PUBACK). Here: the cap and its policy (reject_new) or the in-flight batch leave no room."""


class DiskFull(OutboxFull):
    """The filesystem of the data directory is full (SQLITE_FULL, ENOSPC)."""


def on_disk(nbytes: int) -> int:
    """What a payload takes in outbox.db: 4092 of every 4096 bytes of an overflow page carry
    data, plus the row's cell (the page it lands in is measured, not guessed, afterwards)."""
    return nbytes + nbytes // 1000 + 32


class Cap:
    def __init__(
        self,
        max_bytes: int,
        policy: str,
        room: Room,
        segments: Segments,
        counters: Counters,
        on_evict: Callable[[int], None] | None,
    ) -> None:
        self.max_bytes = max_bytes
        self.policy = policy
        self._room = room
        self._segments = segments
        self._count = counters
        self._on_evict = on_evict
        # the pages a transaction touches besides the new rows (leaf, counters, freelist, pointer
        # map; more when it evicts): 16 pages, fewer for a tiny cap (measured: 3 to 12)
        self._txn_bytes = max(4, min(16, max_bytes // (64 * 4096))) * 4096

    def admit(self, conn: sqlite3.Connection, ops: list[Op], inflight_seg: int) -> list[Op]:
        """The appends of `ops` that fit, in order, evicting for them as the policy says. A
        refused one gets its refusal as its result (not an exception, so that its count
        commits with the group). The cap is measured in outbox.db's pages."""
        kept: list[Op] = []
        adding = 0  # what the kept payloads will take
        live: int | None = None  # pages in use, measured once per run (and after evicting)
        limit = self._room.live_limit
        for op in ops:
            payload, n, _ = op.append  # type: ignore[misc]
            need = on_disk(len(payload))
            refusal: OutboxFull | None = None
            if self._room.full:
                refusal = DiskFull(self._room.refusal())
            elif self._peak(need) > limit:
                refusal = OutboxFull(
                    f"{len(payload)} bytes in one request do not fit in the outbox cap of "
                    f"{self.max_bytes} bytes (less its WAL bound, {self._room.wal_bound}); "
                    "send smaller bulks"
                )
            else:
                if live is None:
                    live = live_bytes(conn)
                if live + self._peak(adding + need) > limit:
                    refusal, live = self._make_room(
                        conn, live, self._peak(adding + need), inflight_seg
                    )
            if refusal is not None:
                self._count.bump("rejected", n)
                op.result = refusal
                continue
            kept.append(op)
            adding += need
        return kept

    def _peak(self, nbytes: int) -> int:
        """What an append needs under the cap at its peak: written into the WAL, then copied
        into outbox.db by a checkpoint while the WAL still holds it, plus the other pages."""
        return 2 * nbytes + self._txn_bytes

    def _make_room(
        self, conn: sqlite3.Connection, live: int, need: int, inflight_seg: int
    ) -> tuple[OutboxFull | None, int]:
        """Evict the oldest segments (not in flight) until `need` more bytes fit under the
        cap, measuring the pages in use after each round; or say why not."""
        limit = self._room.live_limit
        if self.policy == "reject_new":
            return OutboxFull(
                f"the outbox is full ({live} of {limit} bytes in use, cap {self.max_bytes}) "
                "and its policy is reject_new; the platform is probably unreachable"
            ), live
        while live + need > limit:
            rows = conn.execute(
                "SELECT id, n, acked, nbytes FROM segments WHERE id > ? ORDER BY id LIMIT ?",
                (inflight_seg, EVICT_ROUND),
            ).fetchall()
            if not rows and self._segments.depth.segments == 0:
                return OutboxFull(
                    f"the request does not fit in the outbox cap of {self.max_bytes} bytes "
                    f"(SQLite's own pages take {live} and the WAL bound {self._room.wal_bound}); "
                    "send smaller bulks or raise outbox.max_bytes"
                ), live
            if not rows:
                return OutboxFull(
                    "the outbox is full and what it holds is being sent right now"
                ), live
            victims = []
            freed = 0
            for row in rows:
                victims.append(row)
                freed += on_disk(row[3])
                if live - freed + need <= limit:
                    break
            evicted = self._segments.delete(conn, victims)
            self._count.bump("evicted", evicted)
            if evicted and self._on_evict is not None:
                self._on_evict(evicted)
            live = live_bytes(conn)
        return None, live
