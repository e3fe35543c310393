"""How the HTTP uplink reaches the platform: TLS (system CAs or the plant's `ca_file`, an
optional client certificate), an HTTP proxy (`proxy_*` keys, else HTTPS_PROXY / HTTP_PROXY /
NO_PROXY from the environment), and what a failure on that path means in words an operator
can act on (`explain`)."""

from __future__ import annotations

import ssl
from dataclasses import dataclass

import aiohttp
from yarl import URL

from ..base import redact_url
from ..options import proxy_url, ssl_context
from .config import DatonisHttpCloud

PROXY_AUTH_HINT = "check proxy_username and proxy_password"


@dataclass
class Route:
    """Where requests go first: the proxy when one is configured, else the endpoint."""

    host: str
    port: int
    proxy: URL | None = None
    proxy_auth: aiohttp.BasicAuth | None = None

    @property
    def via(self) -> str:
        return f"proxy {self.host}:{self.port}" if self.proxy else f"{self.host}:{self.port}"


def route(cloud: DatonisHttpCloud) -> Route:
    url = URL(cloud.endpoint)
    port = url.port or (443 if url.scheme == "https" else 80)
    configured = proxy_url(cloud)
    if configured is None:
        return Route(url.host or "127.0.0.1", port)
    proxy = URL(configured)
    auth = aiohttp.BasicAuth(proxy.user or "", proxy.password or "") if proxy.user else None
    return Route(proxy.host or "", proxy.port or 3128, proxy.with_user(None), auth)


def open_session(cloud: DatonisHttpCloud, where: Route) -> aiohttp.ClientSession:
    tls: ssl.SSLContext | bool = (
        ssl_context(cloud) if URL(cloud.endpoint).scheme == "https" else False
    )
    return aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=cloud.request_timeout_ms / 1000),
        connector=aiohttp.TCPConnector(limit=cloud.max_inflight_batches + 2, ssl=tls),
        raise_for_status=False,
        # the proxy_* keys go with each request (Route); without proxy_* keys: HTTPS_PROXY / HTTP_PROXY / NO_PROXY, as every HTTP client does
        trust_env=where.proxy is None,
    )


def explain(exc: BaseException, cloud: DatonisHttpCloud, where: Route) -> str:
    """A connection failure as one sentence naming the cause and the fix."""
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return _certificate(exc.certificate_error, cloud)
    if isinstance(exc, aiohttp.ClientHttpProxyError):
        if exc.status == 407:
            return f"{where.via} refused the credentials (407 Proxy Authentication Required); {PROXY_AUTH_HINT}"
        return f"{where.via} refused the tunnel ({exc.status} {exc.message}); ask the proxy's administrator to allow {redact_url(cloud.endpoint)}"
    if isinstance(exc, aiohttp.ClientProxyConnectionError):
        return f"{where.via} unreachable ({exc.os_error.strerror or exc.os_error}); check proxy_host and proxy_port"
    text = f"{exc.__class__.__name__}: {exc}"
    lowered = text.lower()
    if "certificate required" in lowered or "bad certificate" in lowered or "unknown ca" in lowered:
        given = "client_cert is not one it trusts" if cloud.client_cert else "set client_cert"
        return (
            f"the platform refused the TLS handshake: it asks for a client certificate "
            f"({text}); {given} and client_key (a certificate its CA signed)"
        )
    if isinstance(exc, aiohttp.ClientSSLError | ssl.SSLError):
        return f"TLS failed ({text}); check the endpoint's scheme and port and ca_file"
    return redact_url(f"connection error: {text}")


def _certificate(err: Exception, cloud: DatonisHttpCloud) -> str:
    detail = getattr(err, "verify_message", None) or str(err)
    code = getattr(err, "verify_code", None)
    if code == 62 or "hostname mismatch" in detail.lower():  # X509_V_ERR_HOSTNAME_MISMATCH
        return (
            f"certificate does not match the host ({detail}); write the endpoint with the "
            "name the certificate was issued for"
        )
    if code in (9, 10):  # not yet valid, expired
        return f"certificate not valid now ({detail}); check the clocks and the certificate"
    if cloud.ca_file:
        return (
            f"certificate not trusted by ca_file {cloud.ca_file} ({detail}); give the CA "
            "bundle that signed the platform's (or the plant proxy's) certificate"
        )
    return (
        f"certificate not trusted: set ca_file to the plant's CA bundle ({detail}); the "
        "system CAs do not include the CA that signed it"
    )
