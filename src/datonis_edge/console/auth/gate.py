"""The gate in front of every console route (ASGI middleware): who is asking, and may they.

- `/healthz`, `/readyz`, `/static/*` and the login page are open; `/metrics` too unless
  `console.metrics_auth` (then a token or a session of any role).
- `Authorization: Bearer <token>` (an API token) or the session cookie says who asks; the
  principal is in `request.state.principal` for the routes.
- Nobody: a page redirects to `/login?next=...`, the API answers 401 JSON.
- A user who must change the password reaches only `/password` and `/logout`.
- A state-changing request (POST, PUT, PATCH, DELETE) that rides on the cookie needs the
  session's CSRF token (form field `csrf_token` or header `X-CSRF-Token`), else 403; a
  Bearer request needs none (a browser never sends one by itself).
- A viewer changes nothing but the own password (403); the admin-only reads are listed in
  ADMIN_READS. Routes that need more than this call `require_admin`.
"""

from __future__ import annotations

import asyncio
import hmac
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, quote

from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response

from .sessions import COOKIE, CSRF_FIELD, CSRF_HEADER, Session, SessionCodec
from .store import ConsoleStore, Token

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

OPEN = frozenset({"/healthz", "/readyz", "/favicon.ico"})
LOGIN = "/login"
SELF_SERVICE = frozenset({"/password", "/logout"})  # any logged-in user may POST these
ADMIN_READS = ("/api/v1/tokens", "/api/v1/users", "/api/v1/audit")
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
MAX_FORM_BYTES = 4 << 20
TOKEN_TOUCH_S = 60.0  # how often a token's last use is written to tokens.json

NO_CREDENTIALS = (
    "authentication required: send `Authorization: Bearer <token>` (create a token with "
    "`datonis-edge console token create NAME --role viewer --datadirpath DIR`) or log in at /login"
)
BAD_TOKEN = (
    "the API token is not valid (revoked, or mistyped): create a new one with "
    "`datonis-edge console token create NAME --role viewer|admin --datadirpath DIR`"
)


@dataclass(frozen=True)
class Principal:
    name: str
    role: str
    kind: str  # "session" or "token"
    must_change: bool = False

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    @property
    def label(self) -> str:
        """Who, for the audit log."""
        return self.name if self.kind == "session" else f"token:{self.name}"


def principal_of(request: Request) -> Principal | None:
    return getattr(request.state, "principal", None)


def session_of(request: Request) -> Session | None:
    return getattr(request.state, "session", None)


def client_address(request: Request | Scope) -> str:
    client = request.client if isinstance(request, Request) else request.get("client")
    return client[0] if client else "unknown"


def require_admin(request: Request) -> Response | None:
    """A 403 answer unless an admin asks (None: go on)."""
    principal = principal_of(request)
    if principal is not None and principal.is_admin:
        return None
    return forbidden(request.url.path, "this needs the admin role; you are a viewer")


def forbidden(path: str, why: str) -> Response:
    if path.startswith("/api/"):
        return JSONResponse({"error": why}, status_code=403)
    return PlainTextResponse(f"403 forbidden: {why}\n", status_code=403)


class AuthGate:
    def __init__(
        self, app: ASGIApp, store: ConsoleStore, codec: SessionCodec, metrics_auth: bool
    ) -> None:
        self.app = app
        self.store = store
        self.codec = codec
        self.metrics_auth = metrics_auth
        self._touched: dict[str, float] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        if path in OPEN or path.startswith("/static/"):
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        state = scope.setdefault("state", {})
        authorization = headers.get("authorization", "")
        principal: Principal | None = None
        session: Session | None = None
        if authorization[:7].lower() == "bearer ":
            token = self.store.token_for(authorization[7:].strip())
            if token is None:
                await JSONResponse({"error": BAD_TOKEN}, status_code=401)(scope, receive, send)
                return
            principal = Principal(token.name, token.role, "token")
            self._touch(token)
        else:
            session, principal = self._session(headers)
        state["principal"], state["session"] = principal, session
        state["csrf_token"] = self.codec.csrf_token(session) if session else ""

        if path == "/metrics" and not self.metrics_auth:
            await self.app(scope, receive, send)
            return
        method: str = scope["method"]
        answer: Response | None = None
        if principal is None and path != LOGIN:
            answer = self._unauthenticated(scope, path)
        elif principal is not None and principal.must_change and path not in SELF_SERVICE:
            answer = (
                forbidden(path, "change your password first, at /password")
                if path.startswith("/api/")
                else RedirectResponse("/password", status_code=303)
            )
        elif method not in SAFE_METHODS and principal is not None and principal.role != "admin":
            if path not in SELF_SERVICE:
                answer = forbidden(path, "a viewer cannot change anything; log in as an admin")
        elif principal is not None and not principal.is_admin and path.startswith(ADMIN_READS):
            answer = forbidden(path, "this needs the admin role; you are a viewer")
        if (
            answer is None
            and method not in SAFE_METHODS
            and (principal is None or principal.kind == "session")
        ):
            answer, receive = await self._check_csrf(scope, receive, headers, session)
        if answer is not None:
            await answer(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _session(self, headers: Headers) -> tuple[Session | None, Principal | None]:
        cookie = _cookie(headers.get("cookie", ""), COOKIE)
        session = self.codec.loads(cookie) if cookie else None
        if session is None or session.user is None:
            return session, None
        user = self.store.user(session.user)
        if user is None or not hmac.compare_digest(user.session_key, session.key or ""):
            return None, None  # password changed or user removed since: the session is over
        return session, Principal(user.name, user.role, "session", user.must_change)

    def _unauthenticated(self, scope: Scope, path: str) -> Response:
        if path.startswith("/api/") or path == "/metrics":
            return JSONResponse({"error": NO_CREDENTIALS}, status_code=401)
        query = scope.get("query_string", b"").decode("latin-1")
        target = path + (f"?{query}" if query else "")
        return RedirectResponse(f"{LOGIN}?next={quote(target, safe='/')}", status_code=303)

    async def _check_csrf(
        self, scope: Scope, receive: Receive, headers: Headers, session: Session | None
    ) -> tuple[Response | None, Receive]:
        """(403 or None, the receive that still yields the body we may have read)."""
        path: str = scope["path"]
        if session is None:
            return forbidden(
                path,
                "no session cookie: open the page again and resubmit (the browser must accept "
                "cookies from the console)",
            ), receive
        token = headers.get(CSRF_HEADER)
        if token is None and headers.get("content-type", "").startswith(
            "application/x-www-form-urlencoded"
        ):
            body, receive = await _read_body(receive)
            if body is None:
                return PlainTextResponse("413: the form is too large\n", status_code=413), receive
            values = parse_qs(body.decode("utf-8", "replace"), max_num_fields=10_000)
            token = (values.get(CSRF_FIELD) or [None])[0]
        if not self.codec.csrf_ok(session, token):
            return forbidden(
                path,
                "the CSRF token is missing or wrong: reload the page and submit the form again "
                "(scripts: use an API token, or send the header X-CSRF-Token)",
            ), receive
        return None, receive

    def _touch(self, token: Token) -> None:
        now = time.monotonic()
        if now - self._touched.get(token.name, -TOKEN_TOUCH_S) < TOKEN_TOUCH_S:
            return
        self._touched[token.name] = now
        task = asyncio.get_running_loop().run_in_executor(None, self.store.touch_token, token.name)
        task.add_done_callback(lambda f: f.exception())  # a failed note of last use is no error


async def _read_body(receive: Receive) -> tuple[bytes | None, Receive]:
    chunks: list[bytes] = []
    size = 0
    more = True
    while more:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_FORM_BYTES:
            return None, receive
        chunks.append(chunk)
        more = message.get("more_body", False)
    body = b"".join(chunks)
    sent = False

    async def replay() -> MutableMapping[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return body, replay


def _cookie(header: str, name: str) -> str | None:
    for part in header.split(";"):
        key, _, value = part.strip().partition("=")
        if key == name:
            return value
    return None
