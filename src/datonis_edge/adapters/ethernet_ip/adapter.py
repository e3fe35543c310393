"""The ethernet_ip adapter: polls Allen-Bradley Logix PLCs (ControlLogix, CompactLogix,
Micro800) over EtherNet/IP, reading tags by name.

Each PLC has its own session, its own worker thread and its own scan loop, so a PLC that
does not answer delays nothing but its own tags: it is retried with backoff and shown in the
status (connected, last error, last good read, requests, tag errors). Tags are read many to a
request (reader.py); writes for instructions go over the same session (writer.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from ...logs import OnceLogger
from ..base import Adapter, ReadingSink
from ..devices import PolledDevice, device_state, poll, report_device, report_health
from .config import EnipDevice, EthernetIpService
from .reader import Reader, TagRead
from .session import DeviceDown, Session
from .writer import EnipWriter

log = logging.getLogger(__name__)
logging.getLogger("pylogix").setLevel(logging.CRITICAL)  # we report PLC errors ourselves


class PlcDevice(PolledDevice):
    """One PLC: its session, its worker thread, its tags, its state in the status."""

    def __init__(self, config: EnipDevice, reads: list[TagRead], max_backoff_s: float) -> None:
        route = config.route or ("none (Micro800)" if config.micro800 else f"1/{config.slot}")
        state = device_state(
            config.name,
            f"{config.host}:{config.port}",
            len(reads),
            route=route,
            connection_size=None,
            requests_per_scan=None,  # CIP requests (one Multiple Service Packet is one)
            tag_errors={},
        )
        super().__init__(state, max_backoff_s)
        self.config = config
        self.session = Session(config)
        self.reader = Reader(self.session, reads)
        self.tags = {r.name: r for r in reads}
        self.failing_tags: set[str] = set()  # tags the PLC refused at the last read
        self._closed = False
        self._thread = ThreadPoolExecutor(1, thread_name_prefix=f"enip-{config.name}")

    @property
    def where(self) -> str:
        return f"PLC {self.config.name} at {self.state['address']} (route {self.state['route']})"

    async def call(self, fn: Any, *args: Any) -> Any:
        """Run blocking session work in this PLC's own thread (one request at a time)."""
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn, *args)

    async def read(self) -> dict[str, Any]:
        if self.waiting():
            return {}
        before = self.session.requests
        try:
            values, errors = await self.call(self.reader.read)
        except Exception as exc:  # DeviceDown, or a reply we cannot take apart: this PLC only
            if not isinstance(exc, DeviceDown):
                exc = DeviceDown(f"a reply the gateway cannot read ({exc!r}); reconnecting")
                await self.call(self.session.close)
            self.state["requests"] += self.session.requests - before
            self.failed(str(exc))
            return {}
        self.state.update(
            connection_size=self.session.connection_size,
            requests_per_scan=self.session.requests - before,
            tag_errors=errors,
        )
        self.state["requests"] += self.session.requests - before
        self.answered(values, list(errors.values()))
        return values

    def disconnect(self) -> None:
        if not self._closed:
            self._thread.submit(self.session.close)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._thread.submit(self.session.close)
            self._thread.shutdown(wait=False, cancel_futures=False)


class EthernetIpAdapter(Adapter):
    type = "ethernet_ip"
    hint = "check that each PLC is powered and reachable at its host and port, and its slot or route; it is retried with backoff"

    def __init__(
        self, config: EthernetIpService, sink: ReadingSink, workdir: Path | None = None
    ) -> None:
        super().__init__(config, sink, workdir)
        self.config: EthernetIpService = config
        self.devices = [
            PlcDevice(
                d,
                [TagRead.of(t.name, t.parsed()) for t in config.tags if t.device == d.name],
                config.retry_max_backoff_ms / 1000,
            )
            for d in config.devices
        ]
        self._things = [(t.thing_key, t.tags_used()) for t in config.things]
        self.status.details["devices"] = [d.state for d in self.devices]
        self._once = OnceLogger(log)
        self.writer = EnipWriter({name: d for d in self.devices for name in d.tags})

    async def run(self) -> None:
        self.status.state = "running"
        try:
            await asyncio.gather(*(self._scan(d) for d in self.devices))
        finally:  # the threads stay for writes and a restart; close_writes ends them
            for d in self.devices:
                with contextlib.suppress(Exception):
                    d.disconnect()

    async def _scan(self, device: PlcDevice) -> None:
        await poll(
            self.config.scan_interval_ms / 1000,
            device.read,
            lambda: self._report(device),
            self._things,
            self.sink,
            self.status,
        )

    def _report(self, device: PlcDevice) -> None:
        """One line when a PLC stops answering, one when it answers again (each on its own);
        the same for each tag the PLC refuses. The service is degraded while any PLC is down."""
        name, state = self.config.name, device.state
        report_device(self._once, name, device, self.hint)
        if state["connected"]:  # (while it is down, its tags' last errors are stale)
            errors = state["tag_errors"]
            for tag, why in errors.items():
                self._once.log(
                    f"tag:{device.config.name}:{tag}",
                    "services '%s': tag %s on %s cannot be read: %s; check the tag's address in the PLC program",
                    name, tag, device.where, why,
                )  # fmt: skip
            for tag in device.failing_tags - errors.keys():
                self._once.resolve(
                    f"tag:{device.config.name}:{tag}",
                    "services '%s': tag %s on %s reads again", name, tag, device.where,
                )  # fmt: skip
            device.failing_tags = set(errors)
        report_health(self.status, self.devices, "PLCs")

    # ------------------------------------------------------------------ writes (writer.py)

    async def check_write(self, tag: str, value: Any, wait_s: float = 0.0) -> Any:
        return await self.writer.check(tag, value, wait_s)

    async def write(self, tag: str, value: Any) -> None:
        # `value` is what check_write returned: the tag's type and the value fitted to it
        await self.writer.write(tag, *value)

    async def close_writes(self) -> None:
        for d in self.devices:
            with contextlib.suppress(Exception):
                d.close()
