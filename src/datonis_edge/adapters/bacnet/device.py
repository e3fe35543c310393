"""One BACnet device as the adapter sees it: what it can do (learned from its device object
on every (re)connection), its objects read in as few ReadPropertyMultiple requests as its
max-APDU allows (or one ReadProperty each), COV subscriptions kept alive, and its status.

A device that does not answer is retried with backoff; when it answers again it is asked
its capabilities again, read in full and subscribed again (a restarted device has lost its
subscriptions). In COV mode, the renewals (every half lifetime) are what notices a silent
device.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from ..devices import PolledDevice, device_state
from .config import BacnetDevice, BacnetTag
from .link import BacnetLink, DeviceSilent, Refused
from .objects import ObjectId, objects_per_request


class Device(PolledDevice):
    def __init__(
        self,
        config: BacnetDevice,
        tags: list[BacnetTag],
        link: BacnetLink,
        max_backoff_s: float,
        process_id: Callable[[Device, ObjectId], int],
    ) -> None:
        names = {t.object_id: t.name for t in tags}
        state = device_state(
            config.name,
            config.address,
            len(names),
            instance=config.instance,
            mode=None,  # poll | cov (cov: some or all objects by subscription)
            read_multiple=None,
            max_apdu=None,
            requests_per_scan=None,
            cov_subscriptions=0,
        )
        super().__init__(state, max_backoff_s)
        self.config = config
        self.link = link
        self.names: dict[ObjectId, str] = names
        self._process_id = process_id
        self.ready = False  # capabilities known, subscriptions made
        self.read_multiple = config.read_multiple
        self.batch = 1
        self.polled: list[ObjectId] = list(self.names)
        self.subscribed: dict[ObjectId, int] = {}  # object -> subscriber process id
        self.process_ids: dict[ObjectId, int] = {}  # one per object for the adapter's life
        self.changed: dict[str, Any] = {}  # COV values not yet delivered
        self.renew_at = 0.0

    @property
    def where(self) -> str:
        return f"BACnet device {self.config.instance} at {self.config.address}"

    # ------------------------------------------------------------------ one scan

    async def scan(self) -> dict[str, Any]:
        """Values to deliver now: every polled object, and what COV notifications changed."""
        if not self.names or self.waiting():
            return {}
        errors: list[str] = []
        try:
            if not self.ready:
                values = await self._connect(errors)
            else:
                values = await self._read(self.polled, errors)
                if self.subscribed and time.monotonic() >= self.renew_at:
                    await self._subscribe(list(self.subscribed), errors)
        except DeviceSilent as exc:
            self.failed(str(exc))
            return {}
        except Refused as exc:  # the device object itself: wrong instance, or no such device
            self.failed(f"its device object answers {exc}; check the instance number")
            return {}
        values.update(self.changed)
        self.changed = {}
        self.answered(values, errors)
        return values

    async def _connect(self, errors: list[str]) -> dict[str, Any]:
        self.state["requests"] += 2
        max_apdu, rpm, cov = await self.link.capabilities(self.config.address, self.config.instance)
        max_apdu = min(self.config.max_apdu or max_apdu, max_apdu, 1476)
        self.batch = objects_per_request(max_apdu)
        self.read_multiple = self.config.read_multiple and rpm
        self.subscribed = {}
        self.changed = {}  # older than the full read below
        self.polled = list(self.names)
        values = await self._read(self.polled, errors)
        if self.config.cov and cov:
            await self._subscribe(list(self.names), errors)
        self.state.update(max_apdu=max_apdu, mode="cov" if self.subscribed else "poll")
        self.ready = True
        return values

    def _plan(self, objects: list[ObjectId]) -> list[list[ObjectId]]:
        size = self.batch if self.read_multiple else 1
        return [objects[i : i + size] for i in range(0, len(objects), size)]

    async def _read(self, objects: list[ObjectId], errors: list[str]) -> dict[str, Any]:
        values: dict[str, Any] = {}
        requests = self._plan(objects)
        for request in requests:
            self.state["requests"] += 1
            if self.read_multiple:
                try:
                    answers = await self.link.read_multiple(self.config.address, request)
                except Refused as exc:
                    if not self._fall_back(str(exc)):
                        answers = [exc] * len(request)
                    else:  # read this request's objects one by one, now and from now on
                        answers = [await self._read_one(oid) for oid in request]
            else:
                answers = [await self._read_one(request[0])]
            for oid, answer in zip(request, answers, strict=True):
                if isinstance(answer, Refused):
                    errors.append(f"{self.names[oid]} ({oid}): {answer}")
                else:
                    values[self.names[oid]] = answer
        self.state.update(
            read_multiple=self.read_multiple, requests_per_scan=len(self._plan(self.polled))
        )
        return values

    def _fall_back(self, reason: str) -> bool:
        """After a refused RPM: smaller requests if the answer was too big, ReadProperty if
        the device has no RPM; False if the refusal is about the objects themselves."""
        if ("segmentation" in reason or "buffer-overflow" in reason) and self.batch > 1:
            self.batch = max(1, self.batch // 2)
            return False
        if "unrecognized-service" in reason or "segmentation" in reason:
            self.read_multiple = False
            return True
        return False

    async def _read_one(self, oid: ObjectId) -> Any:
        try:
            return await self.link.read_one(self.config.address, oid)
        except Refused as exc:
            return exc

    async def _subscribe(self, objects: list[ObjectId], errors: list[str]) -> None:
        lifetime = self.config.cov_lifetime_s
        for oid in objects:
            self.state["requests"] += 1
            process_id = self.process_ids.get(oid) or self._process_id(self, oid)
            self.process_ids[oid] = process_id
            try:
                await self.link.subscribe(self.config.address, oid, process_id, lifetime)
            except Refused as exc:  # this object has no COV: poll it
                errors.append(f"{self.names[oid]} ({oid}): no COV ({exc}), polled")
                self.subscribed.pop(oid, None)
                if oid not in self.polled:
                    self.polled.append(oid)
                continue
            self.subscribed[oid] = process_id
            if oid in self.polled:
                self.polled.remove(oid)
        self.renew_at = time.monotonic() + lifetime / 2
        self.state["cov_subscriptions"] = len(self.subscribed)

    def notified(self, oid: ObjectId, value: Any) -> None:
        name = self.names.get(oid)
        if name is not None and oid in self.subscribed:
            self.changed[name] = value

    def failed(self, message: str) -> float:
        self.ready = False  # asked its capabilities and subscribed again when it answers
        self.state["cov_subscriptions"] = 0
        return super().failed(message)
