"""What every page shares: the service it reads, the standby banner, the refusal of a change
on a standby or by a viewer, time and size formatting."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qs

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from ..auth.gate import require_admin
from ..templating import render


class Service(Protocol):
    """The part of the supervisor the pages call (app.ConsoleService and these)."""

    role: str
    datadir: Path
    config: Any  # the root Config this instance runs

    def snapshot(self) -> dict[str, Any]: ...
    def declined_list(self) -> list[dict[str, Any]]: ...
    def declined_purge(self, ids: list[str] | None) -> int: ...
    async def replay(self, ids: list[str] | None) -> int: ...
    def latest_values(self) -> dict[str, dict[str, tuple[Any, int]]]: ...
    async def apply_config(self, text: str, config: Any) -> None: ...
    async def write_instruction(
        self, thing_key: str, instruction: dict[str, Any]
    ) -> tuple[bool, str]: ...


Audit = Callable[..., Awaitable[None]]


def when(ms: int | None) -> str:
    if not ms:
        return "—"
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def age(ms: int | None) -> str:
    if not ms:
        return "—"
    s = max(0.0, time.time() - ms / 1000)
    if s < 120:
        return f"{s:.0f} s ago"
    if s < 7200:
        return f"{s / 60:.0f} min ago"
    return f"{s / 3600:.1f} h ago"


def size(n: int | None) -> str:
    if n is None:
        return "—"
    value = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{n} B"


def page(request: Request, service: Service, template: str, **context: Any) -> Response:
    """Render a page with the role banner (standby: the master and its link)."""
    snap = context.pop("snap", None) or service.snapshot()
    master = snap.get("master") if snap.get("role") != "master" else None
    return render(
        request,
        template,
        snap=snap,
        standby=snap.get("role") != "master",
        master=master,
        when=when,
        age=age,
        size=size,
        **context,
    )


def refuse_change(request: Request, service: Service) -> Response | None:
    """A 403 for a viewer, a 409 on a standby (read-only), else None."""
    denied = require_admin(request)
    if denied is not None:
        return denied
    if service.role != "master":
        master = (service.snapshot().get("master") or {}).get("console_url") or "the master"
        return PlainTextResponse(
            f"409: this instance is a standby and read-only; make the change on {master}\n",
            status_code=409,
        )
    return None


class Form:
    """An url-encoded form (no python-multipart here): `get` the first value, `getlist` all."""

    def __init__(self, values: dict[str, list[str]]) -> None:
        self.values = values

    def get(self, name: str, default: str = "") -> str:
        return (self.values.get(name) or [default])[0]

    def getlist(self, name: str) -> list[str]:
        return self.values.get(name, [])


async def read_form(request: Request) -> Form:
    body = (await request.body()).decode("utf-8", "replace")
    return Form(parse_qs(body, keep_blank_values=True, max_num_fields=100_000))


async def form_ids(request: Request) -> tuple[str, list[str]]:
    form = await read_form(request)
    return form.get("action"), form.getlist("id")
