"""The login, logout and change-password pages."""

from __future__ import annotations

import asyncio
import logging
from urllib.parse import parse_qs

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from ...logs import OnceLogger
from ..templating import render
from .audit import AuditLog
from .gate import client_address, principal_of, session_of
from .lockout import Lockout
from .sessions import Session, SessionCodec
from .store import AuthError, ConsoleStore

log = logging.getLogger("datonis_edge.console")


def safe_next(target: str | None) -> str:
    """Only a path of this console: never another site (an open redirect)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


async def form(request: Request) -> dict[str, str]:
    """An urlencoded form's fields (the first value of each)."""
    body = (await request.body()).decode("utf-8", "replace")
    return {k: v[0] for k, v in parse_qs(body, keep_blank_values=True).items()}


class AuthRoutes:
    def __init__(
        self, store: ConsoleStore, codec: SessionCodec, lockout: Lockout, audit: AuditLog
    ) -> None:
        self.store, self.codec, self.lockout, self.audit = store, codec, lockout, audit
        # scrypt takes ~32 MiB and a core for ~0.1 s: a burst of logins waits its turn
        self._hashing = asyncio.Semaphore(2)
        self._once = OnceLogger(log, interval_s=60)

    def routes(self) -> list[Route]:
        return [
            Route("/login", self.login_page, methods=["GET"]),
            Route("/login", self.login, methods=["POST"]),
            Route("/logout", self.logout, methods=["POST"]),
            Route("/password", self.password_page, methods=["GET"]),
            Route("/password", self.change_password, methods=["POST"]),
        ]

    async def record(self, actor: str, action: str, request: Request, **details: object) -> None:
        try:
            await asyncio.to_thread(
                self.audit.record, actor, action, client_address(request), **details
            )
        except OSError as exc:
            log.error("cannot write the audit log %s (%s); check the disk", self.audit.path, exc)

    def _with_session(
        self, response: Response, request: Request, session: Session | None
    ) -> Response:
        secure = request.url.scheme == "https"
        response.headers.append("set-cookie", self.codec.cookie_header(session, secure))
        return response

    # ------------------------------------------------------------------ login

    async def login_page(self, request: Request, error: str = "", status: int = 200) -> Response:
        session = session_of(request)
        fresh = session is None
        if fresh:
            session = self.codec.new()
            request.state.session = session
            request.state.csrf_token = self.codec.csrf_token(session)
        page = render(
            request,
            "login.html",
            status,
            next=safe_next(request.query_params.get("next")),
            error=error,
            first_start=self.store.initial_password_path.exists(),
            password_file=str(self.store.initial_password_path),
        )
        return self._with_session(page, request, session) if fresh else page

    async def login(self, request: Request) -> Response:
        fields = await form(request)
        # a name is at most 64 characters (store.py): a longer one is kept short in memory and logs
        name, password = fields.get("username", "").strip()[:65], fields.get("password", "")
        address = client_address(request)
        keys = (f"user:{name}", f"address:{address}")
        wait = self.lockout.locked_for(*keys)
        if wait:
            return await self._refused(
                request, f"Too many failed logins: try again in {wait:.0f} s.", 429
            )
        async with self._hashing:
            user = await asyncio.to_thread(self.store.authenticate, name, password)
        if user is None:
            locked = self.lockout.failed(*keys)
            await self.record(name or "?", "login_failed", request)
            if locked:
                self._once.log(  # an attack is a line a minute, not a flood
                    "lockout",
                    "console: login locked for %.0f s for user '%s' / address %s after repeated "
                    "wrong passwords; if that is not a person who forgot it, block the address",
                    locked,
                    name,
                    address,
                )
                await self.record(name or "?", "locked_out", request, seconds=locked)
                return await self._refused(
                    request, f"Too many failed logins: try again in {locked:.0f} s.", 429
                )
            return await self._refused(request, "Wrong user name or password.", 401)
        self.lockout.succeeded(*keys)
        await self.record(user.name, "login", request)
        session = self.codec.new(user.name, user.session_key)  # a new id: no session fixation
        target = "/password" if user.must_change else safe_next(fields.get("next"))
        return self._with_session(RedirectResponse(target, status_code=303), request, session)

    async def _refused(self, request: Request, error: str, status: int) -> Response:
        return await self.login_page(request, error, status)

    async def logout(self, request: Request) -> Response:
        principal = principal_of(request)
        if principal is not None:
            await self.record(principal.label, "logout", request)
        return self._with_session(RedirectResponse("/login", status_code=303), request, None)

    # ------------------------------------------------------------------ password

    async def password_page(self, request: Request, error: str = "", status: int = 200) -> Response:
        principal = principal_of(request)
        if principal is None or principal.kind != "session":
            return Response("log in to change your password\n", status_code=403)
        return render(
            request,
            "password.html",
            status,
            error=error,
            forced=principal.must_change,
            next=safe_next(request.query_params.get("next")),
        )

    async def change_password(self, request: Request) -> Response:
        principal = principal_of(request)
        if principal is None or principal.kind != "session":
            return Response("log in to change your password\n", status_code=403)
        fields = await form(request)
        current, new = fields.get("current", ""), fields.get("new", "")
        if new != fields.get("confirm", ""):
            return await self.password_page(request, "The two new passwords differ.", 400)
        async with self._hashing:
            user = await asyncio.to_thread(self.store.authenticate, principal.name, current)
        if user is None:
            return await self.password_page(request, "The current password is wrong.", 400)
        try:
            async with self._hashing:
                user = await asyncio.to_thread(self.store.set_password, principal.name, new)
        except AuthError as exc:
            return await self.password_page(request, str(exc)[:1].upper() + str(exc)[1:] + ".", 400)
        await self.record(principal.name, "password_changed", request, user=principal.name)
        # this session goes on under the new key; every other one of this user has ended
        session = self.codec.new(user.name, user.session_key)
        target = safe_next(fields.get("next"))
        return self._with_session(RedirectResponse(target, status_code=303), request, session)
