"""One bacpypes3 application per service: the gateway's own BACnet/IP device on the address
the config names (never the host's default interface), and the requests the adapter makes:
a device's capabilities, ReadPropertyMultiple, ReadProperty, SubscribeCOV, WriteProperty.

Every request goes to a device's address directly: no Who-Is, no broadcast. A device that
does not answer raises DeviceSilent; one that answers with an error, reject or abort
raises Refused (the device is there, it said no).
"""

from __future__ import annotations

import asyncio
import socket
from argparse import Namespace
from collections.abc import Callable
from typing import Any

from bacpypes3.apdu import (
    ErrorRejectAbortNack,
    SubscribeCOVRequest,
)
from bacpypes3.app import Application
from bacpypes3.basetypes import BinaryPV, ErrorType, PropertyIdentifier, ServicesSupported
from bacpypes3.pdu import Address
from bacpypes3.primitivedata import Null, ObjectIdentifier, Real, Unsigned
from bacpypes3.vendor import get_vendor_info

from .objects import ObjectId

PRESENT_VALUE = PropertyIdentifier("present-value")
VENDOR = get_vendor_info(0)  # the standard (ASHRAE) object types: all this adapter reads


class DeviceSilent(Exception):
    """The device did not answer (or the address cannot be reached)."""


class Refused(Exception):
    """The device answered with an error, a reject or an abort; args[0] names it."""


class PortTaken(Exception):
    """The local address cannot be bound."""


def describe(error: Any) -> str:
    """An ErrorType / ErrorPDU / Reject / Abort as 'object: unknown-object'."""
    error_class = getattr(error, "errorClass", None)
    if error_class is not None:
        return f"{error_class}: {error.errorCode}"
    return str(error)


def same_address(source: Any, address: str) -> bool:
    """Whether a packet's source is the device at `address` (host:port)."""
    try:
        return bool(source == Address(address))
    except ValueError:
        return False


def to_python(value: Any) -> Any:
    """A present-value as JSON: REAL a float, BinaryPV true/false, Unsigned an int."""
    if isinstance(value, BinaryPV):
        return value == BinaryPV.active
    if isinstance(value, Real | float):
        return float(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, Null):
        return None
    return str(value)


def to_bacnet(kind: str, value: Any) -> Any:
    """A checked value as the BACnet type of the object's present-value (None: relinquish)."""
    if value is None:
        return Null(())
    if kind == "analog":
        return Real(value)
    if kind == "binary":
        return BinaryPV("active" if value else "inactive")
    return Unsigned(value)


class CovListener(Application):
    """The application with COV notifications routed to a callback by (device address,
    subscriber process id) instead of bacpypes3's per-subscription queues."""

    on_notification: Callable[[Address, int, Any], None] | None = None

    async def do_UnconfirmedCOVNotificationRequest(self, apdu: Any) -> None:
        if self.on_notification is not None:
            self.on_notification(apdu.pduSource, apdu.subscriberProcessIdentifier, apdu)

    async def do_ConfirmedCOVNotificationRequest(self, apdu: Any) -> None:
        from bacpypes3.apdu import SimpleAckPDU

        if self.on_notification is not None:
            self.on_notification(apdu.pduSource, apdu.subscriberProcessIdentifier, apdu)
        await self.response(SimpleAckPDU(context=apdu))


class BacnetLink:
    def __init__(self, local_address: str, local_instance: int, timeout_ms: int, retries: int):
        self.local_address = local_address
        self.local_instance = local_instance
        self.timeout_ms = timeout_ms
        self.retries = retries
        self.app: CovListener | None = None
        self.on_notification: Callable[[Address, int, Any], None] | None = None

    def open(self) -> CovListener:
        if self.app is not None:
            return self.app
        host, port = self.local_address.split("/")[0], int(self.local_address.rsplit(":", 1)[1])
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:  # bacpypes3 retries a taken port silently: find out first, and say so
            probe.bind((host, port))
        except OSError as exc:
            raise PortTaken(f"cannot bind {host}:{port}: {exc.strerror}") from None
        finally:
            probe.close()
        args = Namespace(
            name=f"datonis-edge-{self.local_instance}",
            instance=self.local_instance,
            vendoridentifier=999,
            address=self.local_address,
            network=0,
            foreign=None,
            ttl=30,
            bbmd=None,
        )
        app = CovListener.from_args(args)
        device = app.device_object
        device.maxApduLengthAccepted = 1476
        device.apduTimeout = self.timeout_ms
        device.numberOfApduRetries = self.retries
        app.on_notification = self._notified
        self.app = app
        return app

    def _notified(self, source: Address, process_id: int, apdu: Any) -> None:
        if self.on_notification is not None:
            self.on_notification(source, process_id, apdu)

    def close(self) -> None:
        if self.app is not None:
            self.app.close()
            self.app = None

    async def _call(self, request: Any) -> Any:
        """Await a bacpypes3 request; its own timeout and retries apply, this one only guards."""
        limit = self.timeout_ms / 1000 * (self.retries + 1) + 2
        try:
            return await asyncio.wait_for(request, limit)
        except ErrorRejectAbortNack as exc:
            reason = str(exc)
            if reason == "no-response":
                raise DeviceSilent(
                    f"no answer within {self.timeout_ms} ms ({self.retries + 1} tries)"
                ) from None
            raise Refused(describe(exc)) from None
        except TimeoutError:
            raise DeviceSilent(f"no answer within {limit:.0f} s") from None
        except OSError as exc:
            raise DeviceSilent(str(exc)) from None

    async def capabilities(self, address: str, instance: int) -> tuple[int, bool, bool]:
        """(max APDU, ReadPropertyMultiple supported, SubscribeCOV supported) of the device
        `instance` at `address` (a wrong instance: Refused unknown-object)."""
        app = self.open()
        where, device = Address(address), ObjectIdentifier(("device", instance))
        max_apdu = await self._call(app.read_property(where, device, "max-apdu-length-accepted"))
        services = await self._call(app.read_property(where, device, "protocol-services-supported"))
        if not isinstance(services, ServicesSupported):
            return int(max_apdu), False, False
        return (
            int(max_apdu),
            bool(services[ServicesSupported.readPropertyMultiple]),
            bool(services[ServicesSupported.subscribeCOV]),
        )

    async def read_multiple(self, address: str, objects: list[ObjectId]) -> list[Any]:
        """Present-values of `objects` in one ReadPropertyMultiple, in order: a value, or
        Refused for an object the device has not."""
        app = self.open()
        params: list[Any] = []
        for oid in objects:
            params += [ObjectIdentifier((oid.type, oid.instance)), [PRESENT_VALUE]]
        results = await self._call(
            app.read_property_multiple(Address(address), params, vendor_info=VENDOR)
        )
        by_id = {(str(r[0][0]), r[0][1]): r[3] for r in results}
        out: list[Any] = []
        for oid in objects:
            value = by_id.get((oid.type, oid.instance), Refused("no value in the answer"))
            if isinstance(value, ErrorType):
                value = Refused(describe(value))
            out.append(value if isinstance(value, Refused) else to_python(value))
        return out

    async def read_one(self, address: str, oid: ObjectId, prop: str = "present-value") -> Any:
        app = self.open()
        value = await self._call(
            app.read_property(Address(address), ObjectIdentifier((oid.type, oid.instance)), prop)
        )
        return to_python(value)

    async def subscribe(
        self, address: str, oid: ObjectId, process_id: int, lifetime_s: int
    ) -> None:
        """SubscribeCOV (unconfirmed notifications) for `lifetime_s`; again to renew."""
        app = self.open()
        request = SubscribeCOVRequest(
            subscriberProcessIdentifier=process_id,
            monitoredObjectIdentifier=ObjectIdentifier((oid.type, oid.instance)),
            issueConfirmedNotifications=False,
            lifetime=lifetime_s,
            destination=Address(address),
        )
        await self._call(app.request(request))

    async def write(self, address: str, oid: ObjectId, value: Any, priority: int) -> None:
        app = self.open()
        await self._call(
            app.write_property(
                Address(address),
                ObjectIdentifier((oid.type, oid.instance)),
                PRESENT_VALUE,
                to_bacnet(oid.kind, value),
                priority=priority,
            )
        )


def notification_values(apdu: Any) -> tuple[ObjectId | None, Any]:
    """(object, present-value) of a COV notification; the value None if it carries none."""
    monitored = apdu.monitoredObjectIdentifier
    oid = ObjectId(str(monitored[0]), int(monitored[1]))
    for element in apdu.listOfValues:
        if element.propertyIdentifier == PRESENT_VALUE:
            object_class = VENDOR.get_object_class(monitored[0])
            value_type = object_class.get_property_type(PRESENT_VALUE) if object_class else None
            if value_type is None:
                return oid, None
            return oid, to_python(element.value.cast_out(value_type))
    return oid, None
