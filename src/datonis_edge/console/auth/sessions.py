"""Sessions in signed cookies (itsdangerous, the signer Flask and Starlette use), and the CSRF
token derived from each session.

The secret lives in `DIR/console/session-secret` (0600), so a session opened on the master is
good on a standby after a failover. A cookie holds a random session id, the user name and the
user's session key: a password change gives the user a new key (store.py), which ends every
other session of that user; a removed user's sessions end with the user. Visitors who have not
logged in get a session too (no user), so that the login form has a CSRF token."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from itsdangerous import BadSignature, URLSafeTimedSerializer

from ...store.durable import write_durably

COOKIE = "dte_session"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"


@dataclass(frozen=True)
class Session:
    sid: str
    user: str | None = None
    key: str | None = None  # the user's session key when the session was opened


def load_secret(console_dir: Path) -> bytes:
    """The data directory's session secret, made on first use (the first writer wins)."""
    path = console_dir / "session-secret"
    console_dir.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        tmp = console_dir / f".session-secret.{os.getpid()}.tmp"
        write_durably(tmp, secrets.token_hex(32).encode(), mode=0o600)
        try:
            os.link(tmp, path)  # never replaces a secret another instance made meanwhile
        except FileExistsError:
            pass
        except OSError:  # a filesystem without hard links
            if not path.exists():
                os.replace(tmp, path)
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    return path.read_bytes().strip()


class SessionCodec:
    def __init__(self, secret: bytes, max_age_s: float) -> None:
        self._secret = secret
        self._serializer = URLSafeTimedSerializer(secret, salt="datonis-edge-session")
        self.max_age_s = max_age_s

    def new(self, user: str | None = None, key: str | None = None) -> Session:
        return Session(secrets.token_urlsafe(16), user, key)

    def dumps(self, session: Session) -> str:
        return self._serializer.dumps([session.sid, session.user, session.key])

    def loads(self, cookie: str) -> Session | None:
        """The session of a cookie we signed and that has not expired; else None."""
        try:
            sid, user, key = self._serializer.loads(cookie, max_age=self.max_age_s)
        except (BadSignature, ValueError, TypeError):
            return None
        return Session(sid, user, key) if isinstance(sid, str) else None

    def csrf_token(self, session: Session) -> str:
        return hmac.new(self._secret, b"csrf:" + session.sid.encode(), hashlib.sha256).hexdigest()

    def csrf_ok(self, session: Session, token: str | None) -> bool:
        return bool(token) and hmac.compare_digest(self.csrf_token(session), token or "")

    def cookie_header(self, session: Session | None, secure: bool) -> str:
        """The Set-Cookie value: the session, or (None) its removal."""
        value, age = (self.dumps(session), int(self.max_age_s)) if session else ("", 0)
        return f"{COOKIE}={value}; Path=/; Max-Age={age}; HttpOnly; SameSite=Strict" + (
            "; Secure" if secure else ""
        )
