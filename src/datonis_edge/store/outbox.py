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

Rows are *segments*: the events of one append, stored as one JSON array and sent as stored
(segments.py); the cap and its policy are in cap.py.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from .cap import Cap, DiskFull, OutboxFull
from .counters import NAMES as COUNTERS
from .counters import Counters
from .diskspace import is_damage, is_disk_full
from .group_commit import GroupCommitThread, Op
from .outbox_file import open_checked
from .reconcile import missing
from .room import Room
from .salvage import SalvageReport
from .segments import Cursor, ReadResult, Segments, compact_objects

log = logging.getLogger(__name__)

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


class OutboxUnavailable(OutboxFull):
    """The outbox could not store the readings (an I/O error, a damaged file)."""


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
    used_bytes: int  # what counts against max_bytes: pages in use in outbox.db + the WAL
    disk_bytes: int  # what outbox.db and its WAL take on disk (allocated blocks)
    reserve_bytes: int  # the reserve file (released while the disk is full)
    wal_bound: int
    disk_full: bool
    disk_free_bytes: int  # free on the data directory's filesystem
    damaged: dict[str, Any] | None  # the salvage at open, if the outbox was damaged
    oldest_ms: int | None  # when the oldest pending event was stored (None: nothing pending)


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
        self.on_alert = on_alert
        self._room = Room(
            self.directory, self.path, max_bytes, self._alert, reserve_bytes, wal_bound
        )
        self._writer = GroupCommitThread("outbox-writer", self)
        self._segments = Segments()  # the table and its depth: the writer thread's
        self._depth = self._segments.depth
        self._count = Counters()
        self._cap = Cap(max_bytes, policy, self._room, self._segments, self._count, on_evict)
        self._recovered = dict(self._count.live)  # as found at open
        self._owed: list[tuple[Cursor, str]] = []  # acks a full disk kept from committing
        self._next_flush = 0.0
        self._created = False  # outbox.db did not exist at open
        self.salvage: SalvageReport | None = None
        self.damage: str | None = None  # found damaged while open (SQLite said "malformed")
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
        self._segments.with_crc = opened.with_crc
        self._segments.load(conn, opened.depth)
        self._count.load(conn)
        log.info(
            "outbox recovered: %d events pending in %d segments (%d bytes)",
            self._depth.pending,
            self._depth.segments,
            self._depth.bytes,
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
                self._ack_fn(upto, outcome)(conn)
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
        return self._depth.snapshot(), self._count.snapshot(), list(self._owed)

    def restore(self, snap: Any) -> None:
        depth, counts, owed = snap
        self._depth.restore(depth)
        self._segments.forget_all()  # what was read inside the rolled-back transaction
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
        return await self._append(_encoded(events))

    async def append_raw(self, payload: bytes, n: int) -> int:
        """As append, for `n` events already serialized as one JSON array: orjson's compact
        array of JSON objects (as `readings.readings_json` writes checked readings), whose
        bytes are then sent as they are. Other JSON arrays are stored too, and parsed when
        read."""
        return await self._append((payload, n, compact_objects(payload)))

    async def _append(self, append: tuple[bytes, int, bool]) -> int:
        if self._closed:
            raise OutboxClosed("the outbox is closed")
        result = await self._writer.submit(Op(None, append=append))
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
        result = self._writer.submit_sync(Op(None, append=_encoded(events)))
        if isinstance(result, OutboxFull):
            raise result
        return result

    def _append_run(self, conn: sqlite3.Connection, ops: list[Op]) -> None:
        """Store consecutive appends that fit under the cap as one segment."""
        kept = self._cap.admit(conn, ops, self._inflight_seg)
        if not kept:
            return
        if len(kept) == 1:
            payload, n, compact = kept[0].append  # type: ignore[misc]
        else:  # JSON arrays joined without parsing: "[a,b]" + "[c]" -> "[a,b,c]"
            appends = [op.append for op in kept]
            payload = b"[" + b",".join(a[0][1:-1] for a in appends) + b"]"  # type: ignore[index]
            n = sum(a[1] for a in appends)  # type: ignore[index]
            compact = all(a[2] for a in appends)  # type: ignore[index]
        seg_id = self._segments.insert(conn, payload, n, compact)
        for op in kept:
            op.result = seg_id
        self._count.bump("accepted", n)
        self.appends += len(kept)

    # ---------------------------------------------------------------- read

    async def read(self, start: Cursor, max_events: int) -> ReadResult:
        """Events from `start` on (at most `max_events`): where they begin and end, and the
        events as one JSON array of the bytes stored (segments.py)."""
        return await self._submit(lambda conn: self._segments.read(conn, start, max_events))

    async def first_unreadable(
        self, start: Cursor, max_events: int
    ) -> tuple[int, int, int, int, bytes, str] | None:
        """After a failed read: the row that made it fail (Segments.first_unreadable)."""
        return await self._submit(
            lambda conn: self._segments.first_unreadable(conn, start, max_events)
        )

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
        op = Op(self._ack_fn(upto, outcome))
        op.tag = (_ACK, upto, outcome)
        await self._writer.submit(op)

    def _ack_fn(self, upto: Cursor, outcome: str) -> Callable[[sqlite3.Connection], None]:
        def do(conn: sqlite3.Connection) -> None:
            # count what left the outbox now (an earlier ack that a full disk held back is
            # counted here); evicted-while-in-flight cannot happen (hold())
            self._count.bump(outcome, self._segments.remove_upto(conn, upto))

        return do

    async def head(self) -> Cursor:
        return await self._submit(self._segments.head)

    # ---------------------------------------------------------------- numbers

    @property
    def pending(self) -> int:
        return self._depth.pending

    def stats(self) -> OutboxStats:
        """Numbers as of the last commit (counters) and the last look at the disk (≤ 1 s)."""
        room, depth = self._room, self._depth
        return OutboxStats(
            pending=depth.pending,
            segments=depth.segments,
            bytes=depth.bytes,
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
            oldest_ms=depth.oldest_ms if depth.pending else None,
        )


def _encoded(events: list[dict[str, Any]]) -> tuple[bytes, int, bool]:
    """Events as one JSON array, and whether they are all objects (then sent as stored)."""
    return orjson.dumps(events), len(events), set(map(type, events)) == {dict}


def _nothing(conn: sqlite3.Connection) -> None:
    """An empty operation: its group commits what is left over (owed acks, counts)."""
