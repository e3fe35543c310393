"""Rendering the console's pages: Jinja2 templates from console/templates/, autoescaped, with
what every page shows (who is logged in, the role, the CSRF token for its forms)."""

from __future__ import annotations

from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse

from .auth.gate import principal_of

_env = Environment(
    loader=PackageLoader("datonis_edge.console", "templates"),
    autoescape=select_autoescape(default=True),
    trim_blocks=True,
    lstrip_blocks=True,
)


def render(request: Request, template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    """`template` with `principal`, `csrf_token` and `path` besides `context`. Every form that
    changes something carries `<input type="hidden" name="csrf_token" value="{{ csrf_token }}">`
    (the gate refuses it otherwise)."""
    html = _env.get_template(template).render(
        principal=principal_of(request),
        csrf_token=getattr(request.state, "csrf_token", ""),
        path=request.url.path,
        **context,
    )
    return HTMLResponse(
        html,
        status_code=status_code,
        headers={
            "Cache-Control": "no-store",
            "X-Frame-Options": "DENY",
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "same-origin",
        },
    )
