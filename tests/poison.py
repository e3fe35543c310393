"""Poison in the outbox: segments written straight into a stopped gateway's outbox.db, as an
old version (or a bug) may have left them: bytes that do not decode, events too deep to encode."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any


def deep(levels: int) -> Any:
    """A value nested `levels` deep: orjson reads up to 1024 levels but writes at most 254."""
    value: Any = 1
    for _ in range(levels):
        value = [value]
    return value


def event(seq: int, thing_key: str = "m1", **data: Any) -> dict[str, Any]:
    return {
        "thing_key": thing_key,
        "timestamp": 1_700_000_000_000 + seq,
        "data": {"seq": seq, **data},
    }


def segment(*events: dict[str, Any]) -> tuple[bytes, int]:
    # the standard library's json: orjson refuses to write the deep ones
    return json.dumps(list(events)).encode(), len(events)


def append_segments(datadir: Path, segments: list[tuple[bytes, int]]) -> None:
    """Append rows to the outbox of a stopped gateway (schema: store/outbox.py)."""
    conn = sqlite3.connect(datadir / "outbox" / "outbox.db")
    try:
        conn.execute("PRAGMA locking_mode=EXCLUSIVE")
        with conn:
            for payload, n in segments:
                conn.execute(
                    "INSERT INTO segments(n, nbytes, created_ms, payload) VALUES (?, ?, ?, ?)",
                    (n, len(payload), int(time.time() * 1000), payload),
                )
            conn.execute(
                "UPDATE counters SET value = value + ? WHERE name = 'accepted'",
                (sum(n for _, n in segments),),
            )
    finally:
        conn.close()
