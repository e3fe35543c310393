"""Writes for instructions: a value to a tag, in the tag's own type (which the PLC says).

The type comes from the tag's last read; a tag not read yet is read once first (up to the
instruction's wait for the PLC). The value is converted and range checked before anything is
written; a bit of an integer (`Status.5`) is written with the PLC's Read-Modify-Write service,
which changes that bit alone; an array tag (count > 1) takes a list of as many values.
Writes go over the PLC's session, in its thread, between two reads.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from ..base import ValueRefused, WriteFailed, fit_value
from . import codec
from .codec import CipError, TypeInfo
from .reader import TagRead
from .session import DeviceDown

if TYPE_CHECKING:
    from .adapter import PlcDevice

RETRY_S = 0.25  # while waiting for a PLC, how often to try it again
_INTEGERS = {"SINT", "INT", "DINT", "LINT", "USINT", "UINT", "UDINT", "ULINT", "BYTE", "WORD", "DWORD", "LWORD"}  # fmt: skip


def fit(r: TagRead, kind: TypeInfo, value: Any) -> Any:
    """`value` as the tag's type takes it, or ValueRefused naming why not; no I/O."""
    name = r.name
    if r.address.bit is not None:
        if kind.name not in _INTEGERS:
            raise ValueRefused(f"{name} is bit {r.address.bit} of a {kind.name}, which has no bits")
        return fit_value(value, "bool", name)
    if r.address.count > 1:
        if not isinstance(value, list) or len(value) != r.address.count:
            raise ValueRefused(
                f"{name} is {r.address.count} elements of {kind.name}; give a list of "
                f"{r.address.count} values, not {value!r}"
            )
        return [_fit_one(name, kind, v) for v in value]
    return _fit_one(name, kind, value)


def _fit_one(name: str, kind: TypeInfo, value: Any) -> Any:
    if kind.name in codec.FIT_AS:
        return fit_value(value, codec.FIT_AS[kind.name], name)
    if kind.name in ("STRING", "SHORT_STRING"):
        text = fit_value(value, "string", name)
        try:
            size = len(text.encode("latin-1"))
        except UnicodeEncodeError:
            raise ValueRefused(f"{name} takes Latin-1 characters only, not {text!r}") from None
        if size > codec.string_capacity(kind):
            raise ValueRefused(
                f"{name} holds {codec.string_capacity(kind)} characters, {text!r} has {size}"
            )
        return text
    raise ValueRefused(
        f"{name} is a {kind.name}, which instructions cannot write; write its members by name"
    )


class EnipWriter:
    def __init__(self, devices: dict[str, PlcDevice]) -> None:
        self.devices = devices  # tag name -> its PLC

    def _device(self, name: str) -> PlcDevice:
        device = self.devices.get(name)
        if device is None:
            raise ValueRefused(f"no tag named {name}")
        return device

    async def _kind(self, device: PlcDevice, r: TagRead, wait_s: float) -> TypeInfo:
        """The tag's type: from its last read, else from a read now."""
        deadline = time.monotonic() + wait_s
        while r.kind is None:
            try:
                why = await device.call(self._learn, device, r)
            except DeviceDown as exc:
                if time.monotonic() >= deadline:
                    raise WriteFailed(f"{device.where} does not answer: {exc}") from None
                await asyncio.sleep(RETRY_S)
                continue
            if r.kind is None:
                raise ValueRefused(f"{r.name}: {why or 'the PLC did not say its type'}")
        return r.kind

    @staticmethod
    def _learn(device: PlcDevice, r: TagRead) -> str | None:
        values: dict[str, Any] = {}
        errors: dict[str, str] = {}
        device.reader.read_one(r, values, errors)
        return errors.get(r.name)

    async def check(self, name: str, value: Any, wait_s: float) -> tuple[TypeInfo, Any]:
        device = self._device(name)
        r = device.tags[name]
        kind = await self._kind(device, r, wait_s)
        return kind, fit(r, kind, value)

    async def write(self, name: str, kind: TypeInfo, value: Any) -> None:
        device = self._device(name)
        r = device.tags[name]
        a = r.address
        if a.bit is not None:
            service = codec.bit_write_service(a.path, kind, a.bit, value)
        else:
            service = codec.write_service(a.path, kind, value if a.count > 1 else [value])
        try:
            await device.call(device.session.call, service)
        except DeviceDown as exc:
            raise WriteFailed(f"{device.where} does not answer: {exc}") from None
        except CipError as exc:
            raise WriteFailed(
                f"{device.where} refused the write of {name} ({a.text}): {exc}"
            ) from None
