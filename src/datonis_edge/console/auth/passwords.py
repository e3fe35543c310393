"""Password hashes: scrypt from the standard library (no native dependency to install on an
edge box), a salt per user and the cost parameters stored with each hash, so that the cost can
be raised later without invalidating older hashes."""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import secrets

# 32 MiB and ~0.1 s per hash: costly for a guesser, bearable on a small gateway; logins are
# few and the lockout (lockout.py) caps guesses long before the cost matters
N, R, P = 2**15, 8, 1
MAXMEM = 64 << 20
MIN_LENGTH = 10


class WeakPassword(ValueError):
    pass


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def hash_password(password: str) -> str:
    """`scrypt$n$r$p$salt$hash`, base64 salt and hash."""
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=N, r=R, p=P, maxmem=MAXMEM, dklen=32)
    return f"scrypt${N}${R}${P}${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(digest)
        actual = hashlib.scrypt(
            password.encode(),
            salt=base64.b64decode(salt),
            n=int(n),
            r=int(r),
            p=int(p),
            maxmem=max(MAXMEM, 256 * int(r) * int(n)),
            dklen=len(expected),
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, expected)


@functools.cache
def dummy_hash() -> str:
    """Verified against when the user does not exist, so that a missing user takes as long."""
    return hash_password(secrets.token_urlsafe(16))


def check_strength(password: str) -> None:
    if len(password) < MIN_LENGTH:
        raise WeakPassword(
            f"the password is too short ({len(password)} characters): use at least {MIN_LENGTH}"
        )
    if password.strip() != password:
        raise WeakPassword("the password starts or ends with a space: remove it")


def generate_password() -> str:
    """20 URL-safe characters (120 bits): typed once, then changed."""
    return secrets.token_urlsafe(15)
