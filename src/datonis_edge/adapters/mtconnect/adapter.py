"""The mtconnect adapter: follows MTConnect agents (probe, current, sample) and maps their
data items to tags.

Each agent is followed on its own (follower.py): an agent that does not answer affects only
its own tags; it is retried with backoff and shown in the status. Every observation is one
value at its own timestamp: a SAMPLE a number (None when UNAVAILABLE), an EVENT its text
(Execution ACTIVE, ControllerMode AUTOMATIC, ...), a CONDITION its level (normal, warning,
fault, unavailable) with its native code and text as tags of their own when asked for.
Agents are read-only: `write()` refuses.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path
from typing import Any

import aiohttp

from ...logs import OnceLogger
from ..base import Adapter, ReadingSink, Rejected, ValueRefused, WriteFailed, reading
from ..devices import backoff_s, report_device, report_health
from .client import AgentClient, AgentUnreachable
from .config import READ_ONLY, MtconnectService
from .documents import BadDocument, DataItem, Observation
from .follower import Follower, Gap, InstanceChanged
from .position import Positions

log = logging.getLogger(__name__)


class MtconnectAdapter(Adapter):
    type = "mtconnect"
    hint = "check that the agent answers at its URL (try <url>/probe in a browser); it is retried with backoff"

    def __init__(
        self, config: MtconnectService, sink: ReadingSink, workdir: Path | None = None
    ) -> None:
        super().__init__(config, sink, workdir)
        self.config: MtconnectService = config
        self._once = OnceLogger(log)
        # per agent: data item id -> [(tag, field)], filled when the agent is probed
        self._routes: dict[str, dict[str, list[tuple[str, str]]]] = {}
        self._thing_keys: dict[str, list[str]] = {}  # tag -> the things that use it
        for thing in config.things:
            for tag in thing.tags_used():
                self._thing_keys.setdefault(tag, []).append(thing.thing_key)
        self.followers: list[Follower] = []
        self.status.details["mode"] = config.mode

    # ------------------------------------------------------------------ reading

    async def run(self) -> None:
        cfg = self.config
        positions = Positions(self.workdir, cfg.name)
        connector = aiohttp.TCPConnector(limit_per_host=4)
        async with aiohttp.ClientSession(connector=connector, auto_decompress=True) as session:
            self.followers = [
                Follower(
                    agent,
                    cfg,
                    AgentClient(
                        session,
                        agent.url,
                        agent.device,
                        agent.timeout_ms / 1000,
                        cfg.max_document_bytes,
                    ),
                    self._deliver,
                    lambda kind, what, name=agent.name: self._event(name, kind, what),
                    positions,
                )
                for agent in cfg.agents
            ]
            # "devices": what /metrics reads (device_up, tag_read_errors) for every adapter
            self.status.details["devices"] = [f.state for f in self.followers]
            tasks = [asyncio.create_task(self._keep(f)) for f in self.followers]
            try:
                await asyncio.gather(*tasks)
            finally:
                for t in tasks:
                    t.cancel()
                with contextlib.suppress(BaseException):
                    await asyncio.gather(*tasks, return_exceptions=True)

    async def _keep(self, follower: Follower) -> None:
        """Follow one agent for ever: report a fault, back off, go on from its position."""
        failures = 0
        while True:
            try:
                await follower.follow()
            except asyncio.CancelledError:
                raise
            except (AgentUnreachable, BadDocument) as exc:
                # the backoff starts again after a good read
                failures = 1 if follower.state["connected"] else failures + 1
                delay = backoff_s(failures, self.config.retry_max_backoff_ms / 1000)
                follower.state["errors"] += 1
                follower.state.update(
                    connected=False, last_error=f"{exc}; retrying in {delay:.1f} s"
                )
                self._report()
                await asyncio.sleep(delay)
            except Rejected as exc:  # not stored: the position did not move, read it again
                self.status.error(exc.reason)
                await asyncio.sleep(1.0)

    async def _deliver(self, follower: Follower, observations: list[Observation]) -> None:
        routes = self._routes.get(follower.agent.name, {})
        readings: list[dict[str, Any]] = []
        open_at: dict[str, dict[str, Any]] = {}  # thing_key -> its reading being filled
        for obs in observations:
            for tag, field in routes.get(obs.data_item_id, ()):
                if field == "value":
                    value: Any = obs.value
                elif field == "native_code":
                    value = obs.native_code
                else:
                    value = obs.message
                for thing_key in self._thing_keys.get(tag, ()):
                    current = open_at.get(thing_key)
                    # one reading per thing and timestamp; a tag seen twice starts another
                    if (
                        current is None
                        or current["timestamp"] != obs.timestamp_ms
                        or tag in current["data"]
                    ):
                        current = reading(thing_key, obs.timestamp_ms, {})
                        open_at[thing_key] = current
                        readings.append(current)
                    current["data"][tag] = value
        if readings:
            await self.sink(readings)

    # ------------------------------------------------------------------ what happened

    def _event(self, agent: str, kind: str, what: Any) -> None:
        name = self.config.name
        if kind == "read":
            if self.status.state != "running":
                self._report()
        elif kind == "probed":
            self._route(agent, what)
        elif kind == "gap":
            gap: Gap = what
            self._once.log(
                f"gap:{agent}",
                "services '%s': agent %s dropped %d observations from sequence %d before they "
                "were read (its buffer ran over); the latest value of each data item was taken "
                "from /current. Poll more often or raise the agent's BufferSize",
                name, agent, gap.count, gap.first_missing,
            )  # fmt: skip
        elif kind == "restart":
            change: InstanceChanged = what
            self._once.log(
                f"restart:{agent}",
                "services '%s': agent %s restarted (instanceId %s -> %s); its data items are "
                "probed again and the new instance read from its first sequence; what the old "
                "instance held and was not yet read is gone",
                name, agent, change.old, change.new, level=logging.INFO,
            )  # fmt: skip

    def _route(self, agent: str, items: dict[str, DataItem]) -> None:
        by_name: dict[str, list[DataItem]] = {}
        for item in items.values():
            if item.name:
                by_name.setdefault(item.name, []).append(item)
        routes: dict[str, list[tuple[str, str]]] = {}
        missing: list[str] = []
        for tag in self.config.tags:
            if tag.agent != agent:
                continue
            item = items.get(tag.data_item)
            if item is None and len(by_name.get(tag.data_item, [])) == 1:
                item = by_name[tag.data_item][0]
            if item is None:
                missing.append(f"{tag.name} ({tag.data_item})")
                continue
            routes.setdefault(item.id, []).append((tag.name, tag.field))
        self._routes[agent] = routes
        key = f"items:{agent}"
        if missing:
            self._once.log(
                key,
                "services '%s': agent %s has no data item with the id (or a unique name) of "
                "tags %s; see <url>/probe for the ids and fix the tags' data_item",
                self.config.name, agent, ", ".join(missing),
            )  # fmt: skip
        else:
            self._once.resolve(
                key, "services '%s': agent %s has all its tags", self.config.name, agent
            )
        for f in self.followers:
            if f.agent.name == agent:
                f.state["missing_data_items"] = missing

    def _report(self) -> None:
        """One line when an agent stops answering (each on its own), one when it answers
        again; the service is degraded while any is down."""
        for f in self.followers:
            report_device(self._once, self.config.name, f, self.hint)
        report_health(self.status, self.followers, "agents")

    # ------------------------------------------------------------------ writes

    async def check_write(self, tag: str, value: Any, wait_s: float = 0.0) -> Any:
        raise ValueRefused(READ_ONLY)

    async def write(self, tag: str, value: Any) -> None:
        raise WriteFailed(READ_ONLY)
