"""The outbox's SQLite file: its schema and settings, and opening it checked — a damaged file
is moved aside and salvaged first (salvage.py), so that what opens is always sound.

One connection, in WAL mode with exclusive locking (no shared-memory file, so it is safe on a
shared data directory), `synchronous=FULL` (the WAL is fsync'ed at every commit), incremental
vacuum (so that it can give space back on a full disk, room.py).

Upgrades happen in place, at open: an outbox made before `segments.crc32` existed gets the
column (`ALTER TABLE ... ADD COLUMN`: a change of the schema only, no row is rewritten); its
rows keep NULL there and are read as they always were (segments.py).
"""

from __future__ import annotations

import logging
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from .diskspace import is_damage, is_disk_full
from .room import Room
from .salvage import Damaged, SalvageReport, check, check_open, salvage

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS segments (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    n INTEGER NOT NULL,
    acked INTEGER NOT NULL DEFAULT 0,
    nbytes INTEGER NOT NULL,
    created_ms INTEGER NOT NULL,
    payload BLOB NOT NULL,
    crc32 INTEGER
);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""


def connect(path: Path, room: Room) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        conn.execute("PRAGMA locking_mode=EXCLUSIVE")
        conn.execute("PRAGMA auto_vacuum=INCREMENTAL")  # a new file only: lets it shrink
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if mode.lower() != "wal":
            raise RuntimeError(f"the outbox needs SQLite WAL mode, the filesystem gave {mode}")
        conn.execute("PRAGMA synchronous=FULL")  # fsync the WAL on every commit
        room.configure(conn)
        conn.executescript(SCHEMA)
        upgrade(conn)
    except BaseException:
        conn.close()
        raise
    return conn


def upgrade(conn: sqlite3.Connection) -> None:
    """Bring an older outbox's schema up to date, in place, keeping every row. On a full
    disk it stays as it is for now (the outbox works without; see has_crc)."""
    if has_crc(conn):
        return
    try:
        conn.execute("ALTER TABLE segments ADD COLUMN crc32 INTEGER")
    except sqlite3.OperationalError as exc:
        if not is_disk_full(exc):
            raise
        log.warning("outbox.db could not be upgraded (%s): it is at the next start with room", exc)
    else:
        log.info("outbox.db upgraded in place: segments.crc32 added")


def has_crc(conn: sqlite3.Connection) -> bool:
    return any(row[1] == "crc32" for row in conn.execute("PRAGMA table_info(segments)"))


@dataclass
class Opened:
    conn: sqlite3.Connection
    salvage: SalvageReport | None  # if it was damaged
    depth: tuple[int, int, int]  # segments, pending events, payload bytes
    with_crc: bool = True  # the schema has segments.crc32 (not yet after a full disk)


def open_checked(path: Path, room: Room) -> Opened:
    """Open the outbox; a damaged one is moved aside and salvaged first (with the report)."""
    conn: sqlite3.Connection | None = None
    try:
        problems = check(path)  # read-only: a damaged file stays as it was found
        if problems:
            raise Damaged(problems)
        conn = connect(path, room)
        if problems is None:  # could not be checked read-only (no room for a -shm?)
            problems = check_open(conn)
            if problems:
                raise Damaged(problems)
        return Opened(conn, None, depth(conn), has_crc(conn))  # damage in a row's header too
    except (Damaged, sqlite3.DatabaseError) as exc:
        if conn is not None:
            conn.close()
        if not (isinstance(exc, Damaged) or is_damage(exc)):
            raise
        report = salvage(path, str(exc), lambda: connect(path, room), path.parent.parent)
        log.warning("%s (salvage took %.1f s)", report.sentence(), report.seconds)
        conn = connect(path, room)
        return Opened(conn, report, depth(conn), has_crc(conn))


def depth(conn: sqlite3.Connection) -> tuple[int, int, int]:
    """Segments, pending events and payload bytes in the outbox."""
    row = conn.execute(
        "SELECT count(*), coalesce(sum(n - acked), 0), coalesce(sum(nbytes), 0) FROM segments"
    ).fetchone()
    return int(row[0]), int(row[1]), int(row[2])
