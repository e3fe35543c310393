"""The alert log: every alert as one JSON line in DIR/log/alerts.log, rotated by size
(alerts.log.1 .. .3 kept). The supervisor writes it (an `Alerts` listener); the console's
Alerts page reads it, on master and standby alike."""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import Any

import orjson

log = logging.getLogger("datonis_edge.console")

MAX_BYTES = 1 << 20
KEEP = 3


class AlertLog:
    def __init__(self, datadir: Path, max_bytes: int = MAX_BYTES) -> None:
        self.path = datadir / "log" / "alerts.log"
        self.max_bytes = max_bytes
        self._failed = False

    def write(self, alert: Any) -> None:
        """An `Alerts` listener (called on the loop: one short append, no fsync)."""
        line = orjson.dumps(
            {
                "at_ms": alert.at_ms,
                "level": alert.level,
                "message": alert.message,
                "thing_key": alert.thing_key,
            }
        )
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(FileNotFoundError):
                if self.path.stat().st_size + len(line) > self.max_bytes:
                    self._rotate()
            with self.path.open("ab") as f:
                f.write(line + b"\n")
        except OSError as exc:
            if not self._failed:
                log.warning("cannot write the alert log %s (%s); check the disk", self.path, exc)
            self._failed = True
            return
        if self._failed:
            log.info("the alert log %s is written again", self.path)
            self._failed = False

    def _rotate(self) -> None:
        for i in range(KEEP - 1, 0, -1):
            older = self.path.with_name(f"alerts.log.{i}")
            if older.exists():
                os.replace(older, self.path.with_name(f"alerts.log.{i + 1}"))
        os.replace(self.path, self.path.with_name("alerts.log.1"))

    def read(self, limit: int = 1000) -> list[dict[str, Any]]:
        """The newest `limit` alerts, newest first (the current file, then alerts.log.1)."""
        out: list[dict[str, Any]] = []
        for path in (self.path, self.path.with_name("alerts.log.1")):
            try:
                lines = path.read_bytes().splitlines()
            except OSError:
                continue
            for line in reversed(lines):
                with contextlib.suppress(orjson.JSONDecodeError):
                    out.append(orjson.loads(line))
                if len(out) >= limit:
                    return out
        return out
