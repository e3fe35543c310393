"""The s7 adapter: polls Siemens S7 PLCs (python-snap7's asyncio client).

Tags of one area and data block that lie within `max_gap` bytes become one byte range, and
the ranges are packed into multi-variable read requests (≤ 20 variables, request and answer
within the PDU size the PLC granted): a few requests per scan however many tags. PLCs are
read concurrently and independently: one that does not answer affects only its own tags, is
retried with backoff and is shown in the status (each PLC is polled on its own schedule,
so one that times out never delays the others); a variable the PLC refuses (a data block
that does not exist) fails only its tags, named in the PLC's last_error.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

from ...logs import OnceLogger
from ..base import Adapter, ReadingSink
from ..devices import PolledDevice, device_state, poll, report_device, report_health
from .codec import Block, Request, TagRead, plan_blocks, plan_requests
from .config import S7Device, S7Service
from .link import ItemRefused, LinkDown, S7Link
from .writer import S7Writer

log = logging.getLogger(__name__)


class _Plc(PolledDevice):
    def __init__(self, config: S7Device, blocks: list[Block], max_backoff_s: float) -> None:
        tags = sum(len(b.tags) for b in blocks)
        address = f"{config.host}:{config.port}"
        state = device_state(config.name, address, tags, pdu_size=None, requests_per_scan=None)
        super().__init__(state, max_backoff_s)
        self.config = config
        self.link = S7Link(config)
        self.blocks = blocks
        self.requests: list[Request] = []

    @property
    def where(self) -> str:
        return self.link.where

    async def _connect(self) -> None:
        if self.link.connected:
            return
        await self.link.connect()
        # planned for the PDU size this PLC granted on this connection
        self.requests = plan_requests(self.blocks, self.link.pdu_size)
        self.state.update(pdu_size=self.link.pdu_size, requests_per_scan=len(self.requests))

    async def read(self) -> dict[str, Any]:
        """Every tag's value; tags of a refused variable are left out (named in last_error)."""
        if not self.blocks or self.waiting():
            return {}
        values: dict[str, Any] = {}
        refused: dict[int, str] = {}  # id(block) -> why
        try:
            await self._connect()
            for request in self.requests:
                self.state["requests"] += 1
                try:
                    answers = await self.link.read(request)
                except ItemRefused as exc:  # the whole request
                    answers = [exc] * len(request.items)
                for item, answer in zip(request.items, answers, strict=True):
                    block = item.block
                    if isinstance(answer, ItemRefused):
                        refused[id(block)] = answer.args[0]
                        continue
                    if len(block.data) != block.length:
                        block.data = bytearray(block.length)
                    at = item.start - block.start
                    block.data[at : at + item.length] = answer
        except LinkDown as exc:
            self.failed(str(exc))
            return {}
        errors = []
        for block in self.blocks:
            if id(block) in refused:
                names = ", ".join(t.name for t in block.tags[:5])
                more = f" and {len(block.tags) - 5} more" if len(block.tags) > 5 else ""
                errors.append(f"{names}{more}: {refused[id(block)]}")
            else:
                values.update(block.values())
        self.answered(values, errors)
        return values


class S7Adapter(Adapter):
    type = "s7"
    hint = "check that each PLC is powered and reachable at its host and port, its rack/slot (or TSAPs), and that PUT/GET access is allowed; it is retried with backoff"

    def __init__(self, config: S7Service, sink: ReadingSink, workdir: Path | None = None) -> None:
        super().__init__(config, sink, workdir)
        self.config: S7Service = config
        max_backoff_s = config.retry_max_backoff_ms / 1000
        self.plcs = [
            _Plc(
                d,
                plan_blocks([TagRead(t.name, t.s7) for t in config.tags if t.device == d.name],
                            config.max_gap),
                max_backoff_s,
            )
            for d in config.devices
        ]  # fmt: skip
        self._things = [(t.thing_key, t.tags_used()) for t in config.things]
        self.status.details["devices"] = [p.state for p in self.plcs]
        self._once = OnceLogger(log)
        self._writer = S7Writer(config)

    async def _read(self, plc: _Plc) -> dict[str, Any]:
        values = await plc.read()
        self.status.details["requests_per_scan"] = sum(
            p.state["requests_per_scan"] or 0 for p in self.plcs
        )
        return values

    def _report(self, plc: _Plc) -> None:
        """One line when a PLC stops answering, or refuses variables, and one when that
        ends (each PLC on its own); the service is degraded while any PLC is down."""
        report_device(self._once, self.config.name, plc, self.hint)
        name, where = plc.config.name, plc.where
        if plc.state["connected"]:
            if plc.state["last_error"]:
                self._once.log(
                    f"refused:{name}",
                    "services '%s': %s refused variables: %s; check the addresses against the "
                    "PLC program (data block numbers and lengths, optimized block access off)",
                    self.config.name,
                    where,
                    plc.state["last_error"],
                )
            else:
                self._once.resolve(
                    f"refused:{name}",
                    "services '%s': %s reads every variable again",
                    self.config.name,
                    where,
                )
        report_health(self.status, self.plcs, "PLCs")

    async def run(self) -> None:
        self.status.state = "running"
        try:
            # each PLC on its own schedule: one that times out never delays the others
            await asyncio.gather(*(self._poll(p) for p in self.plcs))
        finally:
            for p in self.plcs:
                await p.link.close()

    async def _poll(self, plc: _Plc) -> None:
        await poll(
            self.config.scan_interval_ms / 1000,
            lambda: self._read(plc),
            lambda: self._report(plc),
            self._things,
            self.sink,
            self.status,
        )

    # ------------------------------------------------------------------ writes (writer.py)

    async def check_write(self, tag: str, value: Any, wait_s: float = 0.0) -> Any:
        fitted = self._writer.fit(tag, value)
        await self._writer.connect(tag, wait_s)
        return fitted

    async def write(self, tag: str, value: Any) -> None:
        await self._writer.write(tag, value)

    async def close_writes(self) -> None:
        await self._writer.close()
