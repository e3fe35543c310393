"""HTTPS for the console: the server's TLS context from `console.tls_cert` / `console.tls_key`."""

from __future__ import annotations

import ssl

from ..config.models import ConsoleConfig


class TlsError(Exception):
    """The certificate or key cannot be used, as one sentence naming the file and the fix."""


def server_context(config: ConsoleConfig) -> ssl.SSLContext | None:
    """None for plain HTTP (neither key set; the config model refuses one without the other)."""
    if not config.tls_cert or not config.tls_key:
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(config.tls_cert, config.tls_key)
    except FileNotFoundError as exc:
        raise TlsError(
            f"console.tls_cert / console.tls_key: {exc.filename or config.tls_cert} does not "
            "exist; give the paths of a PEM certificate and its key"
        ) from None
    except PermissionError as exc:
        raise TlsError(
            f"console.tls_cert / console.tls_key: {exc.filename} is not readable by this user; "
            "give the service user read access (the key: 0600, owned by it)"
        ) from None
    except ssl.SSLError as exc:
        raise TlsError(
            f"console.tls_cert / console.tls_key: {config.tls_cert} and {config.tls_key} are not "
            f"a PEM certificate and its matching unencrypted key ({exc.reason or exc})"
        ) from None
    return context
