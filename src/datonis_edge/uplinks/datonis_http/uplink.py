"""The Datonis HTTP uplink: bulk events, heartbeats and alerts, signed with HMAC-SHA256.

Every request carries `X-Access-Key` and `X-Dtn-Signature` (lowercase hex HMAC-SHA256 of the
exact body bytes with the secret key). The edge also sends `X-Dtn-Epoch` and `X-Dtn-Batch-Id`
(the platform ignores headers it does not know) so that an audit can prove no two masters
interleaved and duplicates can be counted.

With `use_compression`, an event body over 1 KB goes out as ZV-framed LZF with
`X-Compressed: LZF`, signed over the uncompressed JSON (wire spec §9, as the C SDK does).
TLS, the proxy and the words for their failures are in transport.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from typing import Any

import aiohttp
import orjson

from ...backoff import REACHABILITY_PROBE_S
from ...model import Batch, Outcome, OutcomeKind
from ...protocol import lzf
from ...protocol.datonis import ALERT_TYPES, ALERTS_PATH, EVENT_PATH, HEARTBEAT_PATH, sign
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
from .transport import (
    explain,
    from_proxy,
    open_session,
    proxy_refused,
    route,
    tls_alert,
    tls_context,
)

COMPRESS_OVER = 1024  # bytes: smaller bodies go as they are (spec §9)


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
        self._route = route(cloud)  # the proxy when one is configured: what the probe tries
        self._tls = tls_context(cloud)
        self._unreachable = False  # the last request could not even connect
        self._probe: asyncio.Task[None] | None = None
        self.status.details["endpoint"] = shown
        if self._route.proxy is not None:
            self.status.details["proxy"] = f"{self._route.host}:{self._route.port}"
        if cloud.use_compression:
            self.status.details["compression"] = f"LZF over {COMPRESS_OVER} bytes"

    async def start(self) -> None:
        # aiohttp rather than httpx here: on this path httpx's async stack costs about 2 ms
        # of CPU per request, aiohttp about 0.4 ms (see docs/benchmarks.md)
        self._session = open_session(self.cloud, self._route, self._tls)
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
            "X-Dtn-Signature": sign(self._secret, body),  # over the JSON, compressed or not
            **self._route.request_headers,
            **(extra or {}),
        }
        wire = body
        if path == EVENT_PATH and self.cloud.use_compression and len(body) > COMPRESS_OVER:
            wire = await _compressed(body)
            headers["Content-Type"] = "application/octet-stream"
            headers["X-Compressed"] = "LZF"
            self.status.count("lzf_bytes_in", len(body))
            self.status.count("lzf_bytes_out", len(wire))
        try:
            async with self._session.post(
                self._base + path,
                data=wire,
                headers=headers,
                proxy=self._route.proxy,
                proxy_headers=self._route.proxy_headers,
            ) as resp:
                text = await resp.text(errors="replace")
                self._unreachable = False
                if from_proxy(resp.status, resp.headers.get("WWW-Authenticate")):
                    return Outcome(
                        OutcomeKind.RETRY, resp.status, proxy_refused(self._route, resp.status)
                    )
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
            return Outcome(OutcomeKind.RETRY, None, await self._explain(exc))

    async def _explain(self, exc: BaseException) -> str:
        reason = explain(exc, self.cloud, self._route)
        dropped = isinstance(exc, aiohttp.ServerDisconnectedError | aiohttp.ClientOSError)
        if (
            dropped
            and self._tls is not None
            and self._route.proxy is None
            and not isinstance(exc, aiohttp.ClientConnectorError)
        ):  # a TLS 1.3 server refusing our certificate (or its absence) just hangs up
            alert = await tls_alert(self._route.host, self._route.port, self._tls, 2.0)
            if alert:
                reason = explain(ssl.SSLError(alert), self.cloud, self._route)
        return reason

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
                    asyncio.open_connection(self._route.host, self._route.port),
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
        body = alert_body(thing_key, ("alert_type", ALERT_TYPES.get(level, 1)), message, extra)
        if isinstance(body, Outcome):
            return body
        return await self._post(ALERTS_PATH, body)


async def _compressed(body: bytes) -> bytes:
    # liblzf takes well under a millisecond for a bulk body; the pure Python codec (where
    # no wheel exists) takes milliseconds, so it runs off the event loop
    if lzf.NATIVE:
        return lzf.encode(body)
    return await asyncio.to_thread(lzf.encode, body)
