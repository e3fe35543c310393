"""How much room the data directory has, what the outbox's files really take, and the reserve.

A full disk is a state of the outbox, not a crash. When SQLite reports SQLITE_FULL (ENOSPC),
the outbox releases its *reserve*, a preallocated file in `outbox/`: that gives SQLite room to
write what frees space (delivery acks, checkpoints that truncate the WAL, incremental vacuum
steps that shrink `outbox.db`) and the supervisor room for its heartbeat. The reserve is made
again once the filesystem has room, and readings are accepted again.

Everything here is a plain file operation; the SQLite side lives in `outbox.py` / `room.py`.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sqlite3
from pathlib import Path

RESERVE_NAME = "reserve"
_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


def is_disk_full(exc: BaseException) -> bool:
    """ENOSPC or a quota, as an OSError or as SQLite's SQLITE_FULL."""
    if isinstance(exc, OSError):
        return exc.errno in _FULL_ERRNOS
    if isinstance(exc, sqlite3.Error):
        code = getattr(exc, "sqlite_errorcode", None)
        return code is not None and code & 0xFF == sqlite3.SQLITE_FULL
    return False


def is_damage(exc: BaseException) -> bool:
    """SQLite says the file is not a (sound) database: SQLITE_CORRUPT or SQLITE_NOTADB."""
    if not isinstance(exc, sqlite3.DatabaseError):
        return False
    code = getattr(exc, "sqlite_errorcode", None)
    if code is None:  # an error raised without a code: judge by the words
        text = str(exc)
        return "malformed" in text or "not a database" in text
    return code & 0xFF in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB)


def free_bytes(path: str | os.PathLike[str]) -> int:
    """Bytes an unprivileged writer may still use on the filesystem holding `path`."""
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def fs_bytes(path: str | os.PathLike[str]) -> int:
    """The size of the filesystem holding `path`."""
    st = os.statvfs(path)
    return st.f_blocks * st.f_frsize


def file_bytes(*paths: str | os.PathLike[str]) -> int:
    """What the files take on disk (allocated blocks, not their apparent size); 0 if absent."""
    total = 0
    for p in paths:
        with contextlib.suppress(FileNotFoundError):
            total += os.stat(p).st_blocks * 512
    return total


def tree_bytes(directory: str | os.PathLike[str]) -> int:
    """What every file under `directory` takes on disk (e.g. `declined/`); 0 if absent."""
    total = 0
    for root, _dirs, files in os.walk(directory):
        for name in files:
            total += file_bytes(os.path.join(root, name))
    return total


def mount_point(path: str | os.PathLike[str]) -> Path:
    """The mount point of the filesystem holding `path` (for messages: "free space on /data")."""
    p = Path(path).resolve()
    while not os.path.ismount(p) and p != p.parent:
        p = p.parent
    return p


class Reserve:
    """A preallocated file whose blocks are given back to the filesystem when it is full."""

    def __init__(self, directory: str | os.PathLike[str], size: int) -> None:
        self.path = Path(directory) / RESERVE_NAME
        self.size = size

    @property
    def held(self) -> bool:
        return file_bytes(self.path) >= self.size

    def make(self) -> bool:
        """Allocate the reserve (a no-op if it is there). False, and nothing left, if no room."""
        if self.held:
            return True
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o644)
            try:
                try:
                    os.posix_fallocate(fd, 0, self.size)
                except OSError as exc:
                    if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
                        raise
                    os.pwrite(fd, b"\0" * self.size, 0)  # a filesystem without fallocate
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            self.release()
            if is_disk_full(exc):
                return False
            raise
        return True

    def release(self) -> int:
        """Give the reserve's blocks back; returns how many bytes that freed."""
        freed = file_bytes(self.path)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        return freed
