"""The Datonis HTTP API as both ends speak it: paths, headers and the HMAC signature.

Every request carries `X-Access-Key` and `X-Dtn-Signature`: the lowercase hex HMAC-SHA256 of
the exact body bytes, keyed with the secret key (../shared/reference/datonis-wire-spec.md).
Imports nothing of the package.
"""

from __future__ import annotations

import hashlib
import hmac

EVENT_PATH = "/api/v3/things/event.json"
HEARTBEAT_PATH = "/api/v3/things/heartbeat.json"
ALERTS_PATH = "/api/v3/alerts.json"


def sign(secret: str | bytes, body: bytes) -> str:
    key = secret.encode() if isinstance(secret, str) else secret
    return hmac.new(key, body, hashlib.sha256).hexdigest()


def signature_ok(secret: str | bytes, body: bytes, signature: str) -> bool:
    """Whether `signature` (as sent, any case) is the body's signature, in constant time."""
    return hmac.compare_digest(signature.strip().lower(), sign(secret, body))
