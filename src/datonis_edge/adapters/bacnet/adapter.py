"""The bacnet adapter: reads present-values of BACnet/IP devices (bacpypes3).

One bacpypes3 application per service, bound to the configured `local_address`; devices
are addressed directly (no Who-Is, no broadcast). Each device is read on its own schedule
(device.py): one that does not answer affects only its own tags, is logged once, retried
with backoff and logged once when it answers again. COV notifications of every device
arrive on the one application and are routed to their device by subscriber process id.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from pathlib import Path
from typing import Any

from ...logs import OnceLogger
from ..base import (
    Adapter,
    ReadingSink,
    ValueRefused,
    WriteFailed,
    fit_value,
)
from ..devices import poll, report_device, report_health
from .config import BacnetService, BacnetTag
from .device import Device
from .link import BacnetLink, DeviceSilent, PortTaken, Refused, notification_values, same_address
from .objects import ObjectId

log = logging.getLogger(__name__)


class BacnetAdapter(Adapter):
    type = "bacnet"
    hint = "check that the device is powered and reachable at its address and port, that its instance number is right, and that local_address is this gateway's address on that network; it is retried with backoff"

    def __init__(
        self, config: BacnetService, sink: ReadingSink, workdir: Path | None = None
    ) -> None:
        super().__init__(config, sink, workdir)
        self.config: BacnetService = config
        self.link = BacnetLink(
            config.local_address or "", config.local_instance, config.timeout_ms, config.retries
        )
        self.link.on_notification = self._notified
        self._ids = itertools.count(1)
        self._by_process: dict[int, Device] = {}
        self.devices = [
            Device(d, [t for t in config.tags if t.device == d.name], self.link,
                   config.retry_max_backoff_ms / 1000, self._process_id)
            for d in config.devices
        ]  # fmt: skip
        self._things = [(t.thing_key, t.tags_used()) for t in config.things]
        self.status.details["local_address"] = config.local_address
        self.status.details["devices"] = [d.state for d in self.devices]
        self._once = OnceLogger(log)
        self._tags: dict[str, BacnetTag] = {t.name: t for t in config.tags}
        self._states: dict[str, int] = {}  # multi-state tag -> number-of-states, once asked

    def _process_id(self, device: Device, oid: ObjectId) -> int:
        process_id = next(self._ids)
        self._by_process[process_id] = device
        return process_id

    def _notified(self, source: Any, process_id: int, apdu: Any) -> None:
        device = self._by_process.get(process_id)
        if device is None or not same_address(source, device.config.address):
            return  # not a subscription of ours (or not from the device that has it)
        oid, value = notification_values(apdu)
        if oid is not None:
            device.notified(oid, value)

    async def run(self) -> None:
        self.status.state = "running"
        try:
            await self._open()
            await asyncio.gather(*(self._poll(d) for d in self.devices))
        finally:
            self.link.close()

    async def _open(self) -> None:
        """Bind the local address; while it is taken, say so once and retry."""
        delay = 0.5
        while True:
            try:
                self.link.open()
                self._once.resolve("bind", "services '%s': bound %s", self.config.name,
                                   self.config.local_address)  # fmt: skip
                return
            except PortTaken as exc:
                message = f"local_address {self.config.local_address}: {exc}; another BACnet application on this host may hold the port: stop it or give this service another local_address"
                self.status.error(message, announce=False)
                self._once.log("bind", "services '%s': %s", self.config.name, message)
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.config.retry_max_backoff_ms / 1000)

    async def _poll(self, device: Device) -> None:
        await poll(
            self.config.scan_interval_ms / 1000,
            device.scan,
            self._report_devices,
            self._things,
            self.sink,
            self.status,
        )

    def _report_devices(self) -> None:
        """One line when a device stops answering, one when it answers again; the service is
        degraded while any is down."""
        for d in self.devices:
            report_device(self._once, self.config.name, d, self.hint)
        report_health(self.status, self.devices)

    # ------------------------------------------------------------------ writes

    def _tag(self, name: str) -> BacnetTag:
        tag = self._tags.get(name)
        if tag is None:
            raise ValueRefused(f"no tag named {name}")
        if tag.object_id.is_input:
            raise ValueRefused(
                f"{name} ({tag.object_id}) is an input object, which the device sets"
            )
        return tag

    def _address(self, tag: BacnetTag) -> str:
        return next(d.config.address for d in self.devices if d.config.name == tag.device)

    async def check_write(self, tag: str, value: Any, wait_s: float = 0.0) -> Any:
        """The value for the object's present-value: a number (analog), true/false or
        active/inactive (binary), a state 1..number-of-states (multi-state, asked of the
        device once); None relinquishes the tag's priority."""
        t = self._tag(tag)
        if value is None:
            return None
        kind = t.object_id.kind
        if kind == "analog":
            return fit_value(value, "float32", tag)
        if kind == "binary":
            if isinstance(value, str) and value.lower() in ("active", "inactive"):
                return value.lower() == "active"
            return fit_value(value, "bool", tag)
        state = fit_value(value, "uint32", tag)
        states = await self._number_of_states(t, wait_s)
        if not 1 <= state <= states:
            raise ValueRefused(f"{tag} ({t.object_id}) takes a state 1 to {states}, not {state}")
        return state

    async def _number_of_states(self, tag: BacnetTag, wait_s: float) -> int:
        if tag.name not in self._states:
            try:
                self.link.open()
                states = await asyncio.wait_for(
                    self.link.read_one(self._address(tag), tag.object_id, "number-of-states"),
                    max(wait_s, self.config.timeout_ms / 1000 * (self.config.retries + 1) + 1),
                )
            except (DeviceSilent, TimeoutError, PortTaken) as exc:
                raise WriteFailed(f"{tag.name}: the device does not answer: {exc}") from None
            except Refused as exc:
                raise WriteFailed(f"{tag.name}: cannot ask its number-of-states: {exc}") from None
            self._states[tag.name] = int(states)
        return self._states[tag.name]

    async def write(self, tag: str, value: Any) -> None:
        t = self._tag(tag)
        where = f"{tag} ({t.object_id} of {t.device}, priority {t.priority})"
        try:
            self.link.open()
            await self.link.write(self._address(t), t.object_id, value, t.priority)
        except (DeviceSilent, PortTaken) as exc:
            raise WriteFailed(f"{where}: the device does not answer: {exc}") from None
        except Refused as exc:
            raise WriteFailed(f"{where}: the device refused the write: {exc}") from None

    async def close_writes(self) -> None:
        self.link.close()
