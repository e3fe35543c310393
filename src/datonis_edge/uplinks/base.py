"""The northbound interface: an uplink turns one Batch into one Outcome.

It knows nothing of retries, backoff, the outbox or the declined store: the forwarder owns
those and applies DESIGN.md's outcome table. An uplink never raises for a platform or network
fault; it answers RETRY with the reason.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

from ..model import Batch, Outcome
from ..registry import Plugin
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


def _uplink(protocols: tuple[str, ...], folder: str, config: str, uplink: str) -> list[Plugin]:
    ref = f"{folder}.config:{config}", f"{folder}.uplink:{uplink}"
    return [Plugin(p, *ref, __package__) for p in protocols]


# one line per northbound transport: its `cloud.protocol` values, its config model, its uplink
REGISTRY: dict[str, Plugin] = {
    p.name: p
    for p in (
        *_uplink(("https", "http"), "datonis_http", "DatonisHttpCloud", "DatonisHttpUplink"),
        *_uplink(("mqtt",), "mqtt_broker", "MqttBrokerCloud", "MqttBrokerUplink"),
    )
}


def make_uplink(cloud: Any) -> Uplink:
    """The uplink for a cloud config (chosen by its `protocol`), imported on first use."""
    return REGISTRY[cloud.protocol].load()(cloud)
