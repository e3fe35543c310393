"""The simulator adapter: waveforms and CSV replay, one reading per thing per scan."""

from __future__ import annotations

import time
from pathlib import Path

from ..base import Adapter, ReadingSink, Rejected, reading, ticks
from .config import SimulatorService
from .waveforms import Waveform, parse_tag


class SimulatorAdapter(Adapter):
    type = "simulator"

    def __init__(
        self, config: SimulatorService, sink: ReadingSink, workdir: Path | None = None
    ) -> None:
        super().__init__(config, sink, workdir)
        self.config: SimulatorService = config
        self._waves: list[tuple[str, dict[str, Waveform]]] = [
            (thing.thing_key, {m.tag: parse_tag(m.tag) for m in thing.metrics if m.tag})
            for thing in config.things
        ]

    def scan(self, t: float) -> list[dict]:
        ts = int(t * 1000)
        return [
            reading(key, ts, {tag: w.value(t) for tag, w in waves.items()})
            for key, waves in self._waves
        ]

    async def run(self) -> None:
        self.status.state = "running"
        async for _ in ticks(self.config.scan_interval_ms / 1000):
            readings = self.scan(time.time())
            try:
                await self.sink(readings)
                self.status.ok("running")
            except Rejected as exc:
                self.status.error(exc.reason, "running")
