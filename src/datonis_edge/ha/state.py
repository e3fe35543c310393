"""The epoch (fencing token) and the who-is-master / standby files under `<datadir>/ha/`."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

import orjson

from ..store.durable import write_durably


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
        write_durably(self.epoch_path, f"{epoch}\n".encode(), mode=0o644)
        return epoch

    def write_master(self, info: dict[str, Any], durable: bool = False) -> None:
        write_durably(
            self.master_path, orjson.dumps(info, option=orjson.OPT_INDENT_2), durable, mode=0o644
        )

    def read_master(self) -> dict[str, Any] | None:
        try:
            return orjson.loads(self.master_path.read_bytes())
        except (FileNotFoundError, orjson.JSONDecodeError):
            return None

    def write_standby(self, instance_id: str, info: dict[str, Any]) -> None:
        self.standby_dir.mkdir(exist_ok=True)
        write_durably(
            self.standby_dir / f"{instance_id}.json", orjson.dumps(info), durable=False, mode=0o644
        )

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
