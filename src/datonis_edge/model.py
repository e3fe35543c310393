"""The few value types that flow through the gateway. Imports nothing of the package."""

from __future__ import annotations

import re
from array import array
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import orjson

_BETWEEN = re.compile(rb"\},\{")  # where one event of a compact array ends and the next begins


def event_starts(events_json: bytes, n: int) -> array[int]:
    """Where each of the `n` events of `events_json` begins (the index of its `{`).

    `events_json` must be a JSON array of `n` JSON objects as orjson writes it (compact: no
    space between tokens). When `},{` occurs in it only between events (n - 1 times), that is
    where they meet: no parsing (~0.1 µs per event). Otherwise (a nested list of objects, a
    string holding `},{`) the array is parsed and each event's orjson bytes are compared with
    the bytes where it should be. Raises ValueError if it is no such array."""
    if n == 1 and events_json[:2] == b"[{" and events_json[-2:] == b"}]":
        return array("I", [1])
    starts = array("I", [1])
    starts.extend(m.end() - 1 for m in _BETWEEN.finditer(events_json))
    if len(starts) == n and events_json[:2] == b"[{" and events_json[-2:] == b"}]":
        return starts
    return _measured_starts(events_json, n)


def _measured_starts(events_json: bytes, n: int) -> array[int]:
    events = orjson.loads(events_json)  # JSONDecodeError is a ValueError
    if type(events) is not list or len(events) != n:
        raise ValueError(f"not a JSON array of {n} events")
    starts = array("I")
    at = 1
    for event in events:
        if type(event) is not dict:
            raise ValueError(f"not a JSON array of {n} objects")
        data = orjson.dumps(event)
        if events_json[at : at + len(data)] != data:
            raise ValueError("not written as orjson writes it")
        starts.append(at)
        at += len(data) + 1
    if at != len(events_json):
        raise ValueError("not written as orjson writes it")
    return starts


@dataclass(slots=True)
class Batch:
    """Events taken from the outbox in order, sent as one request; the unit of every outcome.

    The events travel as the bytes the outbox stored (`payload`, a JSON array), not as Python
    objects: an uplink puts them on the wire as they are. They are parsed only when someone
    asks for `events` (a decline record, an alert's thing_key, a split by thing)."""

    batch_id: str
    epoch: int
    cursor: tuple[int, int]  # outbox position just after the last event (segment id, index)
    count: int  # how many events
    payload: bytes | None = None  # the events as one JSON array; None: only `parsed` has them
    parsed: list[Any] | None = None  # the events as objects, once parsed (or not encodable)
    nbytes: int = 0

    @property
    def events(self) -> list[dict[str, Any]]:
        """The events, parsed on first use; each in Datonis form: thing_key, timestamp, data."""
        if self.parsed is None:
            self.parsed = [] if self.payload is None else orjson.loads(self.payload)
        return self.parsed

    def json(self) -> bytes:
        """The events as one JSON array. Raises orjson.JSONEncodeError (a TypeError) if they
        cannot be written (nesting deeper than orjson's limit, kept by an old version)."""
        if self.payload is None:
            self.payload = orjson.dumps(self.events)
        return self.payload

    def event_json(self) -> list[bytes]:
        """Each event's own bytes, cut from `json()` (the events must be JSON objects)."""
        data = self.json()
        starts = event_starts(data, self.count)
        ends = [*(s - 1 for s in starts[1:]), len(data) - 1]
        view = memoryview(data)
        return [bytes(view[s:e]) for s, e in zip(starts, ends, strict=True)]

    def envelope(self, events_json: bytes | None = None) -> bytes:
        """`{"events": [...], "epoch": e, "batch_id": id}` around these events (or the JSON
        array of some of them), byte for byte what orjson writes for that dict."""
        return b"".join(
            (
                b'{"events":',
                self.json() if events_json is None else events_json,
                b',"epoch":',
                orjson.dumps(self.epoch),
                b',"batch_id":',
                orjson.dumps(self.batch_id),
                b"}",
            )
        )


class OutcomeKind(StrEnum):
    DELIVERED = "delivered"
    DECLINED = "declined"
    RETRY = "retry"


@dataclass(slots=True)
class Outcome:
    """What the platform (or broker) said of one batch. The forwarder decides what follows."""

    kind: OutcomeKind
    status: int | None = None  # HTTP status, or None for MQTT / connection errors
    reason: str = ""
    body: str = ""
    retry_after_s: float | None = None  # from a Retry-After header
    keys_suspect: bool = False  # a 401: the credentials are probably wrong, back off and probe

    @classmethod
    def delivered(cls, status: int | None = None) -> Outcome:
        return cls(OutcomeKind.DELIVERED, status=status)
