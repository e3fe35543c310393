"""Configuration: the YAML with secrets masked; edit, check (problems at their line, nothing
saved), see the diff, save (the previous version kept in DIR/config/history/, the pipeline
restarted in-process on the master). A secret left as the mask keeps its stored value."""

from __future__ import annotations

import asyncio

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from ...config import ConfigError
from .. import configfile
from .common import Audit, Service, page, read_form, refuse_change

MAX_TEXT = 4 << 20


def config_routes(service: Service, audit: Audit) -> list[BaseRoute]:
    path = service.datadir / "config" / "edge.yaml"
    history = path.parent / "history"

    def stored() -> str:
        try:
            return path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return ""

    def versions() -> list[str]:
        return sorted((p.name for p in history.glob("edge-*.yaml")), reverse=True)[:20]

    masked: dict[str, str] = {}  # the stored text -> it masked (composing 10,000 metrics: 0.2 s)

    def masked_text(text: str) -> str:
        if text not in masked:
            masked.clear()
            masked[text] = configfile.mask_secrets(text)
        return masked[text]

    async def show(request: Request) -> Response:
        text = await asyncio.to_thread(stored)
        return page(
            request,
            service,
            "pages/config.html",
            text=await asyncio.to_thread(masked_text, text),
            problems=[],
            diff=None,
            versions=await asyncio.to_thread(versions),
            message=request.query_params.get("message"),
        )

    async def submit(request: Request) -> Response:
        refused = refuse_change(request, service)
        if refused is not None:
            return refused
        form = await read_form(request)
        edited = str(form.get("text", "")).replace("\r\n", "\n")
        if len(edited) > MAX_TEXT:
            return Response("413: a configuration is far smaller than 4 MB\n", status_code=413)
        current = await asyncio.to_thread(stored)
        text = configfile.unmask(edited, current)
        try:
            config = configfile.validate(text)
        except ConfigError as exc:
            problems = [(configfile.line_of(text, p), p) for p in exc.problems]
            return page(
                request,
                service,
                "pages/config.html",
                status_code=422,
                text=edited,
                problems=problems,
                diff=None,
                versions=await asyncio.to_thread(versions),
                message=None,
            )
        if form.get("action") != "save":
            return page(
                request,
                service,
                "pages/config.html",
                text=edited,
                problems=[],
                diff=configfile.diff(
                    configfile.mask_secrets(current), configfile.mask_secrets(text)
                )
                or "(no change)",
                versions=await asyncio.to_thread(versions),
                message=None,
            )
        if text == current:
            return RedirectResponse("/config?message=nothing+changed", status_code=303)
        await service.apply_config(text, config)
        await audit(request, "config_saved", bytes=len(text))
        return RedirectResponse("/config?message=saved+and+applied", status_code=303)

    return [Route("/config", show), Route("/config", submit, methods=["POST"])]
