"""Is there a live master of a data directory? Asked from outside: the CLI, a starting instance.

Two witnesses. The lock: a non-blocking *test* (F_OFD_GETLK, else F_GETLK) on `ha/lock` says
whether some process holds it, without ever taking it. The heartbeat: `ha/master.json` is
rewritten every heartbeat interval, so an old one means its writer is dead or stuck.
A master is live when its heartbeat is fresh and the lock is held (or cannot be tested).

Call this only from a process that does not hold the lock: the descriptor opened here is
closed again, and closing a descriptor drops the classic POSIX locks of the whole process.
"""

from __future__ import annotations

import errno
import fcntl
import os
import struct
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

_OFD_GETLK = getattr(fcntl, "F_OFD_GETLK", None)
_FLOCK = "hhqqi4x"  # struct flock on Linux: l_type, l_whence, l_start, l_len, l_pid
MIN_LIMIT_S = 5.0
DEFAULT_HEARTBEAT_S = 1.0


def lock_is_held(path: Path) -> bool | None:
    """True: some process holds the lock; False: nobody does; None: it cannot be tested."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    except OSError:
        return None
    try:
        query = struct.pack(_FLOCK, fcntl.F_WRLCK, os.SEEK_SET, 0, 0, 0)
        for cmd in (_OFD_GETLK, fcntl.F_GETLK):
            if cmd is None:
                continue
            try:
                answer = fcntl.fcntl(fd, cmd, query)
            except OSError as exc:
                if exc.errno == errno.EINVAL:  # no OFD locks on this filesystem: try classic
                    continue
                return None
            return struct.unpack(_FLOCK, answer)[0] != fcntl.F_UNLCK
        return None
    finally:
        os.close(fd)


@dataclass
class MasterView:
    """What a data directory says about its master, and whether that master is alive."""

    info: dict[str, Any] | None  # ha/master.json, None if no master ever ran
    lock_held: bool | None
    heartbeat_age_s: float | None
    limit_s: float

    @property
    def heartbeat_fresh(self) -> bool:
        return self.heartbeat_age_s is not None and self.heartbeat_age_s <= self.limit_s

    @property
    def live(self) -> bool:
        return self.heartbeat_fresh and self.lock_held is not False

    @property
    def occupied(self) -> bool:
        """Some instance is master now (perhaps hung): it holds the lock, or beats if untestable."""
        return self.lock_held is True or (self.lock_held is None and self.heartbeat_fresh)

    @property
    def name(self) -> str:
        if not self.info:
            return "another instance"
        return f"{self.info.get('instance_id', '?')} on {self.info.get('host', '?')}"

    def why_not_live(self) -> str:
        """One sentence for `status` when `live` is False."""
        if not self.info:
            if self.lock_held:
                return "no live master: an instance holds the lock but has not announced itself yet"
            return "no live master: none has run yet"
        beat = f"last heartbeat {self.heartbeat_age_s:.1f} s ago"
        if self.lock_held is False:
            return f"no live master: the last one, {self.name}, stopped ({beat}; the lock is free)"
        return (
            f"no live master: the last one, {self.name}, holds the lock but its {beat} "
            f"(limit {self.limit_s:.0f} s): it is hung or its storage stalled"
        )


def master_view(datadir: Path, now_s: float | None = None) -> MasterView:
    try:  # not through HaFiles: that creates ha/, and this only looks
        info = orjson.loads((Path(datadir) / "ha" / "master.json").read_bytes())
    except (OSError, orjson.JSONDecodeError):
        info = None
    interval_s = DEFAULT_HEARTBEAT_S
    age = None
    if info:
        interval_s = float(info.get("heartbeat_interval_ms", 1000 * DEFAULT_HEARTBEAT_S)) / 1000
        now_ms = (time.time() if now_s is None else now_s) * 1000
        age = max(0.0, (now_ms - float(info.get("heartbeat_ms", 0))) / 1000)
    return MasterView(
        info=info,
        lock_held=lock_is_held(Path(datadir) / "ha" / "lock"),
        heartbeat_age_s=age,
        limit_s=max(MIN_LIMIT_S, 3 * interval_s),
    )
