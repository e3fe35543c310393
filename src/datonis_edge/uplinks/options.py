"""The transport keys both Datonis uplinks take (HTTP API and MQTT): client id, plant CA and
client certificate, LZF bodies, registration, an HTTP proxy with basic auth.

Light to import (pydantic and the standard library only), so a config check loads no
network code. `ssl_context(cfg)` and `proxy_url(cfg)` turn the keys into what a client
library takes; both read only what validation already checked.
"""

from __future__ import annotations

import os
import re
import ssl
from urllib.parse import quote

from pydantic import Field, SecretStr, model_validator

from ..config.models import CloudBase
from .base import redact_url

# MQTT 3.1 servers may refuse longer ids; topics embed it, so keep it to safe characters
CLIENT_ID = re.compile(r"[A-Za-z0-9_-]{1,22}")


class DatonisTransportOptions(CloudBase):
    """Mixin for `cloud:` of the Datonis transports (spec §2, §9, §11)."""

    client_id: str | None = None
    ca_file: str | None = None
    client_cert: str | None = None
    client_key: str | None = None
    use_compression: bool = False
    register_things: bool = False
    proxy_host: str | None = None
    proxy_port: int | None = Field(None, ge=1, le=65_535)
    proxy_username: str | None = None
    proxy_password: SecretStr | None = None

    @model_validator(mode="after")
    def _check_transport_options(self) -> DatonisTransportOptions:
        if self.client_id is not None and not CLIENT_ID.fullmatch(self.client_id):
            raise ValueError(
                f"client_id: '{self.client_id}' must be 1 to 22 characters of A-Z, a-z, 0-9, "
                "'_' or '-' (MQTT topics embed it); or leave it out for a stable derived id"
            )
        if self.client_key and not self.client_cert:
            raise ValueError(
                "client_key: given without client_cert; add client_cert (the PEM certificate "
                "the key belongs to)"
            )
        self._check_proxy()
        for key in ("ca_file", "client_cert", "client_key"):
            _check_readable(key, getattr(self, key))
        if self.client_cert and not self.client_key and not _holds_key(self.client_cert):
            raise ValueError(
                f"client_cert: '{self.client_cert}' holds no private key; add client_key "
                "(the PEM key file of this certificate)"
            )
        if self.ca_file or self.client_cert:
            try:  # a PEM that does not parse or a key that does not match: say so now
                ssl_context(self)
            except (ssl.SSLError, ValueError) as exc:
                raise ValueError(_tls_file_problem(self, exc)) from None
        return self

    def _check_proxy(self) -> None:
        if self.proxy_host is not None and not self.proxy_host.strip():
            raise ValueError("proxy_host: empty; give the proxy's host name or address")
        if self.proxy_host and "://" in self.proxy_host:
            raise ValueError(
                f"proxy_host: '{redact_url(self.proxy_host)}' is a URL; write only the host "
                "(e.g. proxy.plant.local) and the port in proxy_port"
            )
        if self.proxy_host and self.proxy_port is None:
            raise ValueError("proxy_port: required with proxy_host (the proxy's port, e.g. 3128)")
        if self.proxy_port is not None and not self.proxy_host:
            raise ValueError("proxy_port: given without proxy_host; add proxy_host")
        if (self.proxy_username or self.proxy_password) and not self.proxy_host:
            raise ValueError(
                "proxy_username: proxy credentials given without proxy_host; add proxy_host "
                "and proxy_port"
            )
        if self.proxy_password is not None and not self.proxy_username:
            raise ValueError("proxy_password: given without proxy_username; add proxy_username")
        if self.proxy_username and self.proxy_password is None:
            raise ValueError(
                "proxy_password: required with proxy_username (write ${ENV_VAR} to keep it "
                "out of the file)"
            )


def _check_readable(key: str, path: str | None) -> None:
    if path is None:
        return
    if not path.strip():
        raise ValueError(f"{key}: empty; give the path of a PEM file or leave the key out")
    if not os.path.exists(path):
        raise ValueError(f"{key}: '{path}' not found; give the path of a PEM file")
    if not os.path.isfile(path):
        raise ValueError(f"{key}: '{path}' is not a file; give the path of a PEM file")
    if not os.access(path, os.R_OK):
        raise ValueError(
            f"{key}: '{path}' is not readable by this user; fix its permissions (chmod/chown)"
        )


def _holds_key(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            return b"PRIVATE KEY-----" in f.read(1 << 20)
    except OSError:
        return False


def _tls_file_problem(cfg: DatonisTransportOptions, exc: Exception) -> str:
    text = str(exc)
    if cfg.ca_file:
        try:
            ssl.create_default_context(cafile=cfg.ca_file)
        except (ssl.SSLError, ValueError):
            return f"ca_file: '{cfg.ca_file}' is not a PEM certificate bundle ({text})"
    if "KEY_VALUES_MISMATCH" in text or "key values mismatch" in text:
        return (
            f"client_key: '{cfg.client_key}' does not belong to client_cert "
            f"'{cfg.client_cert}'; give the key the certificate was issued for"
        )
    return (
        f"client_cert: '{cfg.client_cert}' (with client_key '{cfg.client_key}') could not be "
        f"loaded ({text}); give a PEM certificate and its unencrypted PEM key"
    )


def ssl_context(cfg: DatonisTransportOptions) -> ssl.SSLContext:
    """TLS with the system CAs, or only the plant's `ca_file`; the client certificate
    chain when one is configured. Hostnames are always checked."""
    ctx = ssl.create_default_context(cafile=cfg.ca_file) if cfg.ca_file else None
    if ctx is None:
        ctx = ssl.create_default_context()
    if cfg.client_cert:
        ctx.load_cert_chain(cfg.client_cert, cfg.client_key)
    return ctx


def proxy_url(cfg: DatonisTransportOptions) -> str | None:
    """`http://user:password@host:port` of the configured proxy (credentials URL-quoted),
    or None. Show it only through `redact_url`."""
    if not cfg.proxy_host:
        return None
    host = cfg.proxy_host.strip()
    if ":" in host and not host.startswith("["):  # an IPv6 address
        host = f"[{host}]"
    auth = ""
    if cfg.proxy_username:
        password = cfg.proxy_password.get_secret_value() if cfg.proxy_password else ""
        auth = f"{quote(cfg.proxy_username, safe='')}:{quote(password, safe='')}@"
    return f"http://{auth}{host}:{cfg.proxy_port}"
