"""The epoch (fencing token) and the who-is-master / standby files under `<datadir>/ha/`."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

import orjson


def write_atomic(path: Path, data: bytes, durable: bool = True) -> None:
    """Temp file, (fsync), rename, (fsync the directory): readers see old or new, never half."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
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


class HaFiles:
    def __init__(self, datadir: str | os.PathLike[str]) -> None:
        self.dir = Path(datadir) / "ha"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.lock_path = self.dir / "lock"
        self.epoch_path = self.dir / "epoch"
        self.master_path = self.dir / "master.json"
        self.standby_dir = self.dir / "standby"

    def read_epoch(self) -> int:
        try:
            text = self.epoch_path.read_text().strip()
        except FileNotFoundError:
            return 0
        return int(text) if text.isdigit() else 0

    def bump_epoch(self) -> int:
        """Only the lock holder calls this: read, add one, write durably."""
        epoch = self.read_epoch() + 1
        write_atomic(self.epoch_path, f"{epoch}\n".encode())
        return epoch

    def write_master(self, info: dict[str, Any], durable: bool = False) -> None:
        write_atomic(self.master_path, orjson.dumps(info, option=orjson.OPT_INDENT_2), durable)

    def read_master(self) -> dict[str, Any] | None:
        try:
            return orjson.loads(self.master_path.read_bytes())
        except (FileNotFoundError, orjson.JSONDecodeError):
            return None

    def write_standby(self, instance_id: str, info: dict[str, Any]) -> None:
        self.standby_dir.mkdir(exist_ok=True)
        write_atomic(self.standby_dir / f"{instance_id}.json", orjson.dumps(info), durable=False)

    def remove_standby(self, instance_id: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.standby_dir / f"{instance_id}.json").unlink()

    def read_standbys(self) -> list[dict[str, Any]]:
        if not self.standby_dir.is_dir():
            return []
        out = []
        for p in sorted(self.standby_dir.glob("*.json")):
            with contextlib.suppress(OSError, orjson.JSONDecodeError):
                out.append(orjson.loads(p.read_bytes()))
        return out
