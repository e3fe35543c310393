"""Following one agent's sequence: every observation the agent holds is handed on exactly once.

The position is `next`, the first sequence not yet handed on; it moves only after the sink
took the observations, so a failed store re-reads them. `/current` starts it (its values are
the machine's state), then `/sample?from=next` reads on, by interval polling or as a long
poll. Every answer's `instanceId` is checked: a new one means the agent restarted (its buffer
and sequence are new), so the data items are probed again and the new instance is read from
its first sequence. When `next` has fallen out of the agent's buffer (`OUT_OF_RANGE`, or
`firstSequence` beyond it), what the buffer still holds is read from `firstSequence` on, the
latest value of each data item changed in the gap is taken from `/current`, and the gap (the
observations the agent dropped before they were read) is counted and reported.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from ..base import ticks
from .client import AgentClient
from .config import MtconnectAgent, MtconnectService
from .documents import AgentError, BadDocument, DataItem, Observation, parse_devices, parse_streams
from .position import Positions


class InstanceChanged(Exception):
    def __init__(self, old: str, new: str) -> None:
        super().__init__(f"instance {old} became {new}")
        self.old, self.new = old, new


class OutOfRange(Exception):
    pass


@dataclass
class Gap:
    agent: str
    first_missing: int
    count: int  # observations the agent dropped before they were read


Deliver = Callable[["Follower", list[Observation]], Awaitable[None]]


class Follower:
    def __init__(
        self,
        agent: MtconnectAgent,
        service: MtconnectService,
        client: AgentClient,
        deliver: Deliver,
        on_event: Callable[[str, Any], None],
        positions: Positions,
    ) -> None:
        self.agent = agent
        self.service = service
        self.client = client
        self.deliver = deliver
        self.on_event = (
            on_event  # ("probed", items), ("read", None), ("gap", Gap), ("restart", ...)
        )
        self.positions = positions
        self.saved = positions.load(agent.name)  # where a previous run got to
        self.instance: str | None = None
        self.next: int | None = None
        self.pending: InstanceChanged | OutOfRange | None = None  # being handled
        self.items: dict[str, DataItem] = {}
        self.state: dict[str, Any] = {
            "name": agent.name,
            "url": client.base,
            "connected": False,
            "instance_id": None,
            "next_sequence": None,
            "last_error": None,
            "last_good_read_ms": None,
            "requests": 0,
            "errors": 0,  # reads that failed: no answer, or not a usable document
            "observations": 0,
            "gaps": 0,
            "lost_observations": 0,
            "agent_restarts": 0,
        }

    @property
    def where(self) -> str:
        return f"agent {self.agent.name} at {self.state['url']}"

    async def follow(self) -> None:
        """Read the agent until cancelled; raises on any fault (the caller backs off and calls
        again: the position, and a restart or overrun still being handled, are kept, so
        nothing is read twice or skipped)."""
        while True:
            try:
                if isinstance(self.pending, InstanceChanged):
                    await self.probe()
                    await self.resync(1)  # the new instance is read from its first sequence
                elif isinstance(self.pending, OutOfRange):
                    await self.resync(self.next)
                if self.instance is None:
                    await self.probe()
                if self.next is None and self.saved is not None:
                    saved, self.saved = self.saved, None
                    if saved[0] != self.instance:  # it restarted while we were away
                        raise InstanceChanged(saved[0], self.instance or "")
                    self.next = saved[1]  # go on where the previous run stopped
                if self.next is None:
                    await self.resync(None)
                self.pending = None
                if self.service.mode == "polling":
                    await self._poll()
                else:
                    await self._stream()
            except InstanceChanged as change:
                self.state["agent_restarts"] += 1
                self.on_event("restart", change)
                self.pending = change
            except OutOfRange as overrun:
                self.pending = overrun

    async def probe(self) -> None:
        header, items = parse_devices(await self._get("probe"))
        self.items = {i.id: i for i in items}
        self.instance = header.instance_id
        self.state["instance_id"] = self.instance
        self.on_event("probed", self.items)

    async def resync(self, lower: int | None) -> None:
        """Take /current. `lower` None: its values are the start. Else observations from
        `lower` on are wanted: those the buffer still holds are read by sample from its first
        sequence; of those it dropped, /current holds each data item's latest."""
        doc = parse_streams(await self._get("current"))
        if isinstance(doc, AgentError):
            raise BadDocument(f"the agent answered an error to /current: {doc.text}")
        header = doc.header
        if header.instance_id != self.instance:
            raise InstanceChanged(self.instance or "", header.instance_id)
        if lower is None:
            await self._hand_on(doc.observations, header.next)
            return
        if lower >= header.first:
            self.next = lower  # nothing lost after all (the buffer moved back into reach)
            return
        kept = [o for o in doc.observations if lower <= o.sequence < header.first]
        count = header.first - lower - len(kept)
        self.state["gaps"] += 1
        self.state["lost_observations"] += count
        self.on_event("gap", Gap(self.agent.name, lower, count))
        await self._hand_on(kept, header.first)

    async def _get(self, path: str, **params: Any) -> bytes:
        try:
            return await self.client.get(path, **params)
        finally:
            self.state["requests"] = self.client.requests

    async def _hand_on(self, observations: list[Observation], next_sequence: int) -> None:
        if observations:
            await self.deliver(self, observations)
            self.state["observations"] += len(observations)
        self.next = next_sequence
        if self.instance is not None:
            self.positions.save(self.agent.name, self.instance, next_sequence)
        self.state.update(
            requests=self.client.requests,
            next_sequence=next_sequence,
            connected=True,
            last_error=None,
            last_good_read_ms=int(time.time() * 1000),
        )
        self.on_event("read", None)

    async def _take(self, body: bytes) -> bool:
        """One /sample answer; True when the agent holds more than it gave."""
        doc = parse_streams(body)
        if isinstance(doc, AgentError):
            if "OUT_OF_RANGE" in doc.codes:
                raise OutOfRange()
            if doc.header.instance_id and doc.header.instance_id != self.instance:
                raise InstanceChanged(self.instance or "", doc.header.instance_id)
            raise BadDocument(f"the agent answered an error: {doc.text}")
        header = doc.header
        if header.instance_id != self.instance:
            raise InstanceChanged(self.instance or "", header.instance_id)
        assert self.next is not None
        if header.first > self.next:
            raise OutOfRange()
        if header.next < self.next:  # the sequence ran backwards without a new instance
            raise InstanceChanged(self.instance or "", header.instance_id + " (sequence reset)")
        fresh = [o for o in doc.observations if o.sequence >= self.next]
        await self._hand_on(fresh, max(header.next, self.next))
        return header.next <= header.last

    async def _poll(self) -> None:
        async for _ in ticks(self.service.scan_interval_ms / 1000):
            more = True
            while more:
                more = await self._take(
                    await self._get("sample", **{"from": self.next, "count": self.service.count})
                )

    async def _stream(self) -> None:
        interval = self.service.scan_interval_ms
        quiet_s = (self.service.heartbeat_ms + interval) / 1000 * 2 + self.agent.timeout_ms / 1000
        try:
            async for part in self.client.stream(
                "sample",
                quiet_s,
                **{
                    "from": self.next,
                    "count": self.service.count,
                    "interval": interval,
                    "heartbeat": self.service.heartbeat_ms,
                },
            ):
                await self._take(part)
        finally:
            self.state["requests"] = self.client.requests
        # the agent ended the stream (or does not stream): read on from where we are
        await asyncio.sleep(interval / 1000)
