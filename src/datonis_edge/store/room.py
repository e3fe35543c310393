"""The outbox's room on disk: the WAL bound, the cap in real pages, and the disk-full state.

Runs on the outbox's writer thread only (other threads read the published numbers).

- **WAL bound.** After a commit that leaves the WAL over `wal_bound` bytes, a
  `wal_checkpoint(TRUNCATE)` copies it into `outbox.db` and truncates it to zero, so the WAL
  never holds more than the bound plus one group commit.
- **The cap in pages.** `live_bytes` is what `outbox.db` holds in pages in use (its size minus
  the free pages SQLite will reuse): payload plus SQLite's own overhead. The outbox keeps it
  under `max_bytes - wal_bound`, so that `outbox.db` + WAL stay under `max_bytes`.
- **Disk full.** On SQLITE_FULL the reserve is released (room to write acks, checkpoints and
  vacuum steps), appends are refused, and every maintenance round gives space back
  (checkpoint, then `incremental_vacuum` to shrink `outbox.db`) until the filesystem has room
  for the reserve and some writing again: then the reserve is made again and appends are
  accepted by themselves.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

from ..logs import OnceLogger
from .diskspace import (
    Reserve,
    file_bytes,
    free_bytes,
    fs_bytes,
    is_disk_full,
    mount_point,
)

log = logging.getLogger(__name__)

KIB, MIB = 1 << 10, 1 << 20
WAL_BOUND_MAX = 4 * MIB
WAL_BOUND_MIN = 16 * KIB
RESERVE_EXTRA = 256 * KIB  # on top of the WAL bound: a checkpoint may need the bound itself
PROBE_S = 0.25  # how often a full disk is looked at again
REFRESH_S = 0.5  # how often the published numbers are refreshed
ANNOUNCE_S = 60.0  # a disk that fills again within this is not logged again
CONVERT_MAX = 64 * MIB  # an older outbox.db is converted for incremental vacuum up to this
VACUUM_PAGES = 32  # pages moved per vacuum step (their WAL frames fit in the reserve's room)

Alert = Callable[[str, str], None]


def wal_bound_for(max_bytes: int, fs_size: int) -> int:
    """A bound on the WAL: 4 MiB, or less for a small cap or a small filesystem."""
    return max(WAL_BOUND_MIN, min(WAL_BOUND_MAX, max_bytes // 8, fs_size // 16))


def live_bytes(conn: sqlite3.Connection) -> int:
    """Bytes in pages in use (as the open transaction sees them)."""
    page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    free = conn.execute("PRAGMA freelist_count").fetchone()[0]
    return int((pages - free) * page_size)


class Room:
    def __init__(
        self,
        directory: Path,
        db_path: Path,
        max_bytes: int,
        alert: Alert,
        reserve_bytes: int | None = None,
        wal_bound: int | None = None,
    ) -> None:
        self.directory = directory
        self.db_path = db_path
        self.wal_path = Path(f"{db_path}-wal")
        self.max_bytes = max_bytes
        self._alert = alert
        self._reserve_override = reserve_bytes
        self._wal_override = wal_bound
        self.wal_bound = wal_bound or WAL_BOUND_MIN
        self.reserve = Reserve(directory, reserve_bytes or self.wal_bound + RESERVE_EXTRA)
        self.full = False
        self._trim = False  # after a full disk: give free pages back until few are left
        self._can_shrink = True  # outbox.db uses incremental vacuum
        self.fs = str(directory)
        # published for stats() (read from other threads; refreshed on the writer thread)
        self.free = 0
        self.disk_bytes = 0
        self.used_bytes = 0
        self._next_probe = 0.0
        self._next_refresh = 0.0
        self._announced = False
        self._announced_at = -ANNOUNCE_S
        self._once = OnceLogger(log, interval_s=ANNOUNCE_S)

    @property
    def live_limit(self) -> int:
        """What the pages in use of outbox.db may reach: the cap less the WAL's bound."""
        return max(self.max_bytes - self.wal_bound, 0)

    # ------------------------------------------------------------------ open

    def prepare(self) -> None:
        """Size the WAL bound and the reserve for this filesystem (before opening)."""
        self.fs = str(mount_point(self.directory))
        size = fs_bytes(self.directory)
        self.wal_bound = self._wal_override or wal_bound_for(self.max_bytes, size)
        self.reserve.size = self._reserve_override or self.wal_bound + RESERVE_EXTRA

    def configure(self, conn: sqlite3.Connection) -> None:
        # a (passive) checkpoint after the commit that takes the WAL past the bound, and the
        # WAL file cut back to the bound when it restarts: reused, not grown and truncated
        # (truncating it each time cost ~20 % of the outbox's own throughput)
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        conn.execute(f"PRAGMA wal_autocheckpoint={max(self.wal_bound // page_size, 4)}")
        conn.execute(f"PRAGMA journal_size_limit={self.wal_bound}")

    def start(self, conn: sqlite3.Connection) -> None:
        """After the outbox opened: make the reserve (or start full), say if the cap is too big."""
        self._shrinkable(conn)
        self._can_shrink = conn.execute("PRAGMA auto_vacuum").fetchone()[0] == 2
        if not self.reserve.make():
            self.enter("no room for the outbox's reserve at start")
        self.refresh(conn)
        room = self.free + self.disk_bytes + (0 if self.full else self.reserve.size)
        if self.max_bytes + self.reserve.size > room:
            log.warning(
                "outbox.max_bytes (%d bytes) is more than the filesystem of the data directory "
                "can give the outbox (%d bytes on %s, free or in its files and reserve): when "
                "it is used up, readings are refused until there is room instead of the cap's "
                "policy applying; set outbox.max_bytes to at most %d",
                self.max_bytes,
                room,
                self.fs,
                max(room - self.reserve.size, 0),
            )

    def _shrinkable(self, conn: sqlite3.Connection) -> None:
        """An outbox made before incremental vacuum: converted once (a VACUUM, ~6 s per GB
        here), when it is small enough not to delay a takeover and there is room for it."""
        if conn.execute("PRAGMA auto_vacuum").fetchone()[0] == 2:
            return
        size = file_bytes(self.db_path, self.wal_path)
        if size > CONVERT_MAX or free_bytes(self.directory) < 2 * size + self.reserve.size:
            log.info(
                "outbox.db (%d bytes) cannot give space back on a full disk yet: it is "
                "converted at a start when it is under %d bytes and has room",
                size,
                CONVERT_MAX,
            )
            return
        conn.execute("PRAGMA auto_vacuum=INCREMENTAL")
        conn.execute("VACUUM")
        self.checkpoint(conn)

    # ------------------------------------------------------------------ the state

    def refusal(self) -> str:
        return (
            f"the disk of the data directory is full: free space on {self.fs} or lower "
            "outbox.max_bytes; readings are refused until there is room"
        )

    def enter(self, cause: object) -> None:
        """SQLite (or the reserve) found the disk full: release the reserve, refuse appends."""
        if self.full:
            return
        self.full = self._trim = True
        freed = self.reserve.release()
        self._refresh_files()
        self._next_probe = time.monotonic() + PROBE_S
        now = time.monotonic()
        if now - self._announced_at < ANNOUNCE_S:
            log.debug("disk full again (%s)", cause)
            return
        self._announced, self._announced_at = True, now
        message = self.refusal()
        log.warning("disk full: %s (%s; %d bytes of reserve released)", message, cause, freed)
        self._alert("error", message)

    def _leave(self) -> None:
        self.full = False
        if self._announced:
            self._announced = False
            message = (
                f"disk has room again ({self.free} bytes free on {self.fs}): "
                "readings are accepted again"
            )
            log.info("%s", message)
            self._alert("info", message)

    # ------------------------------------------------------------------ between groups

    def maintain(self, conn: sqlite3.Connection) -> None:
        now = time.monotonic()
        if self.full and file_bytes(self.wal_path):
            self.checkpoint(conn)  # TRUNCATE: the WAL's blocks back to the filesystem
        if (self.full or self._trim) and now >= self._next_probe:
            self._next_probe = now + PROBE_S
            self._give_back(conn, steps=64 if self.full else 4)
            self.refresh(conn)
            if self.full and self._room_again(conn) and self.reserve.make():
                self.refresh(conn)
                self._leave()
        elif now >= self._next_refresh:
            self.refresh(conn)

    def _room_again(self, conn: sqlite3.Connection) -> bool:
        """Room for the reserve, a WAL's worth of writing, and readings (on the filesystem or
        in outbox.db's free pages), with a margin so that a full disk does not flap."""
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        inside = conn.execute("PRAGMA freelist_count").fetchone()[0] * page_size
        spare = self.free - self.reserve.size - self.wal_bound
        return spare >= RESERVE_EXTRA and spare + inside >= self.wal_bound + RESERVE_EXTRA

    def checkpoint(self, conn: sqlite3.Connection) -> bool:
        """Copy the WAL into outbox.db and truncate it to zero. False if it could not."""
        try:
            busy = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
        except sqlite3.Error as exc:
            if is_disk_full(exc):
                self.enter(exc)
            else:  # an I/O error: the next round tries again; appends will say it too
                self._once.log("checkpoint", "outbox checkpoint failed: %s; check the disk", exc)
            return False
        self._once.resolve("checkpoint", "outbox checkpoints work again")
        return not busy

    def _give_back(self, conn: sqlite3.Connection, steps: int) -> None:
        """Move pages from the end of outbox.db into free ones and truncate it: everything
        while the disk is full, then down to a WAL bound's worth of free pages."""
        if not self._can_shrink:
            self._trim = False
            self.checkpoint(conn)
            return
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        for _ in range(steps):  # bounded: a probe must not hold the writer for long
            free = conn.execute("PRAGMA freelist_count").fetchone()[0]
            if not self.full and free * page_size <= self.wal_bound:
                self._trim = False
                return
            if not free or not self.checkpoint(conn):
                return
            try:
                conn.execute("BEGIN IMMEDIATE")
                conn.execute(f"PRAGMA incremental_vacuum({min(free, VACUUM_PAGES)})").fetchall()
                conn.execute("COMMIT")
            except sqlite3.Error as exc:
                if conn.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        conn.execute("ROLLBACK")
                if not is_disk_full(exc):
                    self._once.log("vacuum", "outbox vacuum failed: %s; check the disk", exc)
                return
        self.checkpoint(conn)

    def _refresh_files(self) -> None:
        with contextlib.suppress(OSError):
            self.free = free_bytes(self.directory)
        self.disk_bytes = file_bytes(self.db_path, self.wal_path)

    def refresh(self, conn: sqlite3.Connection) -> None:
        self._next_refresh = time.monotonic() + REFRESH_S
        self._refresh_files()
        with contextlib.suppress(sqlite3.Error):
            self.used_bytes = live_bytes(conn) + file_bytes(self.wal_path)
