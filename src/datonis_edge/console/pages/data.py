"""Services, Things, Declined and Alerts: what the gateway is doing, and the few actions on it
(enable/disable a service, replay/purge/export declined batches)."""

from __future__ import annotations

import asyncio
import json
from typing import Any
from urllib.parse import urlencode

import orjson
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from ...config import ConfigError
from .. import configfile
from ..alertlog import AlertLog
from .common import Audit, Service, form_ids, page, read_form, refuse_change

MAX_THING_ROWS = 2000  # a page; the filter narrows it
MAX_FORMS = 200
_GOOD = frozenset({"starting", "running", "connected", "listening", "ready"})


def data_routes(service: Service, audit: Audit) -> list[BaseRoute]:
    alert_log = AlertLog(service.datadir)
    config_path = service.datadir / "config" / "edge.yaml"

    async def services(request: Request) -> Response:
        snap = service.snapshot()
        configured = [(s.name, s.type, s.enabled) for s in service.config.services]
        running = {s["name"]: s for s in snap.get("services") or []}
        return page(
            request,
            service,
            "pages/services.html",
            snap=snap,
            rows=[(name, kind, enabled, running.get(name)) for name, kind, enabled in configured],
            message=request.query_params.get("message"),
        )

    async def toggle(request: Request) -> Response:
        refused = refuse_change(request, service)
        if refused is not None:
            return refused
        form = await read_form(request)
        name, enabled = str(form.get("service", "")), form.get("enabled") == "true"
        text = await asyncio.to_thread(config_path.read_text)
        try:
            new = configfile.set_enabled(text, name, enabled)
            config = configfile.validate(new)
        except KeyError:
            return Response(f"400: no service named {name!r} in {config_path}\n", status_code=400)
        except ConfigError as exc:
            return Response("400: " + "; ".join(exc.problems) + "\n", status_code=400)
        await service.apply_config(new, config)
        await audit(request, "service_enabled" if enabled else "service_disabled", service=name)
        word = "enabled" if enabled else "disabled"
        return RedirectResponse(f"/services?message={name}+{word}", status_code=303)

    async def things(request: Request) -> Response:
        snap = service.snapshot()
        wanted = request.query_params.get("q", "").strip().lower()
        only_errors = request.query_params.get("errors") == "1"
        states = {s["name"]: s for s in snap.get("services") or []}
        latest = service.latest_values()
        rows: list[dict[str, Any]] = []
        forms: list[dict[str, Any]] = []  # a write form per instruction rule of a shown thing
        total = 0
        for svc in service.config.services:
            status = states.get(svc.name) or {}
            error = (status.get("last_error") if status.get("state") not in _GOOD else None) or (
                "" if svc.enabled else "service disabled"
            )
            if only_errors and not error:
                continue
            for thing in svc.things:
                if svc.enabled and (not wanted or wanted in thing.thing_key.lower()):
                    forms.extend(_rule_forms(thing))
                values = latest.get(thing.thing_key, {})
                names = [m.name for m in thing.metrics] or sorted(values)
                for metric in names:
                    if (
                        wanted
                        and wanted not in thing.thing_key.lower()
                        and wanted not in metric.lower()
                    ):
                        continue
                    total += 1
                    if len(rows) < MAX_THING_ROWS:
                        value, at = values.get(metric, (None, 0))
                        rows.append(
                            {"service": svc.name, "thing": thing.thing_key, "metric": metric,
                             "value": value, "at": at, "error": error}
                        )  # fmt: skip
        return page(
            request,
            service,
            "pages/things.html",
            snap=snap,
            rows=rows,
            total=total,
            q=wanted,
            only_errors=only_errors,
            limit=MAX_THING_ROWS,
            forms=forms[:MAX_FORMS],
            message=request.query_params.get("message"),
        )

    async def write(request: Request) -> Response:
        refused = refuse_change(request, service)
        if refused is not None:
            return refused
        form = await read_form(request)
        thing_key, rule_name = form.get("thing"), form.get("rule")
        rule = next(
            (
                r
                for svc in service.config.services
                for t in svc.things
                if t.thing_key == thing_key
                for r in t.instructions
                if r.name == rule_name
            ),
            None,
        )
        if rule is None:
            return Response(
                f"400: thing {thing_key!r} has no instruction rule {rule_name!r}\n", 400
            )
        instruction: dict[str, Any] = {}
        for path, value in rule.match.items():
            _put(instruction, path, value)
        for w in rule.writes:
            if w.from_ is not None:
                _put(instruction, w.from_, _typed(form.get(f"f.{w.from_}")))
        ok, said = await service.write_instruction(thing_key, instruction)
        await audit(
            request, "tag_write", thing=thing_key, rule=rule_name, instruction=instruction,
            success=ok, result=said,
        )  # fmt: skip
        word = "written" if ok else "refused"
        return RedirectResponse(
            f"/things?{urlencode({'q': thing_key, 'message': f'{word}: {said}'})}",
            status_code=303,
        )

    async def declined(request: Request) -> Response:
        items = await asyncio.to_thread(service.declined_list)
        items.sort(key=lambda d: d.get("declined_at_ms") or 0, reverse=True)
        return page(
            request,
            service,
            "pages/declined.html",
            items=items,
            message=request.query_params.get("message"),
        )

    async def declined_action(request: Request) -> Response:
        refused = refuse_change(request, service)
        if refused is not None:
            return refused
        action, ids = await form_ids(request)
        everything = action.endswith("_all")
        if not everything and not ids:
            return RedirectResponse("/declined?message=select+batches+first", status_code=303)
        chosen = None if everything else ids
        if action.startswith("replay"):
            count = await service.replay(chosen)
            await audit(request, "declined_replay", ids=chosen or "all", events=count)
            message = f"{count}+events+replayed"
        elif action.startswith("purge"):
            count = await asyncio.to_thread(service.declined_purge, chosen)
            await audit(request, "declined_purge", ids=chosen or "all", batches=count)
            message = f"{count}+batches+purged"
        else:
            return Response("400: action must be replay, replay_all, purge or purge_all\n", 400)
        return RedirectResponse(f"/declined?message={message}", status_code=303)

    async def export(_: Request) -> Response:
        items = await asyncio.to_thread(service.declined_list)
        return Response(
            orjson.dumps({"declined": items}, option=orjson.OPT_INDENT_2),
            media_type="application/json",
            headers={"Content-Disposition": 'attachment; filename="declined.json"'},
        )

    async def alerts(request: Request) -> Response:
        level = request.query_params.get("level", "")
        wanted = request.query_params.get("q", "").strip().lower()
        items = await asyncio.to_thread(alert_log.read, 2000)
        items = [
            a
            for a in items
            if (not level or a.get("level") == level)
            and (
                not wanted
                or wanted in str(a.get("message", "")).lower()
                or wanted in str(a.get("thing_key") or "").lower()
            )
        ]
        return page(request, service, "pages/alerts.html", items=items, level=level, q=wanted)

    return [
        Route("/services", services),
        Route("/services/enabled", toggle, methods=["POST"]),
        Route("/things", things),
        Route("/things/write", write, methods=["POST"]),
        Route("/declined", declined),
        Route("/declined/action", declined_action, methods=["POST"]),
        Route("/declined/export.json", export),
        Route("/alerts", alerts),
    ]


def _rule_forms(thing: Any) -> list[dict[str, Any]]:
    return [
        {
            "thing": thing.thing_key,
            "rule": rule.name,
            "match": rule.match,
            "fields": [(w.from_, w.tag, w.min, w.max) for w in rule.writes if w.from_],
            "constants": [(w.tag, w.value) for w in rule.writes if w.from_ is None],
        }
        for rule in thing.instructions
    ]


def _put(target: dict[str, Any], path: str, value: Any) -> None:
    *parents, last = path.split(".")
    for part in parents:
        target = target.setdefault(part, {})
    target[last] = value


def _typed(text: str) -> Any:
    """A typed value: a number, true/false or null as JSON reads it, else the text itself."""
    try:
        value = json.loads(text)
    except ValueError:
        return text
    return value if isinstance(value, int | float | bool) or value is None else text
