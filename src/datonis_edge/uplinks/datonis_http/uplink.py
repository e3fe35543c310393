"""The Datonis HTTP uplink: bulk events, heartbeats and alerts, signed with HMAC-SHA256.

Every request carries `X-Access-Key` and `X-Dtn-Signature` (lowercase hex HMAC-SHA256 of the
exact body bytes with the secret key). The edge also sends `X-Dtn-Epoch` and `X-Dtn-Batch-Id`
(the platform ignores headers it does not know) so that an audit can prove no two masters
interleaved and duplicates can be counted.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any
from urllib.parse import urlparse

import aiohttp
import orjson

from ...backoff import REACHABILITY_PROBE_S
from ...model import Batch, Outcome, OutcomeKind
from ...protocol.datonis import ALERTS_PATH, EVENT_PATH, HEARTBEAT_PATH, sign
from ..base import (
    Uplink,
    alert_body,
    heartbeat_body,
    local_decline,
    outcome_for,
    parse_retry_after,  # noqa: F401 - re-exported for the outcome-table tests
    redact_url,
)
from .config import DatonisHttpCloud

ALERT_LEVELS = {"info": 0, "warning": 1, "error": 2, "critical": 3}


class DatonisHttpUplink(Uplink):
    type = "datonis_http"

    def __init__(self, cloud: DatonisHttpCloud) -> None:
        shown = redact_url(cloud.endpoint)
        super().__init__(f"datonis {shown}")
        self.cloud = cloud
        self._access = cloud.access_key.get_secret_value()
        self._secret = cloud.secret_key.get_secret_value().encode()
        self._session: aiohttp.ClientSession | None = None
        self._base = cloud.endpoint.rstrip("/")
        url = urlparse(cloud.endpoint)
        self._host = url.hostname or "127.0.0.1"
        self._port = url.port or (443 if url.scheme == "https" else 80)
        self._unreachable = False  # the last request could not even connect
        self._probe: asyncio.Task[None] | None = None
        self.status.details["endpoint"] = shown

    async def start(self) -> None:
        # aiohttp rather than httpx here: on this path httpx's async stack costs about 2 ms
        # of CPU per request, aiohttp about 0.4 ms (see docs/benchmarks.md)
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.cloud.request_timeout_ms / 1000),
            connector=aiohttp.TCPConnector(limit=self.cloud.max_inflight_batches + 2),
            raise_for_status=False,
        )
        self.status.state = "ready"

    async def close(self) -> None:
        if self._probe is not None:
            self._probe.cancel()
        # closing the session aborts what is still on the wire; those batches stay queued
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    async def _post(self, path: str, body: bytes, extra: dict[str, str] | None = None) -> Outcome:
        if self._session is None:  # not started yet, or closed by a stop
            return Outcome(OutcomeKind.RETRY, None, "the uplink is not open")
        headers = {
            "Content-Type": "application/json",
            "X-Access-Key": self._access,
            "X-Dtn-Signature": sign(self._secret, body),
            **(extra or {}),
        }
        try:
            async with self._session.post(self._base + path, data=body, headers=headers) as resp:
                text = await resp.text(errors="replace")
                self._unreachable = False
                return outcome_for(resp.status, text, resp.headers.get("Retry-After"))
        except TimeoutError:
            return Outcome(
                OutcomeKind.RETRY, None, f"no answer within {self.cloud.request_timeout_ms} ms"
            )
        except (aiohttp.ClientError, OSError) as exc:
            # no TCP connection at all (refused, no route): the probe may shorten the wait; a
            # TLS failure connects fine and would only fail again, so it keeps its backoff
            self._unreachable = isinstance(exc, aiohttp.ClientConnectorError) and not isinstance(
                exc, aiohttp.ClientSSLError
            )
            return Outcome(
                OutcomeKind.RETRY,
                None,
                redact_url(f"connection error: {exc.__class__.__name__}: {exc}"),
            )

    async def wait_reachable(self) -> None:
        """A TCP connect to the endpoint every REACHABILITY_PROBE_S until one succeeds
        (one probe shared by every batch waiting); no request reaches the platform."""
        if not self._unreachable:
            await asyncio.Event().wait()
        if self._probe is None or self._probe.done():
            self._probe = asyncio.ensure_future(self._probe_until_connected())
        await asyncio.shield(self._probe)

    async def _probe_until_connected(self) -> None:
        while True:
            await asyncio.sleep(REACHABILITY_PROBE_S)
            try:
                _, writer = await asyncio.wait_for(
                    asyncio.open_connection(self._host, self._port),
                    max(REACHABILITY_PROBE_S, self.cloud.request_timeout_ms / 1000),
                )
            except (OSError, TimeoutError):
                continue
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            self._unreachable = False
            return

    async def send(self, batch: Batch) -> Outcome:
        try:  # the events as the outbox stored them, byte for byte
            body = batch.envelope()
        except (orjson.JSONEncodeError, TypeError, ValueError) as exc:
            outcome = local_decline(exc)
            self._record(outcome)
            return outcome
        outcome = await self._post(
            EVENT_PATH, body, {"X-Dtn-Epoch": str(batch.epoch), "X-Dtn-Batch-Id": batch.batch_id}
        )
        self._record(outcome)
        return outcome

    def _record(self, outcome: Outcome) -> None:
        if outcome.kind is OutcomeKind.DELIVERED:
            self.status.ok("connected")
        elif outcome.kind is OutcomeKind.DECLINED:
            if outcome.keys_suspect:
                self.status.error(outcome.reason, "declining")
            else:  # a local decline (status None) says nothing of the connection
                self.status.error(outcome.reason, None if outcome.status is None else "connected")
        else:
            self.status.error(outcome.reason, "retrying")

    async def heartbeat(self, thing_keys: list[str]) -> Outcome:
        return await self._post(HEARTBEAT_PATH, heartbeat_body(thing_keys))

    async def alert(
        self, thing_key: str | None, level: str, message: str, extra: dict[str, Any] | None = None
    ) -> Outcome:
        body = alert_body(thing_key, ("alert_type", ALERT_LEVELS.get(level, 1)), message, extra)
        if isinstance(body, Outcome):
            return body
        return await self._post(ALERTS_PATH, body)
