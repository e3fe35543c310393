"""The http_listener adapter: the Datonis event API, served at the edge.

`POST /api/v3/things/event.json` takes one event or `{"events": [...]}` exactly as the Datonis
platform does, so an existing Datonis agent can point at the edge and gain store-and-forward.
It answers 200 only once the events are durable in the outbox, 4xx naming what is wrong with
the request, 503 with Retry-After when the outbox cannot take them.

A bare ASGI app rather than a framework route: this is the hot path of bulk ingestion.
"""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path
from typing import Any

import orjson

from ...protocol.datonis import ALERTS_PATH, EVENT_PATH, HEARTBEAT_PATH, signature_ok
from ...serving import bind_socket, serve_app
from ..base import Adapter, ReadingSink, Rejected
from .config import HttpListenerService


class BadRequest(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def validate_events(payload: Any, now_ms: int) -> tuple[list[dict[str, Any]], bool]:
    """The events of a Datonis event body, each checked, and whether any had to be completed
    (a missing timestamp becomes `now_ms`); raises BadRequest(422) naming the first fault."""
    if isinstance(payload, dict) and "events" in payload:
        events = payload["events"]
        if not isinstance(events, list):
            raise BadRequest(422, "'events' must be a list of events")
        bulk = True
    elif isinstance(payload, dict):
        events = [payload]
        bulk = False
    else:
        raise BadRequest(422, 'the body must be a JSON object: one event or {"events": [...]}')
    if not events:
        raise BadRequest(422, "'events' is empty")
    completed = False
    for i, ev in enumerate(events):
        if type(ev) is not dict:
            raise BadRequest(422, f"{_where(bulk, i)}: must be an object")
        key = ev.get("thing_key")
        if type(key) is not str or not key:
            raise BadRequest(422, f"{_where(bulk, i)}.thing_key: required, a non-empty string")
        if type(ev.get("data")) is not dict:
            raise BadRequest(422, f"{_where(bulk, i)}.data: required, an object of metric: value")
        ts = ev.get("timestamp")
        if type(ts) is int and ts >= 0:
            continue
        if ts is None:
            ev["timestamp"] = now_ms
        elif type(ts) is float and ts >= 0:
            ev["timestamp"] = int(ts)
        else:
            raise BadRequest(
                422, f"{_where(bulk, i)}.timestamp: must be epoch milliseconds (a number)"
            )
        completed = True
    return events, completed


def _events_json(body: bytes, payload: Any, events: list[dict[str, Any]]) -> bytes | None:
    """The events as a JSON array cut from the body itself, when the body holds exactly them
    unchanged: the outbox then stores the client's bytes without serializing them again."""
    if payload is events[0]:  # one event: the body is that object
        return b"[" + body.strip() + b"]"
    if len(payload) != 1:  # other keys beside "events"
        return None
    # {"events": [...]} and nothing else: the first "[" opens the array, the last "]" closes it
    return body[body.index(b"[") : body.rindex(b"]") + 1]


def _where(bulk: bool, i: int) -> str:
    return f"events[{i}]" if bulk else "event"


class HttpListenerAdapter(Adapter):
    type = "http_listener"

    def __init__(
        self, config: HttpListenerService, sink: ReadingSink, workdir: Path | None = None
    ) -> None:
        super().__init__(config, sink, workdir)
        self.config: HttpListenerService = config
        self._keys = {k.access_key: k.secret_key.get_secret_value() for k in config.keys}
        self._sock: socket.socket | None = None
        self._bound = asyncio.Event()
        self.status.details.update({"host": config.host, "port": config.port})

    async def ready(self) -> None:
        await self._bound.wait()

    def bind(self) -> None:
        """Bind the port now, so that a port already in use is reported at start."""
        if self._sock is None:
            self._sock = bind_socket(
                self.config.host, self.config.port, f"services '{self.config.name}'"
            )

    async def run(self) -> None:
        self.bind()
        assert self._sock is not None
        self.status.state = "listening"
        self._bound.set()
        await serve_app(self.app, self._sock)

    # ------------------------------------------------------------------ ASGI

    async def app(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":  # serve_app runs without lifespan events
            return
        status, body, extra = await self._handle(scope, receive)
        headers = [(b"content-type", b"application/json"), *extra]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def _handle(
        self, scope: dict[str, Any], receive: Any
    ) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
        path, method = scope["path"], scope["method"]
        if path in ("/healthz", "/") and method == "GET":
            return 200, b'{"status":"ok"}', []
        if path not in (EVENT_PATH, HEARTBEAT_PATH, ALERTS_PATH):
            return 404, _err(f"no such endpoint {path}; post events to {EVENT_PATH}"), []
        if method != "POST":
            return 405, _err(f"use POST for {path}"), [(b"allow", b"POST")]
        try:
            body = await self._read_body(receive)
            self._check_signature(scope, body)
            if path != EVENT_PATH:
                return 200, b'{"status":"ok"}', []
            try:
                payload = orjson.loads(body)
            except orjson.JSONDecodeError as exc:
                raise BadRequest(400, f"the body is not valid JSON ({exc})") from None
            events, completed = validate_events(payload, int(time.time() * 1000))
        except BadRequest as exc:
            self.status.count("bad_requests")
            self.status.error(f"{exc.status}: {exc.reason}")
            return exc.status, _err(exc.reason), []
        try:
            await self.sink(events, raw=None if completed else _events_json(body, payload, events))
        except Rejected as exc:
            self.status.count("rejected", len(events))
            self.status.error(exc.reason)
            return 503, _err(exc.reason), [(b"retry-after", b"5")]
        self.status.count("requests")
        self.status.count("events", len(events))
        return 200, b'{"status":"ok","accepted":%d}' % len(events), []

    async def _read_body(self, receive: Any) -> bytes:
        chunks = []
        size = 0
        limit = self.config.max_body_bytes
        while True:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                raise BadRequest(400, "the client went away before the body was complete")
            chunk = msg.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise BadRequest(
                    413, f"the body is larger than max_body_bytes ({limit}); send smaller bulks"
                )
            chunks.append(chunk)
            if not msg.get("more_body"):
                return b"".join(chunks)

    def _check_signature(self, scope: dict[str, Any], body: bytes) -> None:
        if not self._keys:
            return
        headers = dict(scope["headers"])
        access = headers.get(b"x-access-key", b"").decode(errors="replace")
        sig = headers.get(b"x-dtn-signature", b"").decode(errors="replace")
        secret = self._keys.get(access)
        if secret is None:
            raise BadRequest(401, "unknown or missing X-Access-Key")
        if not signature_ok(secret, body, sig):
            raise BadRequest(401, "X-Dtn-Signature does not match HMAC-SHA256(secret_key, body)")


def _err(reason: str) -> bytes:
    return orjson.dumps({"status": "error", "reason": reason})
