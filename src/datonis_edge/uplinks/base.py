"""The northbound interface: an uplink turns one Batch into one Outcome.

It knows nothing of retries, backoff, the outbox or the declined store: the forwarder owns
those and applies DESIGN.md's outcome table. An uplink never raises for a platform or network
fault; it answers RETRY with the reason.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

from ..model import Batch, Outcome
from ..status import PartStatus


class Uplink(ABC):
    type: str = "uplink"

    def __init__(self, name: str) -> None:
        self.status = PartStatus(name=name, type=self.type)

    async def start(self) -> None:  # noqa: B027 - optional hook
        """Connect if the transport needs it; failures show in status, send() answers RETRY."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        pass

    @abstractmethod
    async def send(self, batch: Batch) -> Outcome:
        """Deliver one batch; DELIVERED only once the far side acknowledged it."""

    async def heartbeat(self, thing_keys: list[str]) -> Outcome:
        return Outcome.delivered()

    async def alert(
        self, thing_key: str | None, level: str, message: str, extra: dict[str, Any] | None = None
    ) -> Outcome:
        return Outcome.delivered()
