"""The Overview: role and epoch, master and standbys, uplink, outbox, rates and their chart
(the last 15 minutes, sampled every few seconds and kept in memory by the console)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections import deque
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from .common import Service, page

SAMPLE_S = 5.0
WINDOW_S = 15 * 60


class RateHistory:
    """(time, accepted, sent) every SAMPLE_S for WINDOW_S; rates are their differences. Started
    by the first page request (the console's own loop), stopped with the process."""

    def __init__(self, service: Service, every_s: float = SAMPLE_S) -> None:
        self.service = service
        self.every_s = every_s
        self.samples: deque[tuple[float, int, int]] = deque(maxlen=int(WINDOW_S / every_s) + 1)
        self._task: asyncio.Task[None] | None = None

    def ensure_started(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="console rates")

    async def _run(self) -> None:
        while True:
            self.sample()
            await asyncio.sleep(self.every_s)

    def sample(self) -> None:
        with contextlib.suppress(Exception):  # a snapshot that fails now is tried again next time
            counters = self.service.snapshot().get("counters") or {}
            sent = sum(counters.get(k, 0) for k in ("delivered", "declined"))
            self.samples.append((time.time(), counters.get("accepted", 0), sent))

    def series(self) -> dict[str, list[float]]:
        """uPlot's columns: times (s) and events per second in and out."""
        t: list[float] = []
        rate_in: list[float] = []
        rate_out: list[float] = []
        points = list(self.samples)
        for (t0, a0, s0), (t1, a1, s1) in itertools.pairwise(points):
            dt = max(t1 - t0, 1e-3)
            t.append(round(t1, 1))
            rate_in.append(round(max(a1 - a0, 0) / dt, 1))
            rate_out.append(round(max(s1 - s0, 0) / dt, 1))
        return {"t": t, "in": rate_in, "out": rate_out}

    def now(self) -> tuple[float, float]:
        s = self.series()
        return (s["in"][-1], s["out"][-1]) if s["t"] else (0.0, 0.0)


def uplink_view(snap: dict[str, Any]) -> list[dict[str, Any]]:
    """Each uplink with its last error *as past* once delivery worked after it."""
    out = []
    for up in snap.get("uplinks") or []:
        err_ms, ok_ms = up.get("last_error_ms"), up.get("last_ok_ms")
        current = bool(up.get("last_error")) and (not ok_ms or (err_ms or 0) >= ok_ms)
        out.append({**up, "error_is_current": current})
    return out


def overview_routes(service: Service) -> list[BaseRoute]:
    rates = RateHistory(service)
    with contextlib.suppress(RuntimeError):  # built on the instance's loop: sample from now on
        rates.ensure_started()

    def context() -> dict[str, Any]:
        rates.ensure_started()
        snap = service.snapshot()
        outbox = snap.get("outbox") or {}
        rate_in, rate_out = rates.now()
        return {
            "snap": snap,
            "outbox": outbox,
            "counters": snap.get("counters") or {},
            "uplinks": uplink_view(snap),
            "rate_in": rate_in,
            "rate_out": rate_out,
            "oldest_ms": outbox.get("oldest_ms"),
        }

    async def overview(request: Request) -> Response:
        replayed = request.query_params.get("replayed")
        return page(request, service, "pages/overview.html", replayed=replayed, **context())

    async def live(request: Request) -> Response:
        return page(request, service, "pages/overview_live.html", **context())

    async def series(_: Request) -> JSONResponse:
        rates.ensure_started()
        return JSONResponse(rates.series())

    return [
        Route("/", overview),
        Route("/overview/live", live),
        Route("/overview/rates.json", series),
    ]
