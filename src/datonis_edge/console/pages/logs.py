"""Logs: the last lines of this instance's own log (logs.RING: in memory, already redacted),
for engineers without shell access. Filter by least level and by text; the table refreshes
every 2 s (htmx). Viewers may read it; `/api/v1/logs` gives the same as JSON for scripts."""

from __future__ import annotations

import logging
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from ... import logs
from .common import Service, page

LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
SHOWN = 500  # the newest lines that match; the ring keeps more


def _query(request: Request, ring: logs.LogRing) -> dict[str, Any]:
    level = request.query_params.get("level", "").upper()
    level = level if level in LEVELS else ""
    text = request.query_params.get("q", "").strip()
    matching = ring.recent(logging.getLevelName(level) if level else logging.NOTSET, text)
    return {
        "level": level,
        "q": text,
        "lines": matching[::-1][:SHOWN],  # newest first
        "matching": len(matching),
        "kept": len(ring.lines),
        "dropped": ring.dropped,
        "shown_max": SHOWN,
        "levels": LEVELS,
    }


def logs_routes(service: Service, ring: logs.LogRing | None = None) -> list[BaseRoute]:
    source = ring or logs.RING

    async def logs_page(request: Request) -> Response:
        return page(request, service, "pages/logs.html", **_query(request, source))

    async def live(request: Request) -> Response:
        return page(request, service, "pages/logs_live.html", **_query(request, source))

    async def api(request: Request) -> JSONResponse:
        found = _query(request, source)
        return JSONResponse(
            {
                "lines": [
                    {"at_ms": ln.at_ms, "level": ln.level, "logger": ln.logger, "text": ln.text}
                    for ln in found["lines"]
                ],
                "matching": found["matching"],
                "kept": found["kept"],
            }
        )

    return [
        Route("/logs", logs_page),
        Route("/logs/live", live),
        Route("/api/v1/logs", api),
    ]
