"""The few value types that flow through the gateway. Imports nothing of the package."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any


@dataclass(slots=True)
class Batch:
    """Events taken from the outbox in order, sent as one request; the unit of every outcome."""

    batch_id: str
    epoch: int
    events: list[dict[str, Any]]  # each in Datonis form: thing_key, timestamp, data
    cursor: tuple[int, int]  # outbox position just after the last event (segment id, index)
    nbytes: int = 0


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
