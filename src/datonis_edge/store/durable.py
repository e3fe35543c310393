"""Writing a small file so that readers and a crash see the old content or the new, never half:
written once, used for ha/ (epoch, master.json), declined/ records and config/edge.yaml."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def write_durably(path: Path, data: bytes, durable: bool = True, mode: int = 0o640) -> None:
    """Temp file, (fsync), rename, (fsync the directory). `durable=False` skips the fsyncs
    (a heartbeat rewritten every second: the next one replaces it anyway)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        try:
            view = memoryview(data)
            while view:  # a short write is possible on a nearly full disk
                view = view[os.write(fd, view) :]
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):  # a full disk leaves no half-written temp file
            tmp.unlink()
        raise
    if durable:
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
