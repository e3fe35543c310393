"""How the HTTP uplink reaches the platform: TLS (system CAs or the plant's `ca_file`, an
optional client certificate), an HTTP proxy (`proxy_*` keys, else HTTPS_PROXY / HTTP_PROXY /
NO_PROXY from the environment), and what a failure on that path means in words an operator
can act on (`explain`)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ssl
from dataclasses import dataclass, field

import aiohttp
from yarl import URL

from ..base import redact_url
from ..options import proxy_url, ssl_context
from .config import DatonisHttpCloud


def proxy_refused(where: Route, status: int) -> str:
    phrase = "Proxy Authentication Required" if status == 407 else "Unauthorized"
    if where.proxy is None:
        return (
            f"the proxy from HTTPS_PROXY / HTTP_PROXY refused the credentials ({status} "
            f"{phrase}); fix the user:password in that variable, or set proxy_* in cloud:"
        )
    return (
        f"{where.via} refused the credentials ({status} {phrase}); check proxy_username and "
        "proxy_password"
    )


def from_proxy(status: int, www_authenticate: str | None) -> bool:
    """Whether an HTTP answer came from a proxy on the way: a 407, or a 401 asking for Basic
    auth (the Datonis API signs requests and never asks for that)."""
    return status == 407 or (status == 401 and "basic" in (www_authenticate or "").lower())


CLOSED_AFTER_HANDSHAKE = "closed the connection right after the TLS handshake"


@dataclass
class Route:
    """Where requests go first: the proxy when one is configured, else the endpoint."""

    host: str
    port: int
    proxy: URL | None = None
    # Proxy-Authorization: on the CONNECT of an https endpoint (proxy_headers), on the request
    # itself for an http one (it never travels inside a tunnel to the platform)
    proxy_headers: dict[str, str] | None = None
    request_headers: dict[str, str] = field(default_factory=dict)

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
    where = Route(proxy.host or "", proxy.port or 3128, proxy.with_user(None))
    if proxy.user:
        pair = f"{proxy.user}:{proxy.password or ''}".encode()
        auth = {"Proxy-Authorization": "Basic " + base64.b64encode(pair).decode()}
        if url.scheme == "https":
            where.proxy_headers = auth
        else:
            where.request_headers = auth
    return where


def tls_context(cloud: DatonisHttpCloud) -> ssl.SSLContext | None:
    return ssl_context(cloud) if URL(cloud.endpoint).scheme == "https" else None


def open_session(
    cloud: DatonisHttpCloud, where: Route, tls: ssl.SSLContext | None
) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=cloud.request_timeout_ms / 1000),
        connector=aiohttp.TCPConnector(
            limit=cloud.max_inflight_batches + 2, ssl=tls if tls is not None else False
        ),
        raise_for_status=False,
        # the proxy_* keys go with each request (Route); without proxy_* keys: HTTPS_PROXY / HTTP_PROXY / NO_PROXY, as every HTTP client does
        trust_env=where.proxy is None,
    )


def explain(exc: BaseException, cloud: DatonisHttpCloud, where: Route) -> str:
    """A connection failure as one sentence naming the cause and the fix."""
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return _certificate(exc.certificate_error, cloud)
    if isinstance(exc, aiohttp.ClientHttpProxyError):
        if exc.status in (401, 407):  # tinyproxy, for one, answers bad credentials with 401
            return proxy_refused(where, exc.status)
        return (
            f"{where.via} refused the tunnel ({exc.status} {exc.message}); ask its "
            f"administrator to allow {redact_url(cloud.endpoint)}"
        )
    if isinstance(exc, aiohttp.ClientProxyConnectionError):
        cause = exc.os_error.strerror or exc.os_error
        keys = "proxy_host and proxy_port" if where.proxy else "HTTPS_PROXY / HTTP_PROXY"
        return f"proxy {exc.host}:{exc.port} unreachable ({cause}); check {keys}"
    text = f"{exc.__class__.__name__}: {exc}"
    lowered = text.lower()
    fix = (
        f"client_cert {cloud.client_cert} is not one it trusts; give one its CA signed"
        if cloud.client_cert
        else "set client_cert and client_key (a certificate its CA signed)"
    )
    if "certificate required" in lowered or "bad certificate" in lowered or "unknown ca" in lowered:
        return f"the platform refused the TLS handshake: it asks for a client certificate ({text}); {fix}"
    if CLOSED_AFTER_HANDSHAKE in text:
        return (
            f"the platform {CLOSED_AFTER_HANDSHAKE}, before any request, as a server does "
            f"that wants a client certificate; {fix}"
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


async def tls_alert(host: str, port: int, tls: ssl.SSLContext, timeout: float) -> str | None:
    """The TLS alert a server sends right after the handshake, if any. With TLS 1.3 a server
    that wants a client certificate says so only then, and aiohttp reports a bare disconnect;
    this handshake (nothing is sent over it) recovers what the server said."""
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port, ssl=tls, server_hostname=host), timeout
        )
    except ssl.SSLError as exc:
        return str(exc)
    except (OSError, TimeoutError):
        return None
    try:
        if not await asyncio.wait_for(reader.read(1), timeout):
            return CLOSED_AFTER_HANDSHAKE  # a server waiting for a request does not hang up
    except ssl.SSLError as exc:
        return str(exc)
    except (OSError, TimeoutError):
        return None
    finally:
        writer.close()
        with contextlib.suppress(OSError, ssl.SSLError):
            await writer.wait_closed()
    return None
