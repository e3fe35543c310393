"""Users, API tokens and the audit log over the JSON API (admin only: the gate refuses viewers),
for the console's "Users & tokens" page and for scripts. Every change is audited."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from .audit import AuditLog
from .gate import client_address, principal_of
from .store import AuthError, ConsoleStore


class AccountsApi:
    def __init__(self, store: ConsoleStore, audit: AuditLog) -> None:
        self.store, self.audit = store, audit

    def routes(self) -> list[Route]:
        return [
            Route("/api/v1/users", self.users, methods=["GET"]),
            Route("/api/v1/users", self.add_user, methods=["POST"]),
            Route("/api/v1/users/{name}", self.remove_user, methods=["DELETE"]),
            Route("/api/v1/tokens", self.tokens, methods=["GET"]),
            Route("/api/v1/tokens", self.create_token, methods=["POST"]),
            Route("/api/v1/tokens/{name}", self.revoke_token, methods=["DELETE"]),
            Route("/api/v1/audit", self.audit_tail, methods=["GET"]),
        ]

    async def _change(
        self, request: Request, action: str, change: Callable[[], Any], **details: Any
    ) -> tuple[Any, JSONResponse | None]:
        """Run `change` off the loop; audit it; a refused change as a 400 with its sentence."""
        try:
            result = await asyncio.to_thread(change)
        except AuthError as exc:
            return None, JSONResponse({"error": str(exc)}, status_code=400)
        principal = principal_of(request)
        await asyncio.to_thread(
            self.audit.record,
            principal.label if principal else "?",
            action,
            client_address(request),
            **details,
        )
        return result, None

    async def users(self, _: Request) -> JSONResponse:
        users = sorted(self.store.users().values(), key=lambda u: u.name)
        return JSONResponse(
            {
                "users": [
                    {"name": u.name, "role": u.role, "must_change": u.must_change} for u in users
                ]
            }
        )

    async def add_user(self, request: Request) -> JSONResponse:
        body = await _json(request)
        name, role, password = body.get("name"), body.get("role"), body.get("password")
        if not all(isinstance(v, str) for v in (name, role, password)):
            return JSONResponse(
                {
                    "error": 'body must be JSON: {"name": ..., "role": "viewer|admin", "password": ...}'
                },
                status_code=400,
            )
        _, refused = await self._change(
            request,
            "user_added",
            lambda: self.store.add_user(name, password, role, must_change=True),
            user=name,
            role=role,
        )
        return refused or JSONResponse({"name": name, "role": role}, status_code=201)

    async def remove_user(self, request: Request) -> JSONResponse:
        name = request.path_params["name"]
        _, refused = await self._change(
            request, "user_removed", lambda: self.store.remove_user(name), user=name
        )
        return refused or JSONResponse({"removed": name})

    async def tokens(self, _: Request) -> JSONResponse:
        return JSONResponse(
            {
                "tokens": [
                    {
                        "name": t.name,
                        "role": t.role,
                        "created_ms": t.created_ms,
                        "last_used_ms": t.last_used_ms,
                    }
                    for t in self.store.tokens()
                ]
            }
        )

    async def create_token(self, request: Request) -> JSONResponse:
        body = await _json(request)
        name, role = body.get("name"), body.get("role", "viewer")
        if not isinstance(name, str) or not isinstance(role, str):
            return JSONResponse(
                {"error": 'body must be JSON: {"name": ..., "role": "viewer|admin"}'},
                status_code=400,
            )
        token, refused = await self._change(
            request,
            "token_created",
            lambda: self.store.create_token(name, role),
            token=name,
            role=role,
        )
        return refused or JSONResponse(
            {"name": name, "role": role, "token": token}, status_code=201
        )

    async def revoke_token(self, request: Request) -> JSONResponse:
        name = request.path_params["name"]
        _, refused = await self._change(
            request, "token_revoked", lambda: self.store.revoke_token(name), token=name
        )
        return refused or JSONResponse({"revoked": name})

    async def audit_tail(self, request: Request) -> JSONResponse:
        try:
            limit = max(1, min(int(request.query_params.get("limit", "100")), 10_000))
        except ValueError:
            return JSONResponse({"error": "limit must be a number"}, status_code=400)
        return JSONResponse({"audit": await asyncio.to_thread(self.audit.tail, limit)})


async def _json(request: Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}
