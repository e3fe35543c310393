"""The data-directory lock `<datadir>/ha/lock`.

An exclusive POSIX lock held for the master's whole life on one descriptor: an OFD lock
(F_OFD_SETLK) where the kernel has it, else lockf. The kernel drops it when the process dies,
so a crashed master frees its data directory at once (on NFSv4, when the lease expires).
Never opened twice in one process (closing any descriptor of the file would drop a classic
POSIX lock), never truncated, never deleted.
"""

from __future__ import annotations

import errno
import fcntl
import os
import struct
from pathlib import Path

_OFD_SETLK = getattr(fcntl, "F_OFD_SETLK", None)


def _flock_struct(kind: int) -> bytes:
    # struct flock on Linux: short l_type, short l_whence, off_t l_start, off_t l_len, pid_t l_pid
    return struct.pack("hhqqi4x", kind, os.SEEK_SET, 0, 0, 0)


class DataDirLock:
    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        self.held = False
        self.kind = "ofd" if _OFD_SETLK is not None else "posix"

    def try_acquire(self) -> bool:
        """Take the lock without waiting. True: we are master now (or already were)."""
        if self.held:
            return True
        try:
            if _OFD_SETLK is not None:
                try:
                    fcntl.fcntl(self._fd, _OFD_SETLK, _flock_struct(fcntl.F_WRLCK))
                except OSError as exc:
                    if exc.errno == errno.EINVAL:  # filesystem without OFD locks
                        self.kind = "posix"
                        fcntl.lockf(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    else:
                        raise
            else:
                fcntl.lockf(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                return False
            raise
        self.held = True
        return True

    def release(self) -> None:
        if not self.held:
            return
        if self.kind == "ofd" and _OFD_SETLK is not None:
            fcntl.fcntl(self._fd, _OFD_SETLK, _flock_struct(fcntl.F_UNLCK))
        else:
            fcntl.lockf(self._fd, fcntl.LOCK_UN)
        self.held = False

    def close(self) -> None:
        self.release()
        os.close(self._fd)
