"""One connection to one PLC (python-snap7's asyncio client): connect by rack/slot or TSAP,
multi-variable reads with a result per variable, writes of bytes or of one bit.

The requests are built with snap7's protocol builder and exchanged with `iso_exchange_buffer`;
the responses are parsed here so that one variable's error (a data block that does not
exist) fails only that variable, where snap7's own multi-read fails them all.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct

from snap7 import AsyncClient
from snap7.datatypes import S7Area, S7WordLen
from snap7.error import S7Error
from snap7.type import Parameter

from .codec import Request
from .config import S7Device

logging.getLogger("snap7").setLevel(logging.CRITICAL)  # we report PLC errors ourselves

# what an S7 CPU answers for one variable (return codes of a read or write item)
RETURN_CODES = {
    0x01: "hardware fault",
    0x03: "access to the object not allowed",
    0x05: "address out of range (the data block or area is shorter)",
    0x06: "data type not supported",
    0x07: "data type inconsistent",
    0x0A: "the object does not exist (no such data block)",
}


class LinkDown(Exception):
    """The PLC did not answer, refused the connection, or answered nonsense."""


class ItemRefused(Exception):
    """The PLC answered, and refused this one variable (`reason` names why)."""


class S7Link:
    def __init__(self, device: S7Device) -> None:
        self.device = device
        self.timeout_s = device.timeout_ms / 1000
        self.client: AsyncClient | None = None
        self.pdu_size = 0

    @property
    def where(self) -> str:
        d = self.device
        local, remote = d.tsaps()
        how = (
            f"TSAP {local:04X}/{remote:04X}"
            if d.remote_tsap is not None
            else f"rack {d.rack} slot {d.slot}"
        )
        return f"PLC {d.name} at {d.host}:{d.port} ({how})"

    @property
    def connected(self) -> bool:
        return self.client is not None and self.client.get_connected()

    async def connect(self) -> None:
        if self.connected:
            return
        await self.close()
        local, remote = self.device.tsaps()
        client = AsyncClient()
        client.set_param(Parameter.PDURequest, self.device.pdu_size)
        client.local_tsap = local
        # snap7 builds the remote TSAP as type << 8 | rack << 5 | slot: any TSAP is one of these
        client.set_connection_type(remote >> 8)
        try:
            await asyncio.wait_for(
                client.connect(
                    self.device.host, (remote & 0xFF) >> 5, remote & 0x1F, self.device.port
                ),
                self.timeout_s,
            )
        except (S7Error, OSError, TimeoutError) as exc:
            with contextlib.suppress(Exception):
                await client.disconnect()
            raise LinkDown(f"cannot connect: {self._reason(exc)}") from None
        if client.connection is not None:
            client.connection.timeout = self.timeout_s
        self.client = client
        self.pdu_size = client.get_pdu_length()

    async def _exchange(self, pdu: bytes) -> bytes:
        if self.client is None:
            raise LinkDown("not connected")
        try:
            return bytes(
                await asyncio.wait_for(
                    self.client.iso_exchange_buffer(bytearray(pdu)), self.timeout_s
                )
            )
        except (S7Error, OSError, TimeoutError) as exc:
            await self.close()  # a request cut off mid-way leaves the stream out of step
            raise LinkDown(self._reason(exc)) from None

    async def read(self, request: Request) -> list[bytes | ItemRefused]:
        """Each item's bytes, or ItemRefused for an item the PLC refused."""
        assert self.client is not None
        pdu = self.client.protocol.build_multi_read_request(request.specs())
        data = _payload(await self._exchange(pdu), len(request.items))
        out: list[bytes | ItemRefused] = []
        at = 0
        for index, item in enumerate(request.items):
            if at + 4 > len(data):
                raise LinkDown("the PLC's answer is shorter than the variables asked for")
            code, transport, length = struct.unpack_from(">BBH", data, at)
            at += 4
            if code != 0xFF:
                out.append(ItemRefused(RETURN_CODES.get(code, f"return code 0x{code:02X}")))
                continue
            size = (length + 7) // 8 if transport in (0x03, 0x04, 0x05) else length
            if size != item.length or at + size > len(data):
                raise LinkDown(f"the PLC answered {size} bytes for a read of {item.length}")
            out.append(data[at : at + size])
            at += size + (size % 2 if index < len(request.items) - 1 else 0)
        return out

    async def write(self, area: int, db: int, offset: int, raw: bytes, bit: int | None) -> None:
        """Bytes at `offset`, or (`bit` given) the one bit `raw` holds: an S7 bit write,
        which leaves the byte's other bits as the PLC program has them."""
        assert self.client is not None
        protocol = self.client.protocol
        if bit is not None:
            chunks = [(offset * 8 + bit, S7WordLen.BIT, raw)]
        else:
            size = max(1, self.pdu_size - 35)
            chunks = [
                (offset + at, S7WordLen.BYTE, raw[at : at + size])
                for at in range(0, len(raw), size)
            ]
        for start, word_len, data in chunks:
            pdu = protocol.build_write_request(S7Area(area), db, start, word_len, data)
            answer = _payload(await self._exchange(pdu), 1)
            if not answer or answer[0] != 0xFF:
                code = answer[0] if answer else 0
                raise ItemRefused(RETURN_CODES.get(code, f"return code 0x{code:02X}"))

    def _reason(self, exc: BaseException) -> str:
        if isinstance(exc, TimeoutError) and not str(exc):
            return f"no answer within {self.timeout_s:g} s"
        return str(exc) or exc.__class__.__name__

    async def close(self) -> None:
        client, self.client = self.client, None
        if client is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.disconnect(), 1.0)


def _payload(pdu: bytes, items: int) -> bytes:
    """The data part of a read or write answer; LinkDown if the whole request was refused."""
    if len(pdu) < 12 or pdu[0] != 0x32:
        raise LinkDown("the answer is not an S7 response")
    error_class, error_code = pdu[10], pdu[11]
    if error_class or error_code:
        raise ItemRefused(f"the PLC refused the request (error {error_class:02X}{error_code:02X})")
    if len(pdu) < 14:
        raise LinkDown("the answer is not an S7 response")
    param_len = struct.unpack_from(">H", pdu, 6)[0]
    if param_len < 2 or pdu[13] != items:
        raise LinkDown("the answer does not match the request")
    return pdu[12 + param_len :]
