"""Declined batches: what the platform refused (401, 400, 422), kept in `<datadir>/declined/`.

One JSON file per batch, written durably (temp file, fsync, rename, fsync the directory), named
after the batch id so that declining the same batch twice (a crash between `decline` and the
outbox ack) keeps one file. A file renamed to `*.replay` is a replay request: the master puts
its events back into the outbox and removes it. Plain files, so an operator can read them.
"""

from __future__ import annotations

import contextlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from .durable import write_durably

# no dots: the id is the file name without its suffix (.json, or .replay once marked)
_SAFE = re.compile(r"[^A-Za-z0-9_-]")
_SUFFIXES = (".json", ".replay")


def _id_of(path: Path) -> str:
    return path.name.removesuffix(path.suffix) if path.suffix in _SUFFIXES else path.name


@dataclass
class DeclinedBatch:
    id: str
    path: Path
    batch_id: str
    epoch: int
    status: int | None
    reason: str
    response_body: str
    declined_at_ms: int
    count: int
    thing_keys: list[str]
    replay_requested: bool
    events: list[dict[str, Any]] | None = None

    def summary(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "batch_id": self.batch_id,
            "epoch": self.epoch,
            "status": self.status,
            "reason": self.reason,
            "response_body": self.response_body,
            "declined_at_ms": self.declined_at_ms,
            "count": self.count,
            "thing_keys": self.thing_keys,
            "replay_requested": self.replay_requested,
        }


class DeclinedStore:
    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)

    def ensure(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)

    def decline(
        self,
        *,
        batch_id: str,
        epoch: int,
        events: list[dict[str, Any]],
        status: int | None,
        reason: str,
        response_body: str,
        declined_at_ms: int,
    ) -> DeclinedBatch:
        self.ensure()
        ident = _SAFE.sub("_", f"{declined_at_ms:013d}-{batch_id}")
        # the same batch declined again after a crash keeps its first file
        for existing in self.directory.glob(f"*-{_SAFE.sub('_', batch_id)}.json"):
            ident = existing.stem
        record = {
            "batch_id": batch_id,
            "epoch": epoch,
            "status": status,
            "reason": reason,
            "response_body": response_body[:4096],
            "declined_at_ms": declined_at_ms,
            "count": len(events),
            "thing_keys": sorted({str(e.get("thing_key")) for e in events if isinstance(e, dict)}),
            "events": events,
        }
        path = self.directory / f"{ident}.json"
        write_durably(path, orjson.dumps(record, option=orjson.OPT_INDENT_2))
        return self._parse(path, record, with_events=False)

    def _parse(self, path: Path, rec: dict[str, Any], with_events: bool) -> DeclinedBatch:
        return DeclinedBatch(
            id=_id_of(path),
            path=path,
            batch_id=str(rec.get("batch_id", "")),
            epoch=int(rec.get("epoch", 0)),
            status=rec.get("status"),
            reason=str(rec.get("reason", "")),
            response_body=str(rec.get("response_body", "")),
            declined_at_ms=int(rec.get("declined_at_ms", 0)),
            count=int(rec.get("count", len(rec.get("events", [])))),
            thing_keys=list(rec.get("thing_keys", [])),
            replay_requested=path.suffix == ".replay",
            events=rec.get("events") if with_events else None,
        )

    def _files(self) -> list[Path]:
        if not self.directory.is_dir():
            return []
        files = [
            p
            for p in self.directory.iterdir()
            if p.suffix in _SUFFIXES and not p.name.startswith(".")
        ]
        return sorted(files, key=lambda p: p.name)

    def list(self, with_events: bool = False) -> list[DeclinedBatch]:
        out = []
        for p in self._files():
            try:
                rec = orjson.loads(p.read_bytes())
            except (OSError, orjson.JSONDecodeError):
                continue  # a file removed meanwhile, or not ours
            out.append(self._parse(p, rec, with_events))
        return out

    def find(self, ids: list[str] | None) -> list[DeclinedBatch]:
        items = self.list()
        if not ids:
            return items
        # the id (what alerts, the console and `declined list` show), the file name, or batch id
        wanted = {i.removeprefix("declined/") for i in ids}
        return [d for d in items if wanted & {d.id, d.path.name, d.batch_id}]

    def request_replay(self, item: DeclinedBatch) -> Path:
        """Mark for replay: the master (now or next to start) moves it back into the outbox."""
        if item.path.suffix == ".replay":
            return item.path
        target = item.path.with_suffix(".replay")
        os.replace(item.path, target)
        return target

    def replay_requests(self) -> list[DeclinedBatch]:
        return [d for d in self.list(with_events=True) if d.replay_requested]

    def remove(self, item: DeclinedBatch) -> None:
        with contextlib.suppress(FileNotFoundError):
            item.path.unlink()

    def count(self) -> int:
        return len(self._files())
