"""The outbox: a durable FIFO of events in `<datadir>/outbox/outbox.db`.

States of an event: `append` → committed (fsync'ed, then acknowledged to the producer) →
`ack` (delivered or declined: removed) or `evict` (cap hit, policy drop_oldest: removed,
counted). `recover` on open keeps every committed event; SQLite's WAL drops a torn tail,
and `reconcile` reports it (the supervisor's heartbeat kept the counters outside the file).
A damaged file is moved aside and salvaged at open (`salvage.py`); a full disk is a state
(`room.py`): appends are refused with a reason, acks go on, and appends are accepted again by
themselves once there is room. docs/durability.md tells the whole story.

One SQLite connection (outbox_file.py), owned by one writer thread. Every call is queued to that
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

from .counters import NAMES as COUNTERS
from .counters import Counters
from .diskspace import is_damage, is_disk_full
from .group_commit import GroupCommitThread, Op
from .outbox_file import open_checked
from .reconcile import missing
from .room import Room, live_bytes
from .salvage import SalvageReport

log = logging.getLogger(__name__)

Cursor = tuple[int, int]

__all__ = [
    "COUNTERS",
    "Cursor",
    "DiskFull",
    "Outbox",
    "OutboxClosed",
    "OutboxFull",
    "OutboxStats",
    "OutboxUnavailable",
    "ReadResult",
]
_ACK = "ack"  # Op.tag of an ack: (ACK, upto, outcome)


class OutboxFull(Exception):
    """Readings refused, nothing stored: the producer should send them again later (HTTP 503,
    no PUBACK). Here: the cap and its policy (reject_new) or the in-flight batch leave no room."""


class DiskFull(OutboxFull):
    """The filesystem of the data directory is full (SQLITE_FULL, ENOSPC)."""


class OutboxUnavailable(OutboxFull):
    """The outbox could not store the readings (an I/O error, a damaged file)."""


class OutboxClosed(Exception):
    pass


def _on_disk(nbytes: int) -> int:
    """What a payload takes in outbox.db: 4092 of every 4096 bytes of an overflow page carry
    data, plus the row's cell (the page it lands in is measured, not guessed, afterwards)."""
    return nbytes + nbytes // 1000 + 32


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
    used_bytes: int  # what counts against max_bytes: pages in use in outbox.db + the WAL
    disk_bytes: int  # what outbox.db and its WAL take on disk (allocated blocks)
    reserve_bytes: int  # the reserve file (released while the disk is full)
    wal_bound: int
    disk_full: bool
    disk_free_bytes: int  # free on the data directory's filesystem
    damaged: dict[str, Any] | None  # the salvage at open, if the outbox was damaged
    oldest_ms: int | None  # when the oldest pending event was stored (None: nothing pending)


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
        on_alert: Callable[[str, str], None] | None = None,
        reserve_bytes: int | None = None,
        wal_bound: int | None = None,
    ) -> None:
        """`on_evict(count)` and `on_alert(level, message)` are called on the writer thread."""
        self.directory = Path(directory)
        self.path = self.directory / "outbox.db"
        self.max_bytes = max_bytes
        self.policy = policy
        self.on_evict = on_evict
        self.on_alert = on_alert
        # the pages a transaction touches besides the new rows (leaf, counters, freelist, pointer
        # map; more when it evicts): 16 pages, fewer for a tiny cap (measured: 3 to 12)
        self._txn_bytes = max(4, min(16, max_bytes // (64 * 4096))) * 4096
        self._room = Room(
            self.directory, self.path, max_bytes, self._alert, reserve_bytes, wal_bound
        )
        self._writer = GroupCommitThread("outbox-writer", self)
        self._pending = 0
        self._bytes = 0
        self._segments = 0
        self._oldest_ms: int | None = None
        self._count = Counters()
        self._recovered = dict(self._count.live)  # as found at open
        self._owed: list[tuple[Cursor, str]] = []  # acks a full disk kept from committing
        self._next_flush = 0.0
        self._created = False  # outbox.db did not exist at open
        self.salvage: SalvageReport | None = None
        self.damage: str | None = None  # found damaged while open (SQLite said "malformed")
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
        """Open, check, recover (on the writer thread); a damaged file is salvaged first."""
        self._room.prepare()
        self._created = not self.path.exists()
        opened = open_checked(self.path, self._room)
        conn, self.salvage = opened.conn, opened.salvage
        self._segments, self._pending, self._bytes = opened.depth
        self._count.load(conn)
        self._note_oldest(conn)
        log.info(
            "outbox recovered: %d events pending in %d segments (%d bytes)",
            self._pending,
            self._segments,
            self._bytes,
        )
        if self.salvage is not None:
            self._alert("error", self.salvage.sentence())
        self._room.start(conn)
        self._recovered = dict(self._count.live)
        return conn

    def close(self) -> None:
        self._closed = True
        self._writer.stop()

    @property
    def commits(self) -> int:
        return self._writer.commits

    def _alert(self, level: str, message: str) -> None:
        if self.on_alert is not None:
            self.on_alert(level, message)

    def reconcile(self, heartbeat: dict[str, Any] | None) -> str | None:
        """After open(), with the counters of the last master's heartbeat (ha/master.json):
        acknowledged readings that are missing are reported (WARNING and an alert) and
        counted as accepted and lost, never hidden (reconcile.py). Returns the report."""
        found = missing(self._recovered, heartbeat, self.salvage, self._created, self.path)
        if found is None:
            return None

        def count(conn: sqlite3.Connection) -> None:
            for name, by in found.deltas.items():
                self._count.bump(name, by)

        self._submit_sync(count)
        log.warning("%s", found.message)
        self._alert("error", found.message)
        return found.message

    # ---------------------------------------------------------------- in the writer thread

    def run_ops(self, conn: sqlite3.Connection, ops: list[Op]) -> None:
        """Run ops in order inside the open transaction; consecutive appends become one row."""
        if self._owed:  # acks a full disk held back: they go first, in order
            owed, self._owed = self._owed, []
            for upto, outcome in owed:
                self._ack_fn(upto, 0, outcome)(conn)
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
        self._count.flush(conn)

    def snapshot(self) -> Any:
        """The writer's in-memory state, for a rollback (GroupCommitThread)."""
        return (
            self._pending,
            self._bytes,
            self._segments,
            self._count.snapshot(),
            list(self._owed),
            self._oldest_ms,
        )

    def restore(self, snap: Any) -> None:
        self._pending, self._bytes, self._segments, counts, owed, self._oldest_ms = snap
        self._count.restore(counts)
        self._owed = list(owed)

    def committed(self) -> None:
        self._count.publish()

    def failed(self, exc: BaseException, op: Op | None) -> bool:
        """A rolled-back transaction: a full disk is a state; an append is refused, counted;
        an ack waits for the next commit that works (acks are cumulative)."""
        if is_disk_full(exc):
            self._room.enter(exc)
        elif is_damage(exc) and self.damage is None:
            self.damage = str(exc)  # the supervisor restarts the gateway: open() salvages it
            message = f"the outbox is damaged ({exc}): it is salvaged at the next start"
            log.error("%s", message)
            self._alert("error", message)
        if op is None:
            return False
        if op.append is not None and isinstance(exc, sqlite3.Error | OSError):
            self._count.bump("rejected", op.append[1])  # written by the next commit that works
            if is_disk_full(exc):
                op.result = DiskFull(self._room.refusal())
            else:
                op.result = OutboxUnavailable(
                    f"the outbox could not store the readings ({exc}); "
                    "check the data directory's disk; send them again later"
                )
            return True
        if op.tag is not None and op.tag[0] == _ACK and is_disk_full(exc):
            self._owed.append((op.tag[1], op.tag[2]))
            return True
        return False

    def maintain(self, conn: sqlite3.Connection) -> None:
        """Between groups (GroupCommitThread): bound the WAL, watch the disk, flush leftovers."""
        self._room.maintain(conn)
        if (self._owed or self._count.unwritten) and not self._closed:
            now = time.monotonic()
            if now >= self._next_flush:  # not a busy loop while the disk stays full
                self._next_flush = now + 0.5
                self._writer.put(Op(_nothing))

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
        so that its count commits with the group. The cap is measured in outbox.db's pages."""
        kept: list[Op] = []
        adding = 0  # what the kept payloads will take
        live: int | None = None  # pages in use, measured once per run (and after evicting)
        limit = self._room.live_limit
        for op in ops:
            payload, n = op.append  # type: ignore[misc]
            need = _on_disk(len(payload))
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
                    refusal, live = self._make_room(conn, live, self._peak(adding + need))
            if refusal is not None:
                self._count.bump("rejected", n)
                op.result = refusal
                continue
            kept.append(op)
            adding += need
        if not kept:
            return
        if len(kept) == 1:
            payload, n = kept[0].append  # type: ignore[misc]
        else:  # JSON arrays joined without parsing: "[a,b]" + "[c]" -> "[a,b,c]"
            payload = b"[" + b",".join(op.append[0][1:-1] for op in kept) + b"]"  # type: ignore[index]
            n = sum(op.append[1] for op in kept)  # type: ignore[index]
        now_ms = int(time.time() * 1000)
        cur = conn.execute(
            "INSERT INTO segments(n, nbytes, created_ms, payload) VALUES (?, ?, ?, ?)",
            (n, len(payload), now_ms, payload),
        )
        if self._oldest_ms is None:
            self._oldest_ms = now_ms
        seg_id = int(cur.lastrowid or 0)
        for op in kept:
            op.result = seg_id
        self._pending += n
        self._bytes += len(payload)
        self._segments += 1
        self._count.bump("accepted", n)
        self.appends += len(kept)

    def _peak(self, nbytes: int) -> int:
        """What an append needs under the cap at its peak: written into the WAL, then copied
        into outbox.db by a checkpoint while the WAL still holds it, plus the other pages."""
        return 2 * nbytes + self._txn_bytes

    def _make_room(
        self, conn: sqlite3.Connection, live: int, need: int
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
                "SELECT id, n, acked, nbytes FROM segments WHERE id > ? ORDER BY id LIMIT 256",
                (self._inflight_seg,),
            ).fetchall()
            if not rows and self._segments == 0:
                return OutboxFull(
                    f"the request does not fit in the outbox cap of {self.max_bytes} bytes "
                    f"(SQLite's own pages take {live} and the WAL bound {self._room.wal_bound}); "
                    "send smaller bulks or raise outbox.max_bytes"
                ), live
            if not rows:
                return OutboxFull(
                    "the outbox is full and what it holds is being sent right now"
                ), live
            victims: list[int] = []
            freed = payload = evicted = 0
            for seg_id, seg_n, acked, seg_bytes in rows:
                victims.append(seg_id)
                freed += _on_disk(seg_bytes)
                payload += seg_bytes
                evicted += seg_n - acked
                if live - freed + need <= limit:
                    break
            conn.executemany("DELETE FROM segments WHERE id = ?", [(v,) for v in victims])
            self._forget(victims)
            self._bytes -= payload
            self._pending -= evicted
            self._segments -= len(victims)
            self._count.bump("evicted", evicted)
            if evicted and self.on_evict is not None:
                self.on_evict(evicted)
            self._note_oldest(conn)
            live = live_bytes(conn)
        return None, live

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
        """Everything before `upto` has left the outbox: `outcome` is delivered or declined.
        On a full disk that cannot even take the ack, it is kept and written with the next
        commit that works (a crash before then only means those events are sent again)."""
        if self._closed:
            raise OutboxClosed("the outbox is closed")
        op = Op(self._ack_fn(upto, count, outcome))
        op.tag = (_ACK, upto, outcome)
        await self._writer.submit(op)

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
            if gone:
                self._note_oldest(conn)
            # count what left the outbox now (an earlier ack that a full disk held back is
            # counted here); evicted-while-in-flight cannot happen (hold())
            self._count.bump(outcome, removed)

        return do

    def _note_oldest(self, conn: sqlite3.Connection) -> None:
        row = conn.execute("SELECT created_ms FROM segments ORDER BY id LIMIT 1").fetchone()
        self._oldest_ms = int(row[0]) if row else None

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
        """Numbers as of the last commit (counters) and the last look at the disk (≤ 1 s)."""
        room = self._room
        return OutboxStats(
            pending=self._pending,
            segments=self._segments,
            bytes=self._bytes,
            max_bytes=self.max_bytes,
            policy=self.policy,
            counters=dict(self._count.committed),
            commits=self.commits,
            appends=self.appends,
            used_bytes=room.used_bytes,
            disk_bytes=room.disk_bytes,
            reserve_bytes=room.reserve.size if not room.full else 0,
            wal_bound=room.wal_bound,
            disk_full=room.full,
            disk_free_bytes=room.free,
            damaged=self.salvage.summary() if self.salvage is not None else None,
            oldest_ms=self._oldest_ms if self._pending else None,
        )


def _nothing(conn: sqlite3.Connection) -> None:
    """An empty operation: its group commits what is left over (owed acks, counts)."""
