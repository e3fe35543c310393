"""The console's users and API tokens, in `DIR/console/` (shared by master and standbys, and
changed by the CLI while a gateway runs): `users.json` (scrypt hashes), `tokens.json` (sha256
of each token), both written whole and atomically, mode 0600, under an flock of
`DIR/console/.lock` so that a CLI and a gateway never lose each other's change."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import hmac
import re
import secrets
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import orjson

from ...store.durable import write_durably
from .filelock import console_lock
from .passwords import (
    check_strength,
    dummy_hash,
    generate_password,
    hash_password,
    verify_password,
)

ROLES = ("admin", "viewer")
FIRST_ADMIN = "admin"
TOKEN_PREFIX = "dte_"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")


class AuthError(Exception):
    """A refused change, as one sentence naming the cause and the fix."""


@dataclass(frozen=True)
class User:
    name: str
    role: str
    password_hash: str
    session_key: str  # changes with the password: a session signed with an older one is dead
    must_change: bool = False
    generated: bool = False  # the first admin's password, still in initial-admin-password
    created_ms: int = 0
    changed_ms: int = 0


@dataclass(frozen=True)
class Token:
    name: str
    role: str
    sha256: str
    created_ms: int = 0
    last_used_ms: int | None = None


def now_ms() -> int:
    return int(time.time() * 1000)


def check_name(name: str, what: str) -> None:
    if not _NAME.fullmatch(name):
        raise AuthError(
            f"'{name}' is not a valid {what} name: use 1-64 letters, digits, '.', '_', '-' or "
            "'@', starting with a letter or digit"
        )


def check_role(role: str) -> None:
    if role not in ROLES:
        raise AuthError(f"'{role}' is not a role: use one of {', '.join(ROLES)}")


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class ConsoleStore:
    """Users and tokens of one data directory. Reads are cached until the file changes (a
    request costs one stat); every change is a locked read-modify-write."""

    def __init__(self, datadir: Path) -> None:
        self.dir = datadir / "console"
        self.users_path = self.dir / "users.json"
        self.tokens_path = self.dir / "tokens.json"
        self.initial_password_path = self.dir / "initial-admin-password"
        self._cache: dict[Path, tuple[tuple[int, int, int], dict[str, Any]]] = {}

    # ------------------------------------------------------------------ files

    def _locked(self) -> contextlib.AbstractContextManager[None]:
        return console_lock(self.dir)

    def _read(self, path: Path, key: str) -> dict[str, Any]:
        try:
            st = path.stat()
        except FileNotFoundError:
            return {}
        version = (st.st_ino, st.st_mtime_ns, st.st_size)
        cached = self._cache.get(path)
        if cached is not None and cached[0] == version:
            return cached[1]
        try:
            entries = orjson.loads(path.read_bytes()).get(key, {})
        except (orjson.JSONDecodeError, AttributeError) as exc:
            raise AuthError(
                f"{path} is not valid JSON ({exc}); restore it from a backup, or move it away "
                "and create the users again with `datonis-edge console user add`"
            ) from None
        self._cache[path] = (version, entries)
        return entries

    def _write(self, path: Path, key: str, entries: dict[str, Any]) -> None:
        data = orjson.dumps({"version": 1, key: entries}, option=orjson.OPT_INDENT_2)
        write_durably(path, data, mode=0o600)

    # ------------------------------------------------------------------ users

    def users(self) -> dict[str, User]:
        return {
            name: User(name=name, **u) for name, u in self._read(self.users_path, "users").items()
        }

    def user(self, name: str) -> User | None:
        record = self._read(self.users_path, "users").get(name)
        return User(name=name, **record) if record is not None else None

    def _save_users(self, users: dict[str, User]) -> None:
        self._write(
            self.users_path,
            "users",
            {
                name: {k: v for k, v in asdict(u).items() if k != "name"}
                for name, u in users.items()
            },
        )

    def ensure_first_admin(self) -> str | None:
        """With no users file yet: create `admin` with a generated password, written to
        initial-admin-password (0600), and return it; else None."""
        with self._locked():
            if self.users_path.exists():
                return None
            password = generate_password()
            write_durably(self.initial_password_path, (password + "\n").encode(), mode=0o600)
            t = now_ms()
            admin = User(
                FIRST_ADMIN,
                "admin",
                hash_password(password),
                secrets.token_hex(8),
                must_change=True,
                generated=True,
                created_ms=t,
                changed_ms=t,
            )
            self._save_users({FIRST_ADMIN: admin})
            return password

    def add_user(self, name: str, password: str, role: str, must_change: bool = False) -> User:
        check_name(name, "user")
        check_role(role)
        self._check_password(password)
        hashed = hash_password(password)
        with self._locked():
            users = self.users()
            if name in users:
                raise AuthError(
                    f"the user '{name}' exists already; change the password with "
                    f"`datonis-edge console user passwd {name}`"
                )
            t = now_ms()
            users[name] = User(name, role, hashed, secrets.token_hex(8), must_change, False, t, t)
            self._save_users(users)
            return users[name]

    def set_password(self, name: str, password: str, must_change: bool = False) -> User:
        """A new hash and a new session key: every other session of the user ends."""
        self._check_password(password)
        hashed = hash_password(password)
        with self._locked():
            users = self.users()
            old = self._existing(users, name)
            if verify_password(password, old.password_hash):
                raise AuthError("the new password is the old one: choose another")
            users[name] = User(
                name,
                old.role,
                hashed,
                secrets.token_hex(8),
                must_change,
                False,
                old.created_ms,
                now_ms(),
            )
            self._save_users(users)
            if old.generated:
                with contextlib.suppress(FileNotFoundError):
                    self.initial_password_path.unlink()
            return users[name]

    def remove_user(self, name: str) -> User:
        with self._locked():
            users = self.users()
            user = self._existing(users, name)
            if user.role == "admin" and sum(u.role == "admin" for u in users.values()) == 1:
                raise AuthError(
                    f"'{name}' is the last admin and cannot be removed: add another admin first "
                    "(`datonis-edge console user add NAME --role admin`)"
                )
            del users[name]
            self._save_users(users)
            if user.generated:
                with contextlib.suppress(FileNotFoundError):
                    self.initial_password_path.unlink()
            return user

    def set_role(self, name: str, role: str) -> User:
        check_role(role)
        with self._locked():
            users = self.users()
            old = self._existing(users, name)
            admins = sum(u.role == "admin" for u in users.values())
            if old.role == "admin" and role != "admin" and admins == 1:
                raise AuthError(
                    f"'{name}' is the last admin and stays one: make another user admin first"
                )
            users[name] = dataclasses.replace(old, role=role, changed_ms=now_ms())
            self._save_users(users)
            return users[name]

    def authenticate(self, name: str, password: str) -> User | None:
        """The user if the password is right; as slow for an unknown name as for a known one."""
        user = self.user(name)
        ok = verify_password(password, user.password_hash if user else dummy_hash())
        return user if ok and user is not None else None

    def _existing(self, users: dict[str, User], name: str) -> User:
        if name not in users:
            known = ", ".join(sorted(users)) or "none"
            raise AuthError(f"there is no user '{name}' (users: {known})")
        return users[name]

    @staticmethod
    def _check_password(password: str) -> None:
        try:
            check_strength(password)
        except ValueError as exc:
            raise AuthError(str(exc)) from None

    # ------------------------------------------------------------------ tokens

    def tokens(self) -> list[Token]:
        entries = self._read(self.tokens_path, "tokens")
        return [Token(name=name, **t) for name, t in sorted(entries.items())]

    def _save_tokens(self, tokens: dict[str, Token]) -> None:
        self._write(
            self.tokens_path,
            "tokens",
            {
                name: {k: v for k, v in asdict(t).items() if k != "name"}
                for name, t in tokens.items()
            },
        )

    def create_token(self, name: str, role: str) -> str:
        """A new random token (shown once; only its sha256 is kept)."""
        check_name(name, "token")
        check_role(role)
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        with self._locked():
            tokens = {t.name: t for t in self.tokens()}
            if name in tokens:
                raise AuthError(
                    f"a token named '{name}' exists already; revoke it first "
                    f"(`datonis-edge console token revoke {name}`) or choose another name"
                )
            tokens[name] = Token(name, role, token_digest(token), now_ms())
            self._save_tokens(tokens)
        return token

    def revoke_token(self, name: str) -> Token:
        with self._locked():
            tokens = {t.name: t for t in self.tokens()}
            if name not in tokens:
                known = ", ".join(sorted(tokens)) or "none"
                raise AuthError(f"there is no token named '{name}' (tokens: {known})")
            revoked = tokens.pop(name)
            self._save_tokens(tokens)
            return revoked

    def token_for(self, secret: str) -> Token | None:
        digest = token_digest(secret)
        for token in self.tokens():
            if hmac.compare_digest(token.sha256, digest):
                return token
        return None

    def touch_token(self, name: str) -> None:
        """Record the token's last use (callers limit how often: it is a file write)."""
        with self._locked():
            tokens = {t.name: t for t in self.tokens()}
            if name in tokens:
                t = tokens[name]
                tokens[name] = Token(t.name, t.role, t.sha256, t.created_ms, now_ms())
                self._save_tokens(tokens)
