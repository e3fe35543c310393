"""A real small filesystem for disk-full tests: a tmpfs mounted by the test (we run as root
here and in CI), always unmounted. Skipped, with the reason, only where mounting is refused."""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


@contextmanager
def tmpfs(path: Path, size: str = "8m") -> Iterator[Path]:
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        why = done.stderr.strip()
        refused = ("permission denied", "superuser", "not permitted", os.strerror(errno.EPERM))
        if os.geteuid() != 0 or any(w.lower() in why.lower() for w in refused):
            pytest.skip(f"cannot mount a tmpfs here (EPERM: {why}); disk-full tests need root")
        raise RuntimeError(f"mount tmpfs on {path} failed: {why}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def fill(path: Path) -> int:
    """Write `path` until the filesystem is full; returns how many bytes it took."""
    written = 0
    chunk = b"\0" * 4096
    with open(path, "ab", buffering=0) as f:
        for size in (1 << 20, 1 << 16, 4096, 512, 1):
            block = chunk * (size // 4096) if size >= 4096 else chunk[:size]
            while True:
                try:
                    written += f.write(block)
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    break
    return written
