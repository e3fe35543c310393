"""The platform simulator: the Datonis event, heartbeat and alert endpoints, with HMAC checks,
switchable faults and a record of everything it accepted.

Platform API (what the gateway talks to):
    POST /api/v3/things/event.json      one event or {"events": [...]}
    POST /api/v3/things/heartbeat.json
    POST /api/v3/alerts.json
  every request needs X-Access-Key (a known key) and X-Dtn-Signature = hex HMAC-SHA256 of the
  body with that key's secret, else 401; malformed events give 422. A body sent with
  `X-Compressed: LZF` (ZV-framed LZF, wire spec §9) is decoded first and the signature checked
  over the decoded body; one that does not decode gets 400. `/sim/requests` (its `compressed`)
  and `/sim/stats` (`lzf_bodies`) say which bodies came compressed.

Control API (for tests, demos and benchmarks), under /sim:
    GET  /sim/events?offset=N     accepted events, each with batch_id, epoch, received_ms
    GET  /sim/stats               counts: events, requests, by status, heartbeats, alerts
    GET  /sim/alerts              accepted alerts
    GET  /sim/requests            the last 10,000 event requests: time, status, batch id
    POST /sim/faults              {"status": 429, "retry_after": 1, "count": 3}
                                  {"delay_ms": 2000, "count": 1}   {"drop": true, "count": 2}
                                  count -1 = until cleared; several faults queue in order
    DELETE /sim/faults            clear all faults
    POST /sim/keys                {"access_key": "...", "secret_key": "..."} (replaces the keys)
    POST /sim/reset               forget what was recorded

With `mqtt_broker` (platform-sim --mqtt-broker): the MQTT side too, recording into the same
state, with its own control routes (/sim/mqtt, /sim/mqtt/faults, /sim/instructions):
see mqtt_side.py.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..protocol import lzf
from ..protocol.datonis import ALERTS_PATH, EVENT_PATH, HEARTBEAT_PATH, signature_ok


@dataclass
class Fault:
    status: int | None = None
    retry_after: float | None = None
    delay_ms: int = 0
    drop: bool = False
    count: int = 1
    paths: tuple[str, ...] = (EVENT_PATH,)


@dataclass
class SimState:
    keys: dict[str, str]
    record: bool = True
    events: list[dict[str, Any]] = field(default_factory=list)
    event_count: int = 0
    requests: int = 0
    by_status: dict[str, int] = field(default_factory=dict)
    heartbeats: list[dict[str, Any]] = field(default_factory=list)
    alerts: list[dict[str, Any]] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)
    epochs_seen: list[int] = field(default_factory=list)
    request_log: list[dict[str, Any]] = field(default_factory=list)
    lzf_bodies: int = 0  # requests whose body came LZF-compressed and decoded


class _DroppedResponse(Response):
    """Starts a response and breaks off mid-body: the connection drops, as a flaky network's would."""

    def __init__(self) -> None:
        super().__init__(b"")

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await send(
            {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"100")]}
        )
        await send({"type": "http.response.body", "body": b'{"status":', "more_body": False})


def _json(status: int, obj: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(
        orjson.dumps(obj), status_code=status, media_type="application/json", headers=headers
    )


def _validate_event(ev: Any, where: str) -> str | None:
    if not isinstance(ev, dict):
        return f"{where}: must be an object"
    if not isinstance(ev.get("thing_key"), str) or not ev["thing_key"]:
        return f"{where}.thing_key: required"
    if not isinstance(ev.get("data"), dict):
        return f"{where}.data: required, an object"
    ts = ev.get("timestamp")
    if ts is not None and (isinstance(ts, bool) or not isinstance(ts, int | float)):
        return f"{where}.timestamp: must be epoch milliseconds"
    return None


def record_events(
    state: SimState, events: list[dict[str, Any]], epoch: int | None, batch_id: str | None
) -> None:
    """Accepted events, as both sides (HTTP and MQTT) record them."""
    now = int(time.time() * 1000)
    if epoch is not None and (not state.epochs_seen or state.epochs_seen[-1] != epoch):
        state.epochs_seen.append(epoch)
    if state.record:
        for ev in events:
            state.events.append(
                {
                    "thing_key": ev["thing_key"],
                    "timestamp": ev.get("timestamp"),
                    "data": ev["data"],
                    "batch_id": batch_id,
                    "epoch": epoch,
                    "received_ms": now,
                }
            )
    state.event_count += len(events)


def create_app(
    access_key: str, secret_key: str, record: bool = True, mqtt_broker: str | None = None
) -> Starlette:
    """`mqtt_broker` (mqtt://user:password@host:port of a broker that checks the gateway's
    login): the MQTT side too (platform_sim/mqtt_side.py)."""
    state = SimState(keys={access_key: secret_key}, record=record)

    def count(status: int) -> None:
        state.by_status[str(status)] = state.by_status.get(str(status), 0) + 1

    async def apply_fault(path: str) -> Response | None:
        if not state.faults:
            return None
        fault = state.faults[0]
        if path not in fault.paths:
            return None
        if fault.count > 0:
            fault.count -= 1
            if fault.count == 0:
                state.faults.pop(0)
        if fault.delay_ms:
            await asyncio.sleep(fault.delay_ms / 1000)
        if fault.drop:
            return _DroppedResponse()
        if fault.status is not None:
            headers = (
                {"Retry-After": f"{fault.retry_after:g}"} if fault.retry_after is not None else None
            )
            count(fault.status)
            return _json(
                fault.status, {"status": "error", "reason": f"simulated {fault.status}"}, headers
            )
        return None

    async def authenticate(request: Request) -> tuple[bytes, Response | None]:
        body = await request.body()
        encoding = request.headers.get("x-compressed")
        if encoding is not None:
            if encoding.strip().upper() != "LZF":
                count(400)
                return body, _json(400, {"status": "error", "reason": "X-Compressed: only LZF"})
            try:
                body = lzf.decode(body)
            except lzf.LZFError as exc:
                count(400)
                return body, _json(400, {"status": "error", "reason": f"LZF body: {exc}"})
            state.lzf_bodies += 1
        access = request.headers.get("x-access-key", "")
        secret = state.keys.get(access)
        if secret is None:
            count(401)
            return body, _json(401, {"status": "error", "reason": "unknown access key"})
        if not signature_ok(secret, body, request.headers.get("x-dtn-signature", "")):
            count(401)
            return body, _json(401, {"status": "error", "reason": "signature mismatch"})
        return body, None

    async def admit(request: Request) -> tuple[Any, Response | None]:
        """What every platform endpoint does first: a queued fault, the HMAC check, the JSON."""
        fault = await apply_fault(request.url.path)
        if fault is not None:
            return None, fault
        body, denied = await authenticate(request)
        if denied is not None:
            return None, denied
        try:
            return orjson.loads(body), None
        except orjson.JSONDecodeError:
            count(422)
            return None, _json(422, {"status": "error", "reason": "body is not JSON"})

    async def event(request: Request) -> Response:
        response = await _event(request)
        state.request_log.append(
            {
                "ms": int(time.time() * 1000),
                "status": response.status_code,
                "batch_id": request.headers.get("x-dtn-batch-id"),
                "compressed": request.headers.get("x-compressed"),
                "epoch": int(e)
                if (e := request.headers.get("x-dtn-epoch", "")).isdigit()
                else None,
            }
        )
        del state.request_log[:-10_000]
        return response

    async def _event(request: Request) -> Response:
        state.requests += 1
        payload, refused = await admit(request)
        if refused is not None:
            return refused
        if isinstance(payload, dict) and "events" in payload:
            events = payload["events"]
            if not isinstance(events, list) or not events:
                count(422)
                return _json(422, {"status": "error", "reason": "events must be a non-empty list"})
            bulk = True
        else:
            events, bulk = [payload], False
        for i, ev in enumerate(events):
            problem = _validate_event(ev, f"events[{i}]" if bulk else "event")
            if problem:
                count(422)
                return _json(422, {"status": "error", "reason": problem})
        epoch_h = request.headers.get("x-dtn-epoch")
        epoch = (
            int(epoch_h)
            if epoch_h and epoch_h.isdigit()
            else payload.get("epoch")
            if bulk
            else None
        )
        batch_id = request.headers.get("x-dtn-batch-id") or (
            payload.get("batch_id") if bulk else None
        )
        record_events(state, events, epoch, batch_id)
        count(200)
        return _json(200, {"status": "ok", "accepted": len(events)})

    async def heartbeat(request: Request) -> Response:
        obj, refused = await admit(request)
        if refused is not None:
            return refused
        state.heartbeats.append({"body": obj, "received_ms": int(time.time() * 1000)})
        return _json(200, {"status": "ok"})

    async def alert(request: Request) -> Response:
        obj, refused = await admit(request)
        if refused is not None:
            return refused
        if not isinstance(obj, dict) or not isinstance(obj.get("message"), str):
            return _json(422, {"status": "error", "reason": "message: required"})
        state.alerts.append({**obj, "received_ms": int(time.time() * 1000)})
        return _json(200, {"status": "ok"})

    async def sim_events(request: Request) -> Response:
        offset = int(request.query_params.get("offset", "0"))
        limit = int(request.query_params.get("limit", "1000000"))
        return _json(
            200, {"total": len(state.events), "events": state.events[offset : offset + limit]}
        )

    async def sim_stats(_: Request) -> Response:
        return _json(
            200,
            {
                "events": state.event_count,
                "requests": state.requests,
                "by_status": state.by_status,
                "heartbeats": len(state.heartbeats),
                "alerts": len(state.alerts),
                "epochs_seen": state.epochs_seen,
                "faults_queued": len(state.faults),
                "lzf_bodies": state.lzf_bodies,
            },
        )

    async def sim_requests(_: Request) -> Response:
        return _json(200, {"requests": state.request_log})

    async def sim_alerts(_: Request) -> Response:
        return _json(200, {"alerts": state.alerts})

    async def sim_faults(request: Request) -> Response:
        if request.method == "DELETE":
            state.faults.clear()
            return _json(200, {"faults": 0})
        spec = await request.json()
        paths = spec.pop("paths", None)
        fault = Fault(**spec)
        if paths:
            fault.paths = tuple(paths)
        state.faults.append(fault)
        return _json(200, {"faults": len(state.faults)})

    async def sim_keys(request: Request) -> Response:
        spec = await request.json()
        state.keys = {spec["access_key"]: spec["secret_key"]}
        return _json(200, {"keys": 1})

    async def sim_reset(_: Request) -> Response:
        state.events.clear()
        state.event_count = 0
        state.requests = 0
        state.by_status.clear()
        state.heartbeats.clear()
        state.alerts.clear()
        state.epochs_seen.clear()
        state.request_log.clear()
        state.lzf_bodies = 0
        return _json(200, {"status": "ok"})

    mqtt_routes: list[Route] = []
    if mqtt_broker:
        from .mqtt_side import MqttSide

        side = MqttSide(state, mqtt_broker)
        side.start()
        mqtt_routes = side.routes()
    app = Starlette(
        routes=[
            *mqtt_routes,
            Route(EVENT_PATH, event, methods=["POST"]),
            Route(HEARTBEAT_PATH, heartbeat, methods=["POST"]),
            Route(ALERTS_PATH, alert, methods=["POST"]),
            Route("/sim/events", sim_events),
            Route("/sim/stats", sim_stats),
            Route("/sim/alerts", sim_alerts),
            Route("/sim/requests", sim_requests),
            Route("/sim/faults", sim_faults, methods=["POST", "DELETE"]),
            Route("/sim/keys", sim_keys, methods=["POST"]),
            Route("/sim/reset", sim_reset, methods=["POST"]),
        ],
    )
    app.state.sim = state
    return app
