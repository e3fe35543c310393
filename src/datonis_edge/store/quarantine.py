"""Poison batches: what fails on this side of the wire goes to `declined/`, never blocks the queue.

Two kinds, both a bug or bad data rather than a network fault, so sending again cannot help:

- an outbox segment whose stored bytes do not read back (invalid JSON left by an old bug, a
  torn or hand-edited row, bytes that no longer match their checksum): `find_undecodable`
  names it so that the forwarder can settle it in order, and its raw bytes are kept in the
  declined record (`raw_payload`, as text, or base64 when they are not UTF-8);
- events the uplink cannot encode (nesting deeper than orjson's limit, ...): `decline_locally`
  keeps them even when orjson cannot write them, so that they can be inspected, fixed and
  replayed like any declined batch.

A local decline has `status: null`, `local: true` and a reason naming the exception.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
from dataclasses import dataclass
from typing import Any

import orjson

from .declined import DeclinedBatch, DeclinedStore
from .durable import write_durably
from .outbox import Cursor, Outbox


@dataclass
class Undecodable:
    """The first segment after a cursor that cannot be read, and how many good events precede it."""

    good_before: int  # events between the cursor and this segment that do decode
    segment: int
    begin: int  # index of its first unacknowledged event
    n: int  # events the row says it holds
    raw: bytes
    error: str

    @property
    def count(self) -> int:
        return max(self.n - self.begin, 0)


async def find_undecodable(outbox: Outbox, start: Cursor, max_events: int) -> Undecodable | None:
    """After a failed `outbox.read(start, max_events)`: the segment that made it fail, if any."""
    found = await outbox.first_unreadable(start, max_events)
    return None if found is None else Undecodable(*found)


def decline_locally(
    declined: DeclinedStore,
    *,
    batch_id: str,
    epoch: int,
    events: list[Any],
    reason: str,
    declined_at_ms: int,
    undecodable: Undecodable | None = None,
) -> DeclinedBatch:
    """Keep a batch that failed here in `declined/` (status null), whatever its bytes are."""
    extra: dict[str, Any] = {"local": True}
    try:
        item = declined.decline(
            batch_id=batch_id,
            epoch=epoch,
            events=events,
            status=None,
            reason=reason,
            response_body="",
            declined_at_ms=declined_at_ms,
        )
    except (orjson.JSONEncodeError, TypeError, ValueError):
        # orjson cannot write these events (too deep, ...): keep them in a form that can
        item = declined.decline(
            batch_id=batch_id,
            epoch=epoch,
            events=[],
            status=None,
            reason=reason,
            response_body="",
            declined_at_ms=declined_at_ms,
        )
        extra.update(count=len(events), events=events)
    if undecodable is not None:
        extra.update(
            _raw(
                undecodable.raw,
                f"outbox segment {undecodable.segment} as stored ({undecodable.n} events, the "
                f"first {undecodable.begin} of them already sent); it did not decode: "
                f"{undecodable.error}",
                undecodable.count,
            )
        )
    _amend(item, extra)
    return item


def keep_raw(item: DeclinedBatch, raw: bytes, note: str, count: int) -> None:
    """Add a batch's bytes to its declined record, for events that could not be parsed."""
    _amend(item, _raw(raw, note, count))


def _raw(raw: bytes, note: str, count: int) -> dict[str, Any]:
    extra: dict[str, Any] = {"count": count, "raw_payload_note": note}
    try:
        extra["raw_payload"] = raw.decode("utf-8")
    except UnicodeDecodeError:
        extra["raw_payload"] = base64.b64encode(raw).decode("ascii")
        extra["raw_payload_encoding"] = "base64"
    return extra


def _amend(item: DeclinedBatch, extra: dict[str, Any]) -> None:
    record = orjson.loads(item.path.read_bytes())
    record.update(extra)
    try:
        data = orjson.dumps(record, option=orjson.OPT_INDENT_2)
    except (orjson.JSONEncodeError, TypeError):
        try:  # the standard library nests as deep as Python's recursion limit allows
            data = json.dumps(record, indent=2, ensure_ascii=False).encode()
        except (RecursionError, TypeError, ValueError):
            events = record.pop("events", [])
            record["events"] = []
            record["events_text"] = repr(events)
            data = orjson.dumps(record, option=orjson.OPT_INDENT_2)
    write_durably(item.path, data)
    item.count = int(record.get("count", item.count))


def cancel_replay(item: DeclinedBatch) -> None:
    """Unmark a replay request that cannot be carried out: the batch stays declined."""
    if item.path.suffix == ".replay":
        with contextlib.suppress(FileNotFoundError):
            os.replace(item.path, item.path.with_suffix(".json"))
