"""The outbox: a durable FIFO of events in `<datadir>/outbox/outbox.db`.

States of an event: `append` → committed (fsync'ed, then acknowledged to the producer) →
`ack` (delivered or declined: removed) or `evict` (cap hit, policy drop_oldest: removed,
counted). `recover` on open keeps every committed event; SQLite's WAL drops a torn tail.

One SQLite connection, owned by one writer thread, in WAL mode with exclusive locking (no
shared-memory file, so it is safe on a shared data directory). Every call is queued to that
thread; it runs everything queued in one transaction and one commit: that is the group
commit, so N concurrent producers pay for about one fsync, not N.

Rows are *segments*: the events of one append, stored as one JSON array. A position in the
outbox is (segment id, index inside the segment).
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from .group_commit import GroupCommitThread, Op

log = logging.getLogger(__name__)

Cursor = tuple[int, int]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS segments (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    n INTEGER NOT NULL,
    acked INTEGER NOT NULL DEFAULT 0,
    nbytes INTEGER NOT NULL,
    created_ms INTEGER NOT NULL,
    payload BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""
COUNTERS = ("accepted", "delivered", "declined", "evicted", "rejected")


class OutboxFull(Exception):
    """The outbox is at its cap and the policy (reject_new) or the in-flight batch forbids room."""


class OutboxClosed(Exception):
    pass


@dataclass
class OutboxStats:
    pending: int
    segments: int
    bytes: int
    max_bytes: int
    policy: str
    counters: dict[str, int]
    commits: int
    appends: int


@dataclass
class ReadResult:
    events: list[Any]
    first: Cursor  # position of the first event
    after: Cursor  # position just after the last event
    nbytes: int


class Outbox:
    def __init__(
        self,
        directory: str | os.PathLike[str],
        max_bytes: int = 1 << 30,
        policy: str = "drop_oldest",
        on_evict: Callable[[int], None] | None = None,
    ) -> None:
        self.directory = Path(directory)
        self.path = self.directory / "outbox.db"
        self.max_bytes = max_bytes
        self.policy = policy
        self.on_evict = on_evict
        self._writer = GroupCommitThread(
            "outbox-writer", self._run_ops, self._snapshot, self._restore
        )
        self._pending = 0
        self._bytes = 0
        self._segments = 0
        self._counters = dict.fromkeys(COUNTERS, 0)
        self._delta: dict[str, int] = {}
        self._cache: OrderedDict[int, list[Any]] = OrderedDict()
        self._cache_lock = threading.Lock()
        self._inflight_seg = 0  # segments at or below this id are being sent; never evicted
        self._closed = True
        self.appends = 0
        self.changed: asyncio.Event | None = None  # set whenever events were appended

    # ---------------------------------------------------------------- lifecycle

    def open(self) -> None:
        """Open (creating if needed) and recover. Blocks; call once, from the master only."""
        self.directory.mkdir(parents=True, exist_ok=True)
        self._writer.start(self._connect)
        self._closed = False
        self.changed = asyncio.Event()

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA locking_mode=EXCLUSIVE")
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if mode.lower() != "wal":
            raise RuntimeError(f"the outbox needs SQLite WAL mode, the filesystem gave {mode}")
        conn.execute("PRAGMA synchronous=FULL")  # fsync the WAL on every commit
        conn.execute("PRAGMA wal_autocheckpoint=4000")
        conn.executescript(_SCHEMA)
        for name in COUNTERS:
            conn.execute("INSERT OR IGNORE INTO counters(name, value) VALUES (?, 0)", (name,))
        self._recover(conn)
        return conn

    def _recover(self, conn: sqlite3.Connection) -> None:
        row = conn.execute(
            "SELECT count(*), coalesce(sum(n - acked), 0), coalesce(sum(nbytes), 0) FROM segments"
        ).fetchone()
        self._segments, self._pending, self._bytes = int(row[0]), int(row[1]), int(row[2])
        for name, value in conn.execute("SELECT name, value FROM counters"):
            self._counters[name] = int(value)
        log.info(
            "outbox recovered: %d events pending in %d segments (%d bytes)",
            self._pending,
            self._segments,
            self._bytes,
        )

    def close(self) -> None:
        self._closed = True
        self._writer.stop()

    @property
    def commits(self) -> int:
        return self._writer.commits

    # ---------------------------------------------------------------- in the writer thread

    def _run_ops(self, conn: sqlite3.Connection, ops: list[Op]) -> None:
        """Run ops in order inside the open transaction; consecutive appends become one row."""
        i = 0
        while i < len(ops):
            if ops[i].append is None:
                ops[i].result = ops[i].fn(conn)  # type: ignore[misc]
                i += 1
                continue
            j = i
            while j < len(ops) and ops[j].append is not None:
                j += 1
            self._append_run(conn, ops[i:j])
            i = j
        self._flush_counters(conn)

    def _snapshot(self) -> tuple[int, int, int, dict[str, int]]:
        return self._pending, self._bytes, self._segments, dict(self._counters)

    def _restore(self, snap: tuple[int, int, int, dict[str, int]]) -> None:
        self._pending, self._bytes, self._segments, self._counters = snap
        self._delta.clear()

    def _bump(self, conn: sqlite3.Connection, name: str, by: int) -> None:
        """Count now; written with the group's commit (one UPDATE per counter per commit)."""
        if by:
            self._counters[name] += by
            self._delta[name] = self._delta.get(name, 0) + by

    def _flush_counters(self, conn: sqlite3.Connection) -> None:
        if self._delta:
            conn.executemany(
                "UPDATE counters SET value = value + ? WHERE name = ?",
                [(by, name) for name, by in self._delta.items()],
            )
            self._delta.clear()

    # ---------------------------------------------------------------- submitting

    async def _submit(self, fn: Callable[[sqlite3.Connection], Any]) -> Any:
        if self._closed:
            raise OutboxClosed("the outbox is closed")
        return await self._writer.submit(Op(fn))

    def _submit_sync(self, fn: Callable[[sqlite3.Connection], Any]) -> Any:
        if self._closed:
            raise OutboxClosed("the outbox is closed")
        return self._writer.submit_sync(Op(fn))

    # ---------------------------------------------------------------- append

    async def append(self, events: list[dict[str, Any]]) -> int:
        """Durably store `events` (in order). Returns once they are committed and fsync'ed.

        Raises OutboxFull when the cap and the policy leave no room (counted as rejected)."""
        if not events:
            return 0
        return await self.append_raw(orjson.dumps(events), len(events))

    async def append_raw(self, payload: bytes, n: int) -> int:
        """As append, for `n` events already serialized as one JSON array (`[...]`)."""
        if self._closed:
            raise OutboxClosed("the outbox is closed")
        result = await self._writer.submit(Op(None, append=(payload, n)))
        if isinstance(result, OutboxFull):
            raise result
        if self.changed is not None:
            self.changed.set()
        return result

    def append_sync(self, events: list[dict[str, Any]]) -> int:
        if not events:
            return 0
        if self._closed:
            raise OutboxClosed("the outbox is closed")
        result = self._writer.submit_sync(Op(None, append=(orjson.dumps(events), len(events))))
        if isinstance(result, OutboxFull):
            raise result
        return result

    def _append_run(self, conn: sqlite3.Connection, ops: list[Op]) -> None:
        """Store consecutive appends as one segment; a refusal is a result, not an exception,
        so that its count commits with the group."""
        kept: list[Op] = []
        adding = 0
        for op in ops:
            payload, n = op.append  # type: ignore[misc]
            nbytes = len(payload)
            refusal: str | None = None
            if nbytes > self.max_bytes:
                refusal = f"{nbytes} bytes in one request exceed the outbox cap of {self.max_bytes}; send smaller bulks"
            elif self._bytes + adding + nbytes > self.max_bytes:
                refusal = self._make_room(conn, adding + nbytes)
            if refusal is not None:
                self._bump(conn, "rejected", n)
                op.result = OutboxFull(refusal)
                continue
            kept.append(op)
            adding += nbytes
        if not kept:
            return
        if len(kept) == 1:
            payload, n = kept[0].append  # type: ignore[misc]
        else:  # JSON arrays joined without parsing: "[a,b]" + "[c]" -> "[a,b,c]"
            payload = b"[" + b",".join(op.append[0][1:-1] for op in kept) + b"]"  # type: ignore[index]
            n = sum(op.append[1] for op in kept)  # type: ignore[index]
        cur = conn.execute(
            "INSERT INTO segments(n, nbytes, created_ms, payload) VALUES (?, ?, ?, ?)",
            (n, len(payload), int(time.time() * 1000), payload),
        )
        seg_id = int(cur.lastrowid or 0)
        for op in kept:
            op.result = seg_id
        self._pending += n
        self._bytes += len(payload)
        self._segments += 1
        self._bump(conn, "accepted", n)
        self.appends += len(kept)

    def _make_room(self, conn: sqlite3.Connection, nbytes: int) -> str | None:
        """Evict the oldest segments (not in flight) until `nbytes` fit; or say why not."""
        if self.policy == "reject_new":
            return (
                f"the outbox is full ({self._bytes} of {self.max_bytes} bytes) and its policy "
                "is reject_new; the platform is probably unreachable"
            )
        rows = conn.execute(
            "SELECT id, n, acked, nbytes FROM segments WHERE id > ? ORDER BY id",
            (self._inflight_seg,),
        )
        victims: list[int] = []
        freed = evicted = 0
        for seg_id, seg_n, acked, seg_bytes in rows:
            if self._bytes - freed + nbytes <= self.max_bytes:
                break
            victims.append(seg_id)
            freed += seg_bytes
            evicted += seg_n - acked
        if self._bytes - freed + nbytes > self.max_bytes:
            return "the outbox is full and what it holds is being sent right now"
        conn.executemany("DELETE FROM segments WHERE id = ?", [(v,) for v in victims])
        self._forget(victims)
        self._bytes -= freed
        self._pending -= evicted
        self._segments -= len(victims)
        self._bump(conn, "evicted", evicted)
        if evicted and self.on_evict is not None:
            self.on_evict(evicted)
        return None

    # ---------------------------------------------------------------- read

    def _forget(self, ids: list[int]) -> None:
        with self._cache_lock:
            for i in ids:
                self._cache.pop(i, None)

    def _events_of(self, seg_id: int, payload: bytes) -> list[Any]:
        with self._cache_lock:
            events = self._cache.get(seg_id)
            if events is None:
                events = orjson.loads(payload)
                self._cache[seg_id] = events
                while len(self._cache) > 256:
                    self._cache.popitem(last=False)
            return events

    def _read_fn(
        self, start: Cursor, max_events: int
    ) -> Callable[[sqlite3.Connection], ReadResult]:
        def do(conn: sqlite3.Connection) -> ReadResult:
            out: list[Any] = []
            cursor = start
            first: Cursor | None = None
            nbytes = 0
            rows = conn.execute(
                "SELECT id, n, acked, nbytes, payload FROM segments WHERE id >= ? ORDER BY id LIMIT ?",
                (start[0], max_events),
            )
            for seg_id, n, acked, seg_bytes, payload in rows:
                begin = max(acked, start[1]) if seg_id == start[0] else acked
                if begin >= n:
                    cursor = (seg_id, n)
                    continue
                events = self._events_of(seg_id, payload)
                if first is None:
                    first = (seg_id, begin)
                take = min(n - begin, max_events - len(out))
                out.extend(events[begin : begin + take])
                nbytes += seg_bytes * take // n
                cursor = (seg_id, begin + take)
                if len(out) >= max_events:
                    break
            return ReadResult(out, first or cursor, cursor, nbytes)

        return do

    async def read(self, start: Cursor, max_events: int) -> ReadResult:
        """Events from `start` on (at most `max_events`), where they begin and end, approx bytes."""
        return await self._submit(self._read_fn(start, max_events))

    def hold(self, cursor: Cursor) -> None:
        """Mark everything up to `cursor` as in flight: eviction leaves it alone."""
        self._inflight_seg = max(self._inflight_seg, cursor[0])

    # ---------------------------------------------------------------- ack

    async def ack(self, upto: Cursor, count: int, outcome: str = "delivered") -> None:
        """Everything before `upto` has left the outbox: `outcome` is delivered or declined."""
        await self._submit(self._ack_fn(upto, count, outcome))

    def _ack_fn(
        self, upto: Cursor, count: int, outcome: str
    ) -> Callable[[sqlite3.Connection], None]:
        seg, idx = upto

        def do(conn: sqlite3.Connection) -> None:
            gone = conn.execute(
                "SELECT id, n, acked, nbytes FROM segments WHERE id < ? OR (id = ? AND n <= ?)",
                (seg, seg, idx),
            ).fetchall()
            removed = 0
            if gone:
                conn.execute(
                    "DELETE FROM segments WHERE id < ? OR (id = ? AND n <= ?)", (seg, seg, idx)
                )
                self._forget([g[0] for g in gone])
                for _, n, acked, nbytes in gone:
                    removed += n - acked
                    self._bytes -= nbytes
                self._segments -= len(gone)
            row = conn.execute("SELECT n, acked FROM segments WHERE id = ?", (seg,)).fetchone()
            if row is not None and idx > row[1]:
                conn.execute("UPDATE segments SET acked = ? WHERE id = ?", (idx, seg))
                removed += idx - row[1]
            self._pending -= removed
            # count what left the outbox now; evicted-while-in-flight cannot happen (hold())
            self._bump(conn, outcome, min(count, removed) if removed else 0)

        return do

    async def head(self) -> Cursor:
        def do(conn: sqlite3.Connection) -> Cursor:
            row = conn.execute("SELECT id, acked FROM segments ORDER BY id LIMIT 1").fetchone()
            return (int(row[0]), int(row[1])) if row else (0, 0)

        return await self._submit(do)

    # ---------------------------------------------------------------- numbers

    @property
    def pending(self) -> int:
        return self._pending

    def stats(self) -> OutboxStats:
        return OutboxStats(
            pending=self._pending,
            segments=self._segments,
            bytes=self._bytes,
            max_bytes=self.max_bytes,
            policy=self.policy,
            counters=dict(self._counters),
            commits=self.commits,
            appends=self.appends,
        )
