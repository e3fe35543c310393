"""The outbox's rows, *segments*: the events of one append (or of appends committed together)
as one JSON array, and reading a range of events back as bytes.

A position in the outbox is (segment id, index inside the segment). A row holds `n` events in
`payload`, how many of them have left (`acked`), and `crc32`:

- **With a crc32** (written by this version): `payload` is orjson's compact JSON array of `n`
  JSON objects, and `crc32` its checksum. Its events are sent as stored, byte for byte: a
  batch is the rows' bytes between event boundaries, never parsed nor encoded again. The
  boundaries are found without parsing (`model.event_starts`), once per row that a batch
  starts or ends in, and only then; a whole row needs none. The checksum is verified once
  when the row is first read (damage inside a blob that SQLite cannot see is caught there).
- **Without one** (an outbox written before, or salvaged): parsed once when first read, as it
  always was, and its events encoded again for the wire.

Rows that do not read back (damaged, not JSON, not `n` events) make `read` raise; the
forwarder then asks `first_unreadable` which one it was and why (store/quarantine.py) and
declines it locally.
"""

from __future__ import annotations

import sqlite3
import time
import zlib
from array import array
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import orjson

from ..model import event_starts

Cursor = tuple[int, int]
Piece = memoryview | list[Any]  # events as stored bytes (`{..},{..}`), or parsed (old rows)

CACHE_ROWS = 256  # rows whose checksum, boundaries or parsed events are remembered


class SegmentDamaged(ValueError):
    """A row's bytes do not match their checksum."""


def crc_of(payload: bytes) -> int:
    return zlib.crc32(payload)


def compact_objects(payload: bytes) -> bool:
    """Whether `payload` looks like orjson's array of objects (an append_raw's promise)."""
    return payload[:2] == b"[{" and payload[-2:] == b"}]"


def problem(payload: Any, n: int, crc: int | None) -> str | None:
    """Why a row cannot be read (what makes `Segments.read` raise), or None."""
    if crc is not None and (not isinstance(payload, bytes) or crc_of(payload) != crc):
        return "its bytes do not match their checksum (damaged inside outbox.db)"
    try:
        _parse(payload, n)
    except ValueError as exc:  # JSONDecodeError is one
        return f"{exc.__class__.__name__}: {exc}"
    return None


def _parse(payload: Any, n: int) -> list[Any]:
    events = orjson.loads(payload)
    if not isinstance(events, list) or len(events) != n:
        raise ValueError(f"not a JSON array of {n} events")
    return events


@dataclass
class ReadResult:
    """Events read from the outbox: where they begin and end, and the events themselves as
    one JSON array (`payload`) or, when old rows hold events that do not encode, as objects."""

    count: int
    first: Cursor  # position of the first event
    after: Cursor  # position just after the last event
    nbytes: int
    payload: bytes | None = None
    parsed: list[Any] | None = None

    @property
    def events(self) -> list[Any]:
        if self.parsed is None:
            self.parsed = orjson.loads(self.payload) if self.payload else []
        return self.parsed


class _Row:
    """What is remembered of a row that was read: checked; its boundaries, or its events."""

    __slots__ = ("events", "starts")

    def __init__(self, events: list[Any] | None = None) -> None:
        self.starts: array[int] | None = None
        self.events = events


@dataclass
class Depth:
    """What the outbox holds; kept by the writer thread, read by others."""

    pending: int = 0
    bytes: int = 0
    segments: int = 0
    oldest_ms: int | None = None  # when the oldest row was stored

    def snapshot(self) -> tuple[int, int, int, int | None]:
        return self.pending, self.bytes, self.segments, self.oldest_ms

    def restore(self, snap: tuple[int, int, int, int | None]) -> None:
        self.pending, self.bytes, self.segments, self.oldest_ms = snap


class Segments:
    """The segments table, on the writer thread: insert, read, remove; and its depth."""

    def __init__(self) -> None:
        self.with_crc = True  # False while an old outbox could not get the column (disk full)
        self.depth = Depth()
        self._cache: OrderedDict[int, _Row] = OrderedDict()

    def load(self, conn: sqlite3.Connection, depth: tuple[int, int, int]) -> None:
        self.depth.segments, self.depth.pending, self.depth.bytes = depth
        self.note_oldest(conn)

    def forget_all(self) -> None:
        """After a rollback: a row read inside it may be gone, and its id used again."""
        self._cache.clear()

    # ------------------------------------------------------------------ write

    def insert(self, conn: sqlite3.Connection, payload: bytes, n: int, compact: bool) -> int:
        """Store one row; `compact`: orjson's array of `n` objects (sent as stored)."""
        now_ms = _now_ms()
        if self.with_crc:
            cur = conn.execute(
                "INSERT INTO segments(n, nbytes, created_ms, payload, crc32) VALUES (?, ?, ?, ?, ?)",
                (n, len(payload), now_ms, payload, crc_of(payload) if compact else None),
            )
        else:
            cur = conn.execute(
                "INSERT INTO segments(n, nbytes, created_ms, payload) VALUES (?, ?, ?, ?)",
                (n, len(payload), now_ms, payload),
            )
        if self.depth.oldest_ms is None:
            self.depth.oldest_ms = now_ms
        self.depth.pending += n
        self.depth.bytes += len(payload)
        self.depth.segments += 1
        return int(cur.lastrowid or 0)

    def remove_upto(self, conn: sqlite3.Connection, upto: Cursor) -> int:
        """Everything before `upto` leaves: whole rows are deleted, a partly sent one records
        how far it went. Returns how many events left now."""
        seg, idx = upto
        where = "id < ? OR (id = ? AND n <= ?)"
        gone = conn.execute(
            f"SELECT id, n, acked, nbytes FROM segments WHERE {where}", (seg, seg, idx)
        )
        gone = gone.fetchall()
        removed = 0
        if gone:
            conn.execute(f"DELETE FROM segments WHERE {where}", (seg, seg, idx))
            removed = self._removed(gone)
        row = conn.execute("SELECT n, acked FROM segments WHERE id = ?", (seg,)).fetchone()
        if row is not None and idx > row[1]:
            conn.execute("UPDATE segments SET acked = ? WHERE id = ?", (idx, seg))
            removed += idx - row[1]
            self.depth.pending -= idx - row[1]
        if gone:
            self.note_oldest(conn)
        return removed

    def delete(self, conn: sqlite3.Connection, rows: list[tuple[int, int, int, int]]) -> int:
        """Delete these rows (id, n, acked, nbytes); returns the events that were pending."""
        conn.executemany("DELETE FROM segments WHERE id = ?", [(r[0],) for r in rows])
        removed = self._removed(rows)
        self.note_oldest(conn)
        return removed

    def _removed(self, rows: list[tuple[int, int, int, int]]) -> int:
        removed = 0
        for seg_id, n, acked, nbytes in rows:
            self._cache.pop(seg_id, None)
            removed += n - acked
            self.depth.bytes -= nbytes
        self.depth.pending -= removed
        self.depth.segments -= len(rows)
        return removed

    def note_oldest(self, conn: sqlite3.Connection) -> None:
        row = conn.execute("SELECT created_ms FROM segments ORDER BY id LIMIT 1").fetchone()
        self.depth.oldest_ms = int(row[0]) if row else None

    # ------------------------------------------------------------------ read

    def head(self, conn: sqlite3.Connection) -> Cursor:
        row = conn.execute("SELECT id, acked FROM segments ORDER BY id LIMIT 1").fetchone()
        return (int(row[0]), int(row[1])) if row else (0, 0)

    def read(self, conn: sqlite3.Connection, start: Cursor, max_events: int) -> ReadResult:
        """Up to `max_events` events from `start` on. Raises (ValueError, SegmentDamaged) on a
        row that does not read back; `problem` says which and why."""
        pieces: list[Piece] = []
        count = nbytes = 0
        cursor = start
        first: Cursor | None = None
        columns = "id, n, acked, nbytes, payload, " + ("crc32" if self.with_crc else "NULL")
        rows = conn.execute(
            f"SELECT {columns} FROM segments WHERE id >= ? ORDER BY id LIMIT ?",
            (start[0], max_events),
        )
        for seg_id, n, acked, seg_bytes, payload, crc in rows:
            begin = max(acked, start[1]) if seg_id == start[0] else acked
            if begin >= n:
                cursor = (seg_id, n)
                continue
            if first is None:
                first = (seg_id, begin)
            take = min(n - begin, max_events - count)
            pieces.append(self._piece(seg_id, n, payload, crc, begin, begin + take))
            count += take
            nbytes += seg_bytes * take // n
            cursor = (seg_id, begin + take)
            if count >= max_events:
                break
        result = ReadResult(count, first or cursor, cursor, nbytes)
        if pieces:
            result.payload, result.parsed = _joined(pieces)
        return result

    def first_unreadable(
        self, conn: sqlite3.Connection, start: Cursor, max_events: int
    ) -> tuple[int, int, int, int, bytes, str] | None:
        """After `read(start, max_events)` raised: the first row from `start` on that does not
        read back, as (good events before it, id, first unacknowledged index, n, its bytes,
        why), or None if every row reads (the failure was not the data's)."""
        good = 0
        columns = "id, n, acked, payload, " + ("crc32" if self.with_crc else "NULL")
        rows = conn.execute(
            f"SELECT {columns} FROM segments WHERE id >= ? ORDER BY id LIMIT ?",
            (start[0], max_events + 1),
        )
        for seg_id, n, acked, payload, crc in rows:
            begin = max(acked, start[1]) if seg_id == start[0] else acked
            if begin >= n:
                continue
            why = problem(payload, n, crc)
            if why is not None:
                raw = payload.encode() if isinstance(payload, str) else bytes(payload)
                return good, seg_id, begin, n, raw, why
            good += n - begin
            if good >= max_events:
                return None
        return None

    def _piece(
        self, seg_id: int, n: int, payload: bytes, crc: int | None, begin: int, end: int
    ) -> Piece:
        """Events [begin, end) of a row: its stored bytes, or (old rows) its parsed events."""
        row = self._cache.get(seg_id)
        if row is None:
            row = self._remember(seg_id, payload, n, crc)
        if row.events is not None:
            return row.events[begin:end]
        view = memoryview(payload)
        if begin == 0 and end == n:
            return view[1:-1]
        if row.starts is None:
            try:
                row.starts = event_starts(payload, n)
            except ValueError:  # not as this version writes rows: read it as an old row
                row.events = _parse(payload, n)
                return row.events[begin:end]
        starts = row.starts
        return view[starts[begin] : starts[end] - 1 if end < n else len(payload) - 1]

    def _remember(self, seg_id: int, payload: Any, n: int, crc: int | None) -> _Row:
        if crc is None:
            row = _Row(_parse(payload, n))
        elif not isinstance(payload, bytes) or crc_of(payload) != crc:
            raise SegmentDamaged(f"outbox segment {seg_id} does not match its checksum")
        else:
            row = _Row()
        self._cache[seg_id] = row
        while len(self._cache) > CACHE_ROWS:
            self._cache.popitem(last=False)
        return row


def _joined(pieces: list[Piece]) -> tuple[bytes | None, list[Any] | None]:
    """The pieces as one JSON array; events that cannot be encoded (an old row's, nested
    deeper than orjson writes) come back parsed instead, for the uplink to decline."""
    parts: list[Any] = []
    for piece in pieces:
        if isinstance(piece, list):
            try:
                piece = memoryview(orjson.dumps(piece))[1:-1]
            except orjson.JSONEncodeError:
                return None, _parsed(pieces)
        parts.append(piece)
    return b"[" + b",".join(parts) + b"]", None


def _parsed(pieces: list[Piece]) -> list[Any]:
    events: list[Any] = []
    for piece in pieces:
        events.extend(
            piece if isinstance(piece, list) else orjson.loads(b"".join((b"[", piece, b"]")))
        )
    return events


def _now_ms() -> int:
    return int(time.time() * 1000)
