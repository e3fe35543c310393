"""Users & tokens (admin only): list, add, remove, change role; create (shown once) and revoke
API tokens. Every change through the auth store's functions, audited."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from ..auth import AuthError, ConsoleStore
from ..auth.gate import require_admin
from .common import Audit, Service, page, read_form, refuse_change


def user_routes(service: Service, store: Any, audit: Audit) -> list[BaseRoute]:
    accounts: ConsoleStore = store

    async def listing(request: Request, **extra: Any) -> Response:
        denied = require_admin(request)
        if denied is not None:
            return denied
        users = sorted(accounts.users().values(), key=lambda u: u.name)
        return page(
            request,
            service,
            "pages/users.html",
            users=users,
            tokens=accounts.tokens(),
            message=extra.get("message") or request.query_params.get("message"),
            error=extra.get("error"),
            new_token=extra.get("new_token"),
        )

    async def show(request: Request) -> Response:
        return await listing(request)

    async def change(request: Request) -> Response:
        denied = refuse_change(request, service)
        if denied is not None:
            return denied
        form = await read_form(request)
        action = str(form.get("action", ""))
        name = str(form.get("name", "")).strip()
        role = str(form.get("role", "viewer"))
        steps: dict[str, tuple[Callable[[], Any], dict[str, Any]]] = {
            "add_user": (
                lambda: accounts.add_user(name, str(form.get("password", "")), role, True),
                {"user": name, "role": role},
            ),
            "remove_user": (lambda: accounts.remove_user(name), {"user": name}),
            "set_role": (lambda: accounts.set_role(name, role), {"user": name, "role": role}),
            "create_token": (
                lambda: accounts.create_token(name, role),
                {"token": name, "role": role},
            ),
            "revoke_token": (lambda: accounts.revoke_token(name), {"token": name}),
        }
        if action not in steps:
            return Response(f"400: unknown action; use one of {', '.join(steps)}\n", 400)
        step, details = steps[action]
        try:
            result = await asyncio.to_thread(step)
        except AuthError as exc:
            return await listing(request, error=str(exc))
        audit_action = {
            "add_user": "user_added",
            "remove_user": "user_removed",
            "set_role": "user_role_changed",
            "create_token": "token_created",
            "revoke_token": "token_revoked",
        }[action]
        await audit(request, audit_action, **details)
        if action == "create_token":
            return await listing(request, new_token=(name, result))
        return RedirectResponse(f"/users?message={action.replace('_', '+')}+{name}", 303)

    return [Route("/users", show), Route("/users", change, methods=["POST"])]
