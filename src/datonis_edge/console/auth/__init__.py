"""The console's security: users and tokens (store), password hashes (passwords), signed
session cookies and CSRF (sessions), lockout, the audit log, and the gate that puts them in
front of every route. `Auth` is what the app is built with."""

from __future__ import annotations

import logging
from pathlib import Path

from ...config.models import ConsoleConfig
from .api import AccountsApi
from .audit import AuditLog
from .gate import ASGIApp, AuthGate, Principal, principal_of, require_admin
from .lockout import Lockout
from .routes import AuthRoutes
from .sessions import SessionCodec, load_secret
from .store import ROLES, AuthError, ConsoleStore

log = logging.getLogger("datonis_edge.console")

__all__ = [
    "ROLES",
    "Auth",
    "AuthError",
    "ConsoleStore",
    "Principal",
    "principal_of",
    "require_admin",
]


class Auth:
    """Everything the console needs to know who asks, for one data directory."""

    def __init__(self, datadir: Path, config: ConsoleConfig | None = None) -> None:
        config = config or ConsoleConfig()
        self.store = ConsoleStore(datadir)
        self.audit = AuditLog(datadir)
        self.lockout = Lockout()
        self.codec = SessionCodec(load_secret(self.store.dir), config.session_hours * 3600)
        self.metrics_auth = config.metrics_auth
        self.routes = [
            *AuthRoutes(self.store, self.codec, self.lockout, self.audit).routes(),
            *AccountsApi(self.store, self.audit).routes(),
        ]

    def gate(self, app: ASGIApp) -> AuthGate:
        return AuthGate(app, self.store, self.codec, self.metrics_auth)


def first_start(datadir: Path, console_url: str) -> None:
    """With no users yet: make `admin` with a generated password and say once where it is."""
    store = ConsoleStore(datadir)
    if store.ensure_first_admin() is None:
        return
    log.warning(
        "console: no users yet, so the user 'admin' was created with a generated password, "
        "written to %s (readable by this service's user only); log in at %s and choose a new "
        "password (the file is deleted then)",
        store.initial_password_path,
        console_url,
    )
