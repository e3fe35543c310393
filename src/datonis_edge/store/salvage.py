"""A damaged outbox: found at open, moved aside (never deleted), what can be read salvaged.

`check` runs SQLite's `PRAGMA integrity_check` when the outbox opens, on a read-only
connection: SQLite may write to a damaged file when a read-write connection to it closes, and
the damaged files are kept as they were found. Its cost is reading
every page; SQLite reads them one by one in b-tree order, which on a cold page cache turns a
1 GB outbox into ~20 s of small random reads on the project's VM. Reading the files once
sequentially first (when they fit in memory) brings that to ~1 s (docs/durability.md).

`salvage` moves `outbox.db` and its WAL into `outbox/damaged-<time>/`, reads every row SQLite
can still read from that copy (read-only: the damaged files stay as they were found), skipping
the rows it cannot, and writes them into a fresh `outbox.db` with the same segment ids. A row
must hold a JSON array of objects; what does not is dropped and counted. Our own reader, not
the sqlite3 shell's `.recover`: it needs no extra package, and on a 4 KB overwrite it salvaged
every row outside the damaged page where `.recover` (3.40) gave up with "SQL logic error".
It cannot reach rows below a damaged interior b-tree page (that subtree is lost; rare: one
page in hundreds is interior).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from .counters import pending_of
from .diskspace import is_damage, is_disk_full

log = logging.getLogger(__name__)

SIDE_FILES = ("", "-wal", "-shm", "-journal")
_ROW = "SELECT id, n, acked, created_ms, payload FROM segments"
_CHUNK_BYTES = 4 << 20  # rows written per transaction into the fresh outbox


class Damaged(Exception):
    """The outbox failed its integrity check at open."""

    def __init__(self, problems: list[str]) -> None:
        lines = [ln.strip() for p in problems for ln in p.splitlines()]
        self.problems = [ln for ln in lines if ln and not ln.startswith("***")]
        super().__init__("; ".join(self.problems[:3]))


@dataclass
class SalvageReport:
    damaged_dir: str  # where the damaged files were moved, relative to the data directory
    problem: str  # what SQLite said
    segments: int = 0  # rows written to the fresh outbox
    salvaged: int = 0  # pending readings in them
    dropped: int = 0  # readings in readable rows that were not JSON objects
    unreadable_rows: int = 0  # row ids SQLite could not read
    no_room: int = 0  # readable readings not written for lack of disk space (still in damaged/)
    lost: int | None = None  # pending readings not salvaged; None if the counters were unreadable
    counters: dict[str, int] | None = None  # the damaged outbox's counters, if readable
    seconds: float = 0.0
    at_ms: int = field(default_factory=lambda: int(time.time() * 1000))

    def summary(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("counters")
        return out

    def sentence(self) -> str:
        lost = "an unknown number" if self.lost is None else f"{self.lost}"
        text = (
            f"the outbox was damaged ({self.problem}): {self.salvaged} readings salvaged, "
            f"{lost} lost; the damaged files are kept in {self.damaged_dir}/"
        )
        if self.no_room:
            text += (
                f"; {self.no_room} readable readings were not salvaged for lack of disk space "
                "(free space, then restart to salvage them again from that copy)"
            )
        return text


# ------------------------------------------------------------------------------ checking


def _memory_available() -> int:
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 0


def preread(*paths: Path) -> None:
    """Read the files once, sequentially, into the page cache, if they fit comfortably."""
    sizes = [p.stat().st_size if p.exists() else 0 for p in paths]
    if sum(sizes) > _memory_available() // 2:
        return  # would be evicted before SQLite reads it: no help
    for path, size in zip(paths, sizes, strict=True):
        if not size:
            continue
        with contextlib.suppress(OSError), open(path, "rb", buffering=0) as f:
            while f.read(1 << 20):
                pass


def check(path: Path) -> list[str] | None:
    """SQLite's integrity check of the outbox file: [] if sound (or absent), else what it
    found; None if it could not be opened read-only (then check_open() on the real one)."""
    if not path.exists():
        return []
    preread(path, Path(f"{path}-wal"))
    try:
        ro = ReadOnly(path)
    except sqlite3.Error as exc:
        return [str(exc)] if is_damage(exc) else None
    try:
        return check_open(ro.conn)
    except sqlite3.Error as exc:
        if is_damage(exc):
            return [str(exc)]
        return None
    finally:
        ro.close()


def check_open(conn: sqlite3.Connection) -> list[str]:
    try:
        rows = conn.execute("PRAGMA integrity_check(20)").fetchall()
    except sqlite3.DatabaseError as exc:
        if not is_damage(exc):
            raise
        return [str(exc)]
    problems = [str(r[0]) for r in rows]
    return [] if problems == ["ok"] else problems


# ------------------------------------------------------------------------------ salvaging


def move_aside(db_path: Path) -> Path:
    """Move the outbox's files into `damaged-<UTC time>/` beside them; returns that folder."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    target = db_path.parent / f"damaged-{stamp}"
    target.mkdir()
    for suffix in SIDE_FILES:
        src = Path(f"{db_path}{suffix}")
        if src.exists():
            os.rename(src, target / src.name)
    with contextlib.suppress(OSError):  # the renames must survive a crash
        fd = os.open(db_path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    return target


class ReadOnly:
    """A read-only connection that leaves the files as they were found. Opening it may create
    a -shm (and an empty -wal) beside them: those, and only those, are removed on close."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._made = [s for s in ("-wal", "-shm") if not Path(f"{path}{s}").exists()]
        uri = f"file:{urllib.parse.quote(str(path))}?mode=ro"
        try:
            self.conn = sqlite3.connect(uri, uri=True, isolation_level=None)
        except BaseException:
            self._remove_made()
            raise

    def close(self) -> None:
        self.conn.close()
        self._remove_made()

    def _remove_made(self) -> None:
        for suffix in self._made:
            with contextlib.suppress(FileNotFoundError):
                Path(f"{self.path}{suffix}").unlink()


class _Reader(ReadOnly):
    """Rows of a damaged outbox, read through SQLite, read-only, skipping unreadable ones."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.unreadable = 0

    def counters(self) -> dict[str, int] | None:
        try:
            return {
                str(k): int(v) for k, v in self.conn.execute("SELECT name, value FROM counters")
            }
        except (sqlite3.DatabaseError, ValueError, TypeError):
            return None

    def _highest_id(self) -> int:
        for sql in (
            "SELECT max(id) FROM segments",
            "SELECT seq FROM sqlite_sequence WHERE name = 'segments'",
        ):
            with contextlib.suppress(sqlite3.DatabaseError, TypeError):
                row = self.conn.execute(sql).fetchone()
                if row and row[0] is not None:
                    return int(row[0])
        return -1

    def rows(self) -> Iterator[tuple[int, int, int, int, bytes]]:
        """In id order. A range scan until it hits damage, then id by id past it."""
        highest = self._highest_id()
        k = 0
        while True:
            try:
                for row in self.conn.execute(f"{_ROW} WHERE id >= ? ORDER BY id", (k,)):
                    k = int(row[0]) + 1
                    yield row
                return
            except sqlite3.DatabaseError:
                pass
            limit = max(highest, k + 100_000)  # ids past the highest known are not probed long
            while k <= limit:
                try:
                    row = self.conn.execute(f"{_ROW} WHERE id = ?", (k,)).fetchone()
                except sqlite3.DatabaseError:
                    self.unreadable += 1
                    k += 1
                    continue
                k += 1
                if row is not None:
                    yield row
                break  # readable again: back to the range scan
            else:
                return


def clean(payload: Any, n: int, acked: int) -> tuple[list[Any], int]:
    """The pending readings of a row that are JSON objects, and how many were dropped."""
    pending = max(n - acked, 0)
    try:
        events = orjson.loads(payload)
    except (orjson.JSONDecodeError, TypeError):
        return [], pending
    if not isinstance(events, list):
        return [], pending
    rest = events[min(acked, len(events)) :]
    kept = [e for e in rest if isinstance(e, dict)]
    return kept, max(pending - len(kept), 0)


def salvage(
    db_path: Path,
    problem: str,
    open_fresh: Callable[[], sqlite3.Connection],
    datadir: Path | None = None,
) -> SalvageReport:
    """Move the damaged outbox aside and build a fresh one from what can be read."""
    started = time.monotonic()
    target = move_aside(db_path)
    where = target.relative_to(datadir) if datadir else target
    report = SalvageReport(damaged_dir=str(where), problem=problem[:300])
    fresh = open_fresh()
    try:
        _copy(target / db_path.name, fresh, report)
        fresh.execute("BEGIN IMMEDIATE")
        for name, value in _counters_after(report).items():
            fresh.execute(
                "INSERT INTO counters(name, value) VALUES (?, ?) "
                "ON CONFLICT(name) DO UPDATE SET value = excluded.value",
                (name, value),
            )
        fresh.execute("COMMIT")
    except BaseException:
        fresh.close()
        raise
    fresh.close()
    report.seconds = round(time.monotonic() - started, 3)
    return report


def _copy(damaged: Path, fresh: sqlite3.Connection, report: SalvageReport) -> None:
    try:
        reader = _Reader(damaged)
    except sqlite3.Error as exc:
        log.warning("the damaged outbox cannot be opened at all (%s): nothing to salvage", exc)
        return
    try:
        report.counters = reader.counters()
        batch: list[tuple[int, int, int, bytes]] = []
        size = 0
        full = False
        try:
            for seg_id, n, acked, created_ms, payload in reader.rows():
                events, dropped = clean(payload, int(n or 0), int(acked or 0))
                report.dropped += dropped
                if not events:
                    continue
                if full:
                    report.no_room += len(events)
                    continue
                body = orjson.dumps(events)
                batch.append((int(seg_id), len(events), int(created_ms or 0), body))
                size += len(body)
                if size >= _CHUNK_BYTES:
                    full = not _write(fresh, batch, report)
                    batch, size = [], 0
            if batch and not full:
                _write(fresh, batch, report)
        except sqlite3.DatabaseError as exc:  # the reader gave up on something it cannot skip
            log.warning("salvage stopped early: %s", exc)
        report.unreadable_rows = reader.unreadable
    finally:
        reader.close()


def _write(
    fresh: sqlite3.Connection, rows: list[tuple[int, int, int, bytes]], report: SalvageReport
) -> bool:
    """Insert salvaged rows in one transaction; False (counted in no_room) if the disk is full."""
    try:
        fresh.execute("BEGIN IMMEDIATE")
        fresh.executemany(
            "INSERT INTO segments(id, n, acked, nbytes, created_ms, payload) "
            "VALUES (?, ?, 0, ?, ?, ?)",
            [(i, n, len(body), ms, body) for i, n, ms, body in rows],
        )
        fresh.execute("COMMIT")
    except sqlite3.Error as exc:
        if fresh.in_transaction:
            fresh.execute("ROLLBACK")
        if not is_disk_full(exc):
            raise
        report.no_room += sum(r[1] for r in rows)
        return False
    report.segments += len(rows)
    report.salvaged += sum(r[1] for r in rows)
    return True


def _counters_after(report: SalvageReport) -> dict[str, int]:
    """The damaged outbox's counters with what was lost added to `lost`; if they could not be
    read, only what is known (the supervisor's last heartbeat fills in the rest)."""
    old = report.counters
    if old is None:
        return {"accepted": report.salvaged + report.dropped, "lost": report.dropped}
    report.lost = max(pending_of(old) - report.salvaged, 0)
    return {**old, "lost": old.get("lost", 0) + report.lost}
