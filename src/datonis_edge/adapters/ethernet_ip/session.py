"""One PLC connection: EtherNet/IP session and Forward Open (pylogix), CIP requests over it.

pylogix carries the session (RegisterSession, Forward Open with the route, connected
SendUnitData and its sequence count); what goes inside, the CIP services, is ours
(codec.py): pylogix's own Read([...]) reads arrays one request each, decodes a CIP STRING in
a multi-read wrongly and learns each tag's type with a request of its own. Blocking sockets:
each PLC's session runs in one worker thread of its own (adapter.py).
"""

from __future__ import annotations

import contextlib
import struct
from typing import Any

from pylogix import PLC

from .codec import CipError, reply_status
from .config import EnipDevice

_HEADER = 46  # encapsulation (24) + CPF items of a connected reply (20) + sequence count (2)


class DeviceDown(Exception):
    """The PLC did not answer, refused the session or closed it."""


class Session:
    def __init__(self, device: EnipDevice) -> None:
        self.device = device
        self.plc: Any = None
        self.requests = 0  # CIP requests sent (a Multiple Service Packet is one)
        self.connection_size: int | None = None

    def _new_plc(self) -> Any:
        d = self.device
        plc = PLC(
            d.host, slot=d.slot, timeout=d.timeout_ms / 1000, Micro800=d.micro800, port=d.port
        )
        if d.route:
            plc.Route = d.hops()
        if d.connection_size:
            plc.ConnectionSize = d.connection_size
        return plc

    def connect(self) -> None:
        if self.plc is not None and self.plc.conn.SocketConnected:
            return
        self.close()
        plc = self._new_plc()
        try:
            ok, why = plc.conn.connect()
        except (OSError, struct.error) as exc:
            ok, why = False, exc
        if not ok:
            with contextlib.suppress(Exception):
                plc.conn.Socket.close()
            raise DeviceDown(f"cannot open a session ({why or 'no answer'})")
        self.plc = plc
        self.connection_size = plc.conn.ConnectionSize

    def request(self, message: bytes) -> bytes:
        """Send one CIP request; the reply from its service byte on. DeviceDown if the PLC
        does not answer; CipError only for a general status that is not per service."""
        self.connect()
        self.requests += 1
        try:
            _, data = self.plc.conn.send(message)
        except (OSError, struct.error) as exc:
            data, why = None, exc
        else:
            why = (
                f"nothing within {self.device.timeout_ms} ms"
                if not data
                else "it closed the session"
            )
        if not data or len(data) < _HEADER + 4 or struct.unpack_from("<I", data, 8)[0] != 0:
            self.close()
            raise DeviceDown(f"no reply to a request: {why}")
        return data[_HEADER:]

    def call(self, message: bytes) -> bytes:
        """One service: its reply data, or CipError with the PLC's status."""
        status, extended, data = reply_status(self.request(message))
        if status not in (0, 0x06):
            raise CipError(status, extended)
        return data

    def close(self) -> None:
        """Drop the connection without the Forward Close handshake (a dead PLC would make
        it wait a whole timeout); the PLC times the connection out itself."""
        if self.plc is not None:
            with contextlib.suppress(Exception):
                self.plc.conn.Socket.close()
            self.plc = None
