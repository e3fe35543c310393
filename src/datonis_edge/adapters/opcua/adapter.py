"""The opcua adapter: reads an OPC UA server (asyncua client) by subscription or polling.

Subscription (data-change notifications at the sampling interval) is the default; a server
that cannot create one is polled instead. Security None, or Basic256Sha256 Sign /
SignAndEncrypt with a client certificate the gateway creates in the data directory
(`pki/opcua/<service>/`) on first use; user name and password. A lost server is reconnected
with backoff and the subscription re-created. The source timestamp is the event timestamp.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import socket
import time
from pathlib import Path
from typing import Any

from asyncua import Client, ua
from asyncua.crypto.cert_gen import setup_self_signed_certificate
from asyncua.crypto.security_policies import SecurityPolicyBasic256Sha256
from cryptography.x509.oid import ExtendedKeyUsageOID

from ..base import Adapter, ReadingSink, Rejected, reading, ticks
from ..devices import backoff_s
from .config import OpcUaService
from .writer import OpcUaWriter

logging.getLogger("asyncua").setLevel(logging.CRITICAL)  # we report server errors ourselves

APP_URI = "urn:datonis-edge:client"


def plain(value: Any) -> Any:
    """An OPC UA value as JSON can carry it."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return str(value)


def timestamp_ms(dv: ua.DataValue) -> int:
    ts = dv.SourceTimestamp or dv.ServerTimestamp
    if ts is None:
        return int(time.time() * 1000)
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=dt.UTC)
    return int(ts.timestamp() * 1000)


class _Changes:
    """asyncua calls this on every data-change notification."""

    def __init__(
        self, queue: asyncio.Queue[tuple[str, Any, int]], names: dict[ua.NodeId, str]
    ) -> None:
        self.queue = queue
        self.names = names

    def datachange_notification(self, node: Any, val: Any, data: Any) -> None:
        dv = data.monitored_item.Value
        if dv.StatusCode is not None and not dv.StatusCode.is_good():
            return
        name = self.names.get(node.nodeid)
        if name is not None:
            self.queue.put_nowait((name, plain(val), timestamp_ms(dv)))

    def status_change_notification(self, status: Any) -> None:
        self.queue.put_nowait(("", status, 0))  # wakes the loop: the session is in trouble


class OpcUaAdapter(Adapter):
    type = "opcua"
    hint = "check the server at the endpoint, its security settings and that it trusts our certificate; reconnecting with backoff"

    def __init__(
        self, config: OpcUaService, sink: ReadingSink, workdir: Path | None = None
    ) -> None:
        super().__init__(config, sink, workdir)
        self.config: OpcUaService = config
        self._things = [(t.thing_key, t.tags_used()) for t in config.things]
        self.writer = OpcUaWriter(
            config.endpoint, {t.name: t.node_id for t in config.tags}, config.timeout_ms / 1000
        )
        self.status.details.update(
            {
                "endpoint": config.endpoint,
                "mode": config.mode,
                "security": f"{config.security_policy}/{config.security_mode}",
            }
        )

    # ------------------------------------------------------------------ writes (writer.py)

    async def check_write(self, tag: str, value: Any, wait_s: float = 0.0) -> Any:
        return await self.writer.check(tag, value, wait_s)

    async def write(self, tag: str, value: Any) -> None:
        # `value` is what check_write returned: the value and the node's variant type
        await self.writer.write(tag, *value)

    # ------------------------------------------------------------------ session

    async def run(self) -> None:
        failures = 0
        while True:
            try:
                await self._session()
                failures = 0
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # any server or network fault: report, back off, reconnect
                failures += 1
                delay = backoff_s(failures, self.config.retry_max_backoff_ms / 1000)
                reason = str(exc) or exc.__class__.__name__
                self.status.error(f"{reason}; reconnecting in {delay:.1f} s", "disconnected")
                self.status.details["connected"] = False
                await asyncio.sleep(delay)

    async def _client(self) -> Client:
        cfg = self.config
        client = Client(cfg.endpoint, timeout=cfg.timeout_ms / 1000)
        client.application_uri = APP_URI
        if cfg.username:
            client.set_user(cfg.username)
            client.set_password(cfg.password.get_secret_value())
        if cfg.security_policy == "Basic256Sha256":
            key, cert = await self.client_certificate()
            mode = getattr(ua.MessageSecurityMode, cfg.security_mode or "SignAndEncrypt")
            await client.set_security(SecurityPolicyBasic256Sha256, str(cert), str(key), mode=mode)
        return client

    async def client_certificate(self) -> tuple[Path, Path]:
        """The gateway's client key and certificate, created on first use and kept."""
        base = (self.workdir or Path(".")) / "pki" / "opcua" / self.config.name
        base.mkdir(parents=True, exist_ok=True)
        key, cert = base / "client-key.pem", base / "client-cert.der"
        await setup_self_signed_certificate(
            key, cert, APP_URI, socket.gethostname(), [ExtendedKeyUsageOID.CLIENT_AUTH],
            {"commonName": f"datonis-edge {self.config.name}", "organizationName": "datonis-edge"},
        )  # fmt: skip
        key.chmod(0o600)
        return key, cert

    async def _session(self) -> None:
        client = await self._client()
        await client.connect()
        try:
            nodes = [client.get_node(t.node_id) for t in self.config.tags]
            names = {n.nodeid: t.name for n, t in zip(nodes, self.config.tags, strict=True)}
            self.status.details["connected"] = True
            self.writer.attach(client)
            if self.config.mode == "subscription":
                try:
                    await self._subscribe(client, nodes, names)
                    return
                except ua.UaStatusCodeError as exc:
                    self.status.error(f"subscription refused ({exc}); polling instead")
            await self._poll(client, nodes)
        finally:
            self.writer.attach(None)
            self.status.details["connected"] = False
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.disconnect(), 2)

    async def _subscribe(self, client: Client, nodes: list[Any], names: dict[Any, str]) -> None:
        queue: asyncio.Queue[tuple[str, Any, int]] = asyncio.Queue()
        sampling = self.config.sampling_interval_ms
        if sampling is None:
            sampling = self.config.scan_interval_ms
        sub = await client.create_subscription(sampling, _Changes(queue, names))
        results = await sub.subscribe_data_change(nodes, sampling_interval=sampling)
        bad = [self.config.tags[i].name for i, r in enumerate(results) if not isinstance(r, int)]
        if bad:
            self.status.error(f"cannot subscribe to {', '.join(bad)}")
        self.status.details["mode_in_use"] = "subscription"
        self.status.ok("connected")
        while True:
            try:
                first = await asyncio.wait_for(queue.get(), 1.0)
            except TimeoutError:
                # quiet: prove the server is still there (a dead one raises here)
                await asyncio.wait_for(
                    client.nodes.server_state.read_value(), self.config.timeout_ms / 1000
                )
                continue
            items = [first]
            while not queue.empty():
                items.append(queue.get_nowait())
            if any(name == "" for name, _, _ in items):
                await asyncio.wait_for(
                    client.nodes.server_state.read_value(), self.config.timeout_ms / 1000
                )
            await self._store([i for i in items if i[0]])

    async def _poll(self, client: Client, nodes: list[Any]) -> None:
        self.status.details["mode_in_use"] = "polling"
        self.status.ok("connected")
        async for _ in ticks(self.config.scan_interval_ms / 1000):
            dvs = await asyncio.wait_for(
                client.read_attributes(nodes), self.config.timeout_ms / 1000
            )
            items = [
                (
                    tag.name,
                    plain(dv.Value.Value if dv.Value is not None else None),
                    timestamp_ms(dv),
                )
                for tag, dv in zip(self.config.tags, dvs, strict=True)
                if dv.StatusCode is None or dv.StatusCode.is_good()
            ]
            await self._store(items)

    async def _store(self, items: list[tuple[str, Any, int]]) -> None:
        """One reading per thing and timestamp, from the tag values that changed."""
        merged: dict[tuple[str, int], dict[str, Any]] = {}
        for name, value, ts in items:
            for thing_key, tags in self._things:
                if name in tags:
                    merged.setdefault((thing_key, ts), {})[name] = value
        readings = [reading(k, ts, data) for (k, ts), data in merged.items()]
        if not readings:
            return
        try:
            await self.sink(readings)
            self.status.ok("connected")
        except Rejected as exc:
            self.status.error(exc.reason)
