"""Writes for instructions: a value to a node, in the node's own variant type.

Writes use the adapter's session (one connection to the server). The node's data type is
asked once per session and the value converted to it (range checked) before anything is
written; a node of a type an instruction cannot carry is refused by name.
"""

from __future__ import annotations

import asyncio
from typing import Any

from asyncua import Client, ua

from ..base import ValueRefused, WriteFailed, fit_value

# the variant types an instruction's JSON value can be written as
_TYPES = {
    ua.VariantType.Boolean: "bool",
    ua.VariantType.SByte: "int8",
    ua.VariantType.Byte: "uint8",
    ua.VariantType.Int16: "int16",
    ua.VariantType.UInt16: "uint16",
    ua.VariantType.Int32: "int32",
    ua.VariantType.UInt32: "uint32",
    ua.VariantType.Int64: "int64",
    ua.VariantType.UInt64: "uint64",
    ua.VariantType.Float: "float32",
    ua.VariantType.Double: "float64",
    ua.VariantType.String: "string",
}


class OpcUaWriter:
    def __init__(self, endpoint: str, node_ids: dict[str, str], timeout_s: float) -> None:
        self.endpoint = endpoint
        self.node_ids = node_ids  # tag name -> node id
        self.timeout_s = timeout_s
        self.client: Client | None = None
        self.connected = asyncio.Event()
        self._types: dict[str, ua.VariantType] = {}

    def attach(self, client: Client | None) -> None:
        """The adapter's session is up (a client) or gone (None)."""
        self.client = client
        self._types.clear()
        if client is None:
            self.connected.clear()
        else:
            self.connected.set()

    def _down(self, reason: str) -> WriteFailed:
        return WriteFailed(f"the OPC UA server at {self.endpoint} does not answer: {reason}")

    async def _session(self, wait_s: float) -> Client:
        if not self.connected.is_set():
            try:
                await asyncio.wait_for(self.connected.wait(), wait_s)
            except TimeoutError:
                raise self._down(f"no session after {wait_s:g} s") from None
        assert self.client is not None
        return self.client

    async def check(self, tag: str, value: Any, wait_s: float) -> tuple[Any, ua.VariantType]:
        node_id = self.node_ids.get(tag)
        if node_id is None:
            raise ValueRefused(f"no tag named {tag}")
        client = await self._session(wait_s)
        vtype = self._types.get(tag)
        if vtype is None:
            try:
                vtype = await asyncio.wait_for(
                    client.get_node(node_id).read_data_type_as_variant_type(), self.timeout_s
                )
            except ua.UaStatusCodeError as exc:
                raise ValueRefused(f"{tag} ({node_id}): the server says {exc}") from None
            except (OSError, TimeoutError, ConnectionError, ua.UaError) as exc:
                raise self._down(str(exc) or exc.__class__.__name__) from None
            self._types[tag] = vtype
        data_type = _TYPES.get(vtype)
        if data_type is None:
            raise ValueRefused(
                f"{tag} ({node_id}) is a {vtype.name} node, which instructions cannot write"
            )
        return fit_value(value, data_type, tag), vtype

    async def write(self, tag: str, value: Any, vtype: ua.VariantType) -> None:
        client = await self._session(0.0)
        node = client.get_node(self.node_ids[tag])
        try:
            await asyncio.wait_for(
                node.write_value(ua.DataValue(ua.Variant(value, vtype))), self.timeout_s
            )
        except ua.UaStatusCodeError as exc:
            raise WriteFailed(
                f"the OPC UA server refused the write of {tag} ({self.node_ids[tag]}): {exc}"
            ) from None
        except (OSError, TimeoutError, ConnectionError, ua.UaError) as exc:
            raise self._down(str(exc) or exc.__class__.__name__) from None
