"""The audit log: one JSON line per change (who, what, when, from where) in `DIR/log/audit.log`.

Master, standbys and the CLI all append to it: each record is opened, appended (O_APPEND, one
write), fsync'ed and closed, so processes never hold a stale descriptor across a rotation.
Past `max_bytes` the file is rotated under the console's lock: audit.log.1 ... audit.log.N."""

from __future__ import annotations

import getpass
import os
import socket
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ...logs import json_line
from .filelock import console_lock

MAX_BYTES = 5 << 20
BACKUPS = 5


def cli_origin() -> str:
    """Where a change from the command line comes from."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = f"uid {os.geteuid()}"
    return f"cli {user}@{socket.gethostname()}"


class AuditLog:
    def __init__(self, datadir: Path, max_bytes: int = MAX_BYTES, backups: int = BACKUPS) -> None:
        self.path = datadir / "log" / "audit.log"
        self.max_bytes = max_bytes
        self.backups = backups
        self._console_dir = datadir / "console"

    def record(self, actor: str, action: str, origin: str, **details: Any) -> None:
        """Append one record: `actor` did `action` from `origin` (address or `cli user@host`)."""
        entry = {
            "time": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "actor": actor,
            "action": action,
            "from": origin,
            **details,
        }
        line = json_line(entry)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            size = self.path.stat().st_size
            if size and size + len(line) > self.max_bytes:
                self._rotate(len(line))  # first, so that audit.log holds the newest record
        except FileNotFoundError:
            pass
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        try:
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)

    def _rotate(self, adding: int) -> None:
        with console_lock(self._console_dir):
            try:
                if self.path.stat().st_size + adding <= self.max_bytes:
                    return  # another process rotated it meanwhile
            except FileNotFoundError:
                return
            for n in range(self.backups - 1, 0, -1):
                older = self.path.with_name(f"{self.path.name}.{n}")
                if older.exists():
                    os.replace(older, self.path.with_name(f"{self.path.name}.{n + 1}"))
            os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))

    def tail(self, limit: int = 100) -> list[dict[str, Any]]:
        """The last `limit` records, oldest first (for a console page)."""
        import orjson

        try:
            lines = self.path.read_bytes().splitlines()[-limit:]
        except FileNotFoundError:
            return []
        out = []
        for raw in lines:
            try:
                out.append(orjson.loads(raw))
            except orjson.JSONDecodeError:
                continue
        return out
