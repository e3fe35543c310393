"""The console's ASGI app. It reads a status snapshot and calls a small service interface;
it never reaches into adapters or uplinks. Every route is behind the auth gate (auth/gate.py):
a page or an API route added here is protected without doing anything."""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Protocol

from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from .auth import Auth
from .auth.gate import AuthGate, client_address, principal_of
from .metrics import metrics_registry
from .pages import page_routes

log = logging.getLogger("datonis_edge.console")


class ConsoleService(Protocol):
    role: str  # starting | standby | master | stopped

    def snapshot(self) -> dict[str, Any]: ...

    def declined_list(self) -> list[dict[str, Any]]: ...

    async def replay(self, ids: list[str] | None) -> int: ...


REPLAY_BODY = 'body must be JSON: {"ids": ["<declined id>", ...]}, or empty (or {}) for all'


def create_app(service: ConsoleService, auth: Auth) -> AuthGate:
    registries = metrics_registry(service.snapshot)

    async def audit(request: Request, action: str, **details: Any) -> None:
        principal = principal_of(request)
        who = principal.label if principal else "?"
        try:
            await asyncio.to_thread(
                auth.audit.record, who, action, client_address(request), **details
            )
        except OSError as exc:
            log.error("cannot write the audit log %s (%s); check the disk", auth.audit.path, exc)

    async def status(_: Request) -> JSONResponse:
        return JSONResponse(service.snapshot())

    async def healthz(_: Request) -> JSONResponse:
        """Liveness: the process and its event loop answer. No snapshot (it reads files of the
        data directory, which may hang on NFS: a probe must not wait on storage)."""
        return JSONResponse({"status": "ok", "role": service.role})

    async def readyz(_: Request) -> JSONResponse:
        """200 only on the master with its pipeline running; a standby names the master."""
        snap = service.snapshot()
        ready = snap["role"] == "master" and snap.get("pipeline") == "running"
        body: dict[str, Any] = {"ready": ready, "role": snap["role"]}
        if not ready:
            master = snap.get("master") or {}
            body["reason"] = (
                f"standby; the master is {master.get('instance_id')} at {master.get('console_url')}"
                if snap["role"] == "standby" and master
                else f"{snap['role']}; pipeline {snap.get('pipeline', 'not started')}"
            )
        return JSONResponse(body, status_code=200 if ready else 503)

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
                body = None
            ids = body.get("ids") if isinstance(body, dict) else None
            # a body that is not what we asked for must not mean "all"
            if not isinstance(body, dict) or not (
                ids is None or (isinstance(ids, list) and all(isinstance(i, str) for i in ids))
            ):
                return JSONResponse({"error": REPLAY_BODY}, status_code=400)
            if ids == []:  # none asked for (the store reads an empty list as all)
                return JSONResponse({"replayed_events": 0})
        count = await service.replay(ids)
        await audit(request, "declined_replay", ids=ids or "all", events=count)
        return JSONResponse({"replayed_events": count})

    async def replay_page(request: Request) -> Response:
        if service.snapshot()["role"] != "master":
            return Response("this instance is standby; replay on the master\n", status_code=409)
        count = await service.replay(None)
        await audit(request, "declined_replay", ids="all", events=count)
        return RedirectResponse(f"/?replayed={count}", status_code=303)

    async def metrics(_: Request) -> Response:
        return Response(
            b"".join(generate_latest(r) for r in registries), media_type=CONTENT_TYPE_LATEST
        )

    app = Starlette(
        routes=[
            *auth.routes,
            *page_routes(service, auth.store, audit),
            Route("/declined/replay", replay_page, methods=["POST"]),
            Route("/api/v1/status", status),
            Route("/api/v1/declined", declined),
            Route("/api/v1/declined/replay", replay, methods=["POST"]),
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            Route("/metrics", metrics),
            Mount("/static", StaticFiles(packages=[(__package__, "static")]), name="static"),
        ]
    )
    return auth.gate(app)
