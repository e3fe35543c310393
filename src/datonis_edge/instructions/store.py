"""DIR/instructions/: each instruction from its arrival until the platform has its ack.

    instructions/pending/<received ms>-<key digest>.json   one file per instruction
    instructions/executed.jsonl                            the keys already executed and acked

A pending file moves through three states, each written durably (temp, fsync, rename, fsync
the directory) before the gateway acts on it:

    received   verified and stored; nothing written to a machine yet
    executing  the writes have started (written just before the first one)
    executed   the writes ended; `success` and `message` are what the ack will say

Once the platform acknowledged the ack, a line is appended to executed.jsonl (fsync'ed) and
the file is removed. executed.jsonl remembers the last MAX_REMEMBERED keys of the last
REMEMBER_DAYS days, so an instruction the platform sends again is acknowledged again with
its first result, never executed twice. What a new master finds after a failover: `received`
is executed, `executing` was interrupted mid-way and is NOT repeated (at most once: it is
acknowledged `failed`, "interrupted by failover, not repeated"), `executed` is acknowledged.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections import OrderedDict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..store.durable import write_durably

MAX_REMEMBERED = 10_000
REMEMBER_DAYS = 30
INTERRUPTED = "interrupted by failover, not repeated"


@dataclass
class Record:
    alert_key: str
    thing_key: str
    timestamp: int  # the platform's, epoch ms
    instruction: dict[str, Any]
    received_ms: int
    state: str = "received"  # received | executing | executed
    success: bool | None = None
    message: str | None = None

    @property
    def file_name(self) -> str:
        digest = hashlib.sha256(self.alert_key.encode()).hexdigest()[:16]
        return f"{self.received_ms:013d}-{digest}.json"


class InstructionStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.pending_dir = root / "pending"
        self.executed_path = root / "executed.jsonl"
        # alert_key -> {"at_ms", "success", "message"} of what was executed and acknowledged
        self.executed: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self.pending: dict[str, Record] = {}  # alert_key -> record
        self._lines = 0  # lines in executed.jsonl: compacted once they reach twice the limit

    # ------------------------------------------------------------------ open / recover

    def open(self) -> list[Record]:
        """Create the folders, load what is remembered and what is pending (oldest first).
        A pending file that cannot be read is set aside as `<name>.bad`, never guessed at."""
        self.pending_dir.mkdir(parents=True, exist_ok=True)
        self._load_executed()
        records = []
        for path in sorted(self.pending_dir.glob("*.json")):
            try:
                data = json.loads(path.read_bytes())
                record = Record(**data)
            except (ValueError, TypeError):
                path.rename(path.with_suffix(".bad"))
                continue
            self.pending[record.alert_key] = record
            records.append(record)
        return records

    def _load_executed(self) -> None:
        if not self.executed_path.exists():
            return
        horizon = _now_ms() - REMEMBER_DAYS * 86_400_000
        lines = self.executed_path.read_bytes().splitlines()
        self._lines = len(lines)
        for line in lines:
            try:
                entry = json.loads(line)
                key = entry.pop("alert_key")
            except (ValueError, KeyError, AttributeError):
                continue  # a torn last line after a crash
            if entry.get("at_ms", 0) >= horizon:
                self.executed[key] = entry
                self.executed.move_to_end(key)
        while len(self.executed) > MAX_REMEMBERED:
            self.executed.popitem(last=False)
        if len(lines) > len(self.executed) + MAX_REMEMBERED // 2:
            self._compact()

    def _compact(self) -> None:
        body = b"".join(
            json.dumps({"alert_key": k, **v}).encode() + b"\n" for k, v in self.executed.items()
        )
        write_durably(self.executed_path, body)
        self._lines = len(self.executed)

    # ------------------------------------------------------------------ states

    def known(self, alert_key: str) -> str | None:
        """`pending` or `executed` for an instruction seen before, else None."""
        if alert_key in self.pending:
            return "pending"
        if alert_key in self.executed:
            return "executed"
        return None

    def add(self, record: Record) -> None:
        """Store a verified instruction (state received) before anything acts on it."""
        self._write(record)
        self.pending[record.alert_key] = record

    def executing(self, record: Record) -> None:
        record.state = "executing"
        self._write(record)

    def executed_as(self, record: Record, success: bool, message: str) -> None:
        record.state, record.success, record.message = "executed", success, message
        self._write(record)

    def acknowledged(self, record: Record) -> None:
        """The platform has the ack: remember the key, forget the file."""
        entry = {"at_ms": _now_ms(), "success": record.success, "message": record.message}
        line = json.dumps({"alert_key": record.alert_key, **entry}).encode() + b"\n"
        fd = os.open(self.executed_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
        try:
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)
        self.executed[record.alert_key] = entry
        self._lines += 1
        while len(self.executed) > MAX_REMEMBERED:
            self.executed.popitem(last=False)
        if self._lines >= 2 * MAX_REMEMBERED:
            self._compact()
        (self.pending_dir / record.file_name).unlink(missing_ok=True)
        self.pending.pop(record.alert_key, None)

    def _write(self, record: Record) -> None:
        body = json.dumps(asdict(record), separators=(",", ":")).encode()
        write_durably(self.pending_dir / record.file_name, body)


def _now_ms() -> int:
    return int(time.time() * 1000)
