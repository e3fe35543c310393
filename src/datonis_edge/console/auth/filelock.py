"""The one lock every writer of `DIR/console/` and the audit log takes: an flock of
`DIR/console/.lock` (between processes: gateways and the CLI) plus a thread lock (between
threads of one process, which an flock emulated over NFS would not separate)."""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
from collections.abc import Iterator
from pathlib import Path

_thread_lock = threading.Lock()


@contextlib.contextmanager
def console_lock(console_dir: Path) -> Iterator[None]:
    console_dir.mkdir(parents=True, exist_ok=True)
    with _thread_lock:
        fd = os.open(console_dir / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the flock
