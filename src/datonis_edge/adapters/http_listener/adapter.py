"""The http_listener adapter: the Datonis event API, served at the edge.

`POST /api/v3/things/event.json` takes one event or `{"events": [...]}` exactly as the Datonis
platform does, so an existing Datonis agent can point at the edge and gain store-and-forward.
It answers 200 only once the events are durable in the outbox, 4xx naming what is wrong with
the request (400 not JSON, 413 too large, 422 an event outside what `readings.py` accepts), 503
with Retry-After when the outbox cannot take them. What is stored is exactly the events that
were checked, serialized once by orjson: never a slice of the client's text.

A bare ASGI app rather than a framework route: this is the hot path of bulk ingestion.
"""

from __future__ import annotations

import json
import logging
import socket
import time
from pathlib import Path
from typing import Any

import orjson

from ...logs import OnceLogger
from ...protocol.datonis import ALERTS_PATH, EVENT_PATH, HEARTBEAT_PATH, signature_ok
from ...readings import (
    MAX_DEPTH,
    InvalidReading,
    check_json_readings,
    check_reading,
    readings_json,
)
from ...serving import bind_socket, serve_app
from ..base import Adapter, ReadingSink, Rejected
from .config import HttpListenerService

log = logging.getLogger(__name__)


_TOO_DEEP = f"the body is nested too deep; at most {MAX_DEPTH} levels are accepted in data"


class BadRequest(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def parse_events(body: bytes, now_ms: int) -> tuple[list[dict[str, Any]], bytes]:
    """The checked events of a Datonis event body (one event, or `{"events": [...]}`), and
    the JSON array the outbox stores for them; raises BadRequest: 400 when the body is not
    JSON, 422 naming the first fault of the events."""
    try:
        payload = orjson.loads(body)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError alike
        if isinstance(exc, RecursionError) or "depth limit" in str(exc):
            raise BadRequest(422, _TOO_DEEP) from None  # valid JSON, only too deep to read
        raise BadRequest(
            400, f'the body is not valid JSON ({exc}); send one event or {{"events": [...]}}'
        ) from None
    try:
        if type(payload) is dict and "events" in payload:
            if body.count(b'"events"') > 1 and _repeats_events_key(body):
                raise BadRequest(
                    422, 'the body has the key "events" more than once; send one "events" list'
                )
            return check_json_readings(payload["events"], now_ms)
        if type(payload) is dict:
            events = [check_reading(payload, now_ms)]
            return events, readings_json(events)
    except InvalidReading as exc:
        raise BadRequest(422, exc.reason) from None
    raise BadRequest(422, 'the body must be a JSON object: one event or {"events": [...]}')


def _repeats_events_key(body: bytes) -> bool:
    """Whether the body's own object has "events" twice (orjson keeps the last silently). Only
    asked when the text "events" occurs twice, so the slower parse is rare."""
    last: list[list[tuple[str, Any]]] = []

    def keep(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        last[:] = [pairs]  # the outermost object is completed last
        return {}

    try:
        json.loads(body, object_pairs_hook=keep)
    except ValueError:
        return False  # orjson read it: its reading stands
    except RecursionError:
        raise BadRequest(422, _TOO_DEEP) from None
    return [k for k, _ in last[0]].count("events") > 1


class HttpListenerAdapter(Adapter):
    type = "http_listener"
    hint = "producers get 503 and send again meanwhile"

    def __init__(
        self, config: HttpListenerService, sink: ReadingSink, workdir: Path | None = None
    ) -> None:
        super().__init__(config, sink, workdir)
        self.config: HttpListenerService = config
        self._keys = {k.access_key: k.secret_key.get_secret_value() for k in config.keys}
        self._sock: socket.socket | None = None
        self._once = OnceLogger(log)
        self.status.details.update({"host": config.host, "port": config.port})

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
        await serve_app(self.app, self._sock, self.config.limits, f"services '{self.config.name}'")

    # ------------------------------------------------------------------ ASGI

    async def app(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":  # serve_app runs without lifespan events
            return
        try:
            status, body, extra = await self._handle(scope, receive)
        except Exception as exc:  # a bug: the client gets one line, the log the traceback
            self._once.log(
                "internal error",
                "services '%s': %s failed: %s",
                self.config.name,
                scope["path"],
                exc,
                level=logging.ERROR,
                exc_info=exc,
            )
            self.status.count("internal_errors")
            status, extra = 500, []
            body = _err(f"internal error ({exc.__class__.__name__}); see the gateway log")
        # a known length: no chunked framing to write and for the client to parse
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", b"%d" % len(body)),
            *extra,
        ]
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
            events, raw = parse_events(body, int(time.time() * 1000))
        except BadRequest as exc:
            self.status.count("bad_requests")
            self.status.error(f"{exc.status}: {exc.reason}", announce=False)
            self._once.log(
                "bad request",
                "services '%s': refused a request with %d: %s (the producer must fix it; "
                "counted in bad_requests)",
                self.config.name,
                exc.status,
                exc.reason,
            )
            return exc.status, _err(exc.reason), []
        try:
            await self.sink(events, raw=raw, checked=True)
        except Rejected as exc:
            self.status.error(exc.reason)
            return 503, _err(exc.reason), [(b"retry-after", b"5")]
        self.status.ok()
        self.status.count("requests")
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
