"""The console's ASGI app. It reads a status snapshot and calls a small service interface;
it never reaches into adapters or uplinks."""

from __future__ import annotations

from importlib import resources
from typing import Any, Protocol

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import CollectorRegistry
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route


class ConsoleService(Protocol):
    def snapshot(self) -> dict[str, Any]: ...

    def declined_list(self) -> list[dict[str, Any]]: ...

    async def replay(self, ids: list[str] | None) -> int: ...


class _Collector:
    def __init__(self, service: ConsoleService) -> None:
        self.service = service

    def collect(self) -> Any:
        snap = self.service.snapshot()
        role = GaugeMetricFamily(
            "datonis_edge_master", "1 when this instance is master", labels=["instance"]
        )
        role.add_metric([snap["instance_id"]], 1.0 if snap["role"] == "master" else 0.0)
        yield role
        yield GaugeMetricFamily(
            "datonis_edge_epoch", "current epoch (fencing token)", value=snap.get("epoch", 0)
        )
        if "outbox" in snap:
            yield GaugeMetricFamily(
                "datonis_edge_outbox_pending_events",
                "events in the outbox",
                value=snap["outbox"]["pending"],
            )
            yield GaugeMetricFamily(
                "datonis_edge_outbox_bytes", "bytes in the outbox", value=snap["outbox"]["bytes"]
            )
            events = CounterMetricFamily(
                "datonis_edge_events", "events by outcome", labels=["outcome"]
            )
            for name, value in snap["counters"].items():
                events.add_metric([name], value)
            yield events


def create_app(service: ConsoleService) -> Starlette:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(service))  # type: ignore[arg-type]
    page = resources.files(__package__).joinpath("status.html").read_text(encoding="utf-8")

    async def status(_: Request) -> JSONResponse:
        return JSONResponse(service.snapshot())

    async def healthz(_: Request) -> JSONResponse:
        return JSONResponse({"status": "ok", "role": service.snapshot()["role"]})

    async def readyz(_: Request) -> JSONResponse:
        role = service.snapshot()["role"]
        return JSONResponse(
            {"ready": role == "master", "role": role}, status_code=200 if role == "master" else 503
        )

    async def declined(_: Request) -> JSONResponse:
        return JSONResponse({"declined": service.declined_list()})

    async def replay(request: Request) -> JSONResponse:
        if service.snapshot()["role"] != "master":
            return JSONResponse(
                {"error": "this instance is standby; replay on the master"}, status_code=409
            )
        ids: list[str] | None = None
        if await request.body():
            try:
                body = await request.json()
            except ValueError:
                return JSONResponse(
                    {"error": 'body must be JSON: {"ids": [...]} or empty for all'}, status_code=400
                )
            ids = body.get("ids") if isinstance(body, dict) else None
        count = await service.replay(ids)
        return JSONResponse({"replayed_events": count})

    async def metrics(_: Request) -> Response:
        return Response(generate_latest(registry), media_type="text/plain; version=0.0.4")

    async def index(_: Request) -> HTMLResponse:
        return HTMLResponse(page)

    return Starlette(
        routes=[
            Route("/", index),
            Route("/api/v1/status", status),
            Route("/api/v1/declined", declined),
            Route("/api/v1/declined/replay", replay, methods=["POST"]),
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            Route("/metrics", metrics),
        ]
    )
