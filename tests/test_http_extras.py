"""The Datonis HTTP uplink's extras against real parts: LZF bodies through the platform
simulator, a real proxy (tinyproxy, with basic auth), TLS to a simulator whose certificate a
test CA signed (and one that asks for a client certificate)."""

from __future__ import annotations

import datetime
import ipaddress
import json
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from datonis_edge.model import Batch, Outcome, OutcomeKind
from datonis_edge.protocol import lzf
from datonis_edge.protocol.datonis import EVENT_PATH, sign
from datonis_edge.uplinks.base import redact_url
from datonis_edge.uplinks.datonis_http.config import DatonisHttpCloud
from datonis_edge.uplinks.datonis_http.uplink import DatonisHttpUplink
from datonis_edge.uplinks.options import proxy_url
from helpers import (
    PlatformSim,
    Proc,
    base_config,
    free_port,
    simulator_service,
    wait_port,
    wait_until,
)

# ---- a test PKI ---------------------------------------------------------------------------


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _issue(
    cn: str,
    issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None,
    *,
    ca: bool = False,
    server: bool = False,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    issuer_name, issuer_key = issuer or (_name(cn), key)
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), True
        )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
    return builder.sign(issuer_key, hashes.SHA256()), key


def _write(path: Path, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey | None) -> None:
    path.with_suffix(".pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    if key is not None:
        path.with_suffix(".key").write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ca.pem signed server.pem (127.0.0.1); client-ca.pem signed client.pem; other-ca.pem
    signed nothing here."""
    d = tmp_path_factory.mktemp("pki")
    ca, ca_key = _issue("Plant Test CA", None, ca=True)
    _write(d / "ca", ca, None)
    server, server_key = _issue("127.0.0.1", (ca.subject, ca_key), server=True)
    _write(d / "server", server, server_key)
    client_ca, client_ca_key = _issue("Plant Client CA", None, ca=True)
    _write(d / "client-ca", client_ca, None)
    client, client_key = _issue("edge-gateway-7", (client_ca.subject, client_ca_key))
    _write(d / "client", client, client_key)
    other, _ = _issue("Some Other CA", None, ca=True)
    _write(d / "other-ca", other, None)
    return d


def tls_platform(tmp: Path, pki: Path, client_ca: bool = False) -> PlatformSim:
    sim = PlatformSim(tmp)
    sim.proc.args += ["--tls-cert", str(pki / "server.pem"), "--tls-key", str(pki / "server.key")]
    ctx = ssl.create_default_context(cafile=str(pki / "ca.pem"))
    if client_ca:
        sim.proc.args += ["--tls-client-ca", str(pki / "client-ca.pem")]
        ctx.load_cert_chain(str(pki / "client.pem"), str(pki / "client.key"))
    sim.url = f"https://127.0.0.1:{sim.port}"
    sim.http.close()
    sim.http = httpx.Client(base_url=sim.url, timeout=10, verify=ctx)
    return sim.start()


@pytest.fixture
def https_platform(tmp_path: Path, pki: Path) -> Iterator[PlatformSim]:
    sim = tls_platform(tmp_path, pki)
    yield sim
    sim.stop()


# ---- a real proxy ---------------------------------------------------------------------------


class TinyProxy:
    """tinyproxy from Debian on a free loopback port, asking for basic auth."""

    def __init__(self, tmp: Path, user: str = "edge", password: str = "pw-R1ght") -> None:
        self.tmp, self.user = tmp, user
        self.port = free_port()
        self.log_path = tmp / f"tinyproxy-{self.port}.log"
        self.proc: Proc | None = None
        self.password = password

    def start(self, password: str | None = None) -> TinyProxy:
        if password is not None:
            self.password = password
        conf = self.tmp / f"tinyproxy-{self.port}.conf"
        conf.write_text(
            f"Port {self.port}\nListen 127.0.0.1\nTimeout 30\nMaxClients 50\n"
            f"BasicAuth {self.user} {self.password}\nAllow 127.0.0.1\nLogLevel Connect\n"
        )
        self.proc = Proc(["tinyproxy", "-d", "-c", str(conf)], self.log_path).start()
        wait_port(self.port)
        return self

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()

    def requests(self) -> list[str]:
        """The requests it passed on (plain ones and CONNECT tunnels)."""
        if not self.log_path.exists():
            return []
        lines = self.log_path.read_text(errors="replace").splitlines()
        return [line for line in lines if "]: Request (" in line]

    def keys(self, password: str | None = None) -> dict[str, Any]:
        return {
            "proxy_host": "127.0.0.1",
            "proxy_port": self.port,
            "proxy_username": self.user,
            "proxy_password": self.password if password is None else password,
        }


@pytest.fixture
def proxy(tmp_path: Path) -> Iterator[TinyProxy]:
    p = TinyProxy(tmp_path).start()
    yield p
    p.stop()


# ---- the uplink in this process, against those real servers -------------------------------


def _events(n: int, start: int = 0) -> list[dict[str, Any]]:
    return [
        {"thing_key": "press-1", "timestamp": 1_700_000_000_000 + i, "data": {"n": i, "t": 20.5}}
        for i in range(start, start + n)
    ]


async def send(sim: PlatformSim, events: list[dict[str, Any]], **keys: Any) -> tuple[Outcome, Any]:
    cloud = DatonisHttpCloud(
        protocol="https" if sim.url.startswith("https") else "http",
        endpoint=sim.url,
        access_key=sim.access_key,
        secret_key=sim.secret_key,
        request_timeout_ms=5000,
        **keys,
    )
    uplink = DatonisHttpUplink(cloud)
    await uplink.start()
    try:
        batch = Batch(f"b{len(events)}", 3, (0, len(events)), len(events), parsed=events)
        return await uplink.send(batch), uplink.status
    finally:
        await uplink.close()


# ---- LZF bodies -----------------------------------------------------------------------------


async def test_event_bodies_over_1kb_go_compressed_and_arrive_exactly(platform) -> None:
    small, big = _events(1), _events(200, start=1)
    out_small, _ = await send(platform, small, use_compression=True)
    out_big, status = await send(platform, big, use_compression=True)
    assert out_small.kind is OutcomeKind.DELIVERED and out_big.kind is OutcomeKind.DELIVERED
    assert [r["compressed"] for r in platform.requests()] == [None, "LZF"]
    got = [{k: e[k] for k in ("thing_key", "timestamp", "data")} for e in platform.events()]
    assert got == small + big
    stats = platform.stats()
    assert stats["lzf_bodies"] == 1 and "401" not in stats["by_status"]
    assert status.counters["lzf_bytes_out"] < status.counters["lzf_bytes_in"] / 3


async def test_without_use_compression_bodies_go_as_json(platform) -> None:
    out, _ = await send(platform, _events(200))
    assert out.kind is OutcomeKind.DELIVERED
    assert [r["compressed"] for r in platform.requests()] == [None]
    assert platform.stats()["lzf_bodies"] == 0


def test_simulator_checks_the_signature_over_the_decoded_body(platform) -> None:
    body = json.dumps({"events": _events(50)}).encode()
    wire = lzf.encode(body)
    url = f"{platform.url}{EVENT_PATH}"
    headers = {"X-Access-Key": platform.access_key, "X-Compressed": "LZF"}
    ok = httpx.post(
        url, content=wire, headers={**headers, "X-Dtn-Signature": sign(platform.secret_key, body)}
    )
    over_wire = httpx.post(
        url, content=wire, headers={**headers, "X-Dtn-Signature": sign(platform.secret_key, wire)}
    )
    damaged = httpx.post(
        url,
        content=wire[:-5],
        headers={**headers, "X-Dtn-Signature": sign(platform.secret_key, body)},
    )
    assert ok.status_code == 200 and ok.json()["accepted"] == 50
    assert over_wire.status_code == 401
    assert damaged.status_code == 400 and "LZF body" in damaged.json()["reason"]


def test_compressed_delivery_end_to_end(platform, gateway_factory) -> None:
    config = base_config(
        platform, use_compression=True, bulk_max_elements=100, bulk_transmit_interval_ms=300
    )
    config["services"] = [simulator_service("press-1", scan_interval_ms=10)]
    gw = gateway_factory(config).start()
    events = wait_until(
        lambda: (e := platform.events()) and len(e) >= 300 and e, 30, "300 events at the platform"
    )
    assert [e["data"]["n"] for e in events] == list(range(len(events)))
    stats = platform.stats()
    assert stats["lzf_bodies"] >= 1
    assert "401" not in stats["by_status"] and "400" not in stats["by_status"]
    counters = gw.status()["uplinks"][0]["counters"]
    assert counters["lzf_bytes_out"] < counters["lzf_bytes_in"]


# ---- the proxy ------------------------------------------------------------------------------


def test_wrong_proxy_password_shows_in_status_and_loses_nothing(
    platform, gateway_factory, tmp_path: Path
) -> None:
    wrong = "pw-Wr0ng-9"
    proxy = TinyProxy(tmp_path).start()
    try:
        config = base_config(platform, **proxy.keys(password=wrong))
        config["services"] = [simulator_service("press-1", scan_interval_ms=20)]
        gw = gateway_factory(config).start()
        uplink = wait_until(
            lambda: (u := gw.status()["uplinks"][0])["last_error"] and u,
            what="the uplink to report the proxy's refusal",
        )
        assert uplink["last_error"].startswith(
            f"proxy 127.0.0.1:{proxy.port} refused the credentials"
        )
        assert "check proxy_username and proxy_password" in uplink["last_error"]
        assert uplink["details"]["proxy"] == f"127.0.0.1:{proxy.port}"
        assert platform.stats()["events"] == 0
        # the proxy now takes the password the gateway has: everything arrives, from the first
        proxy.stop()
        proxy.start(password=wrong)
        events = wait_until(
            lambda: (e := platform.events()) and len(e) >= 100 and e, 30, "events via the proxy"
        )
        assert [e["data"]["n"] for e in events] == list(range(len(events)))
        assert any(EVENT_PATH in line for line in proxy.requests())
        st = gw.status()
        assert st["counters"]["declined"] == 0
        assert gw.proc is not None
        log = gw.proc.log()
        assert wrong not in log  # the password never reaches the log
        refusals = [ln for ln in log.splitlines() if "refused the credentials" in ln]
        assert len(refusals) == 1, refusals  # logged once, with the fix
        assert "check proxy_username and proxy_password" in refusals[0]
    finally:
        proxy.stop()


async def test_https_through_the_proxy_with_basic_auth(https_platform, proxy, pki) -> None:
    out, status = await send(
        https_platform, _events(3), ca_file=str(pki / "ca.pem"), **proxy.keys()
    )
    assert out.kind is OutcomeKind.DELIVERED
    assert any(f"CONNECT 127.0.0.1:{https_platform.port}" in r for r in proxy.requests())
    assert len(https_platform.events()) == 3
    refused, status = await send(
        https_platform, _events(3), ca_file=str(pki / "ca.pem"), **proxy.keys(password="nope")
    )
    assert refused.kind is OutcomeKind.RETRY
    assert status.last_error.startswith(f"proxy 127.0.0.1:{proxy.port} refused the credentials")
    assert len(https_platform.events()) == 3


async def test_unreachable_proxy_is_named_with_the_keys_to_check(platform) -> None:
    port = free_port()
    keys = {"proxy_host": "127.0.0.1", "proxy_port": port}
    out, status = await send(platform, _events(1), **keys)
    assert out.kind is OutcomeKind.RETRY
    assert status.last_error.startswith(f"proxy 127.0.0.1:{port} unreachable")
    assert status.last_error.endswith("check proxy_host and proxy_port")


async def test_proxy_from_the_environment_and_no_proxy(platform, proxy, monkeypatch) -> None:
    env_url = f"http://{proxy.user}:{proxy.password}@127.0.0.1:{proxy.port}"
    for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", env_url)
    monkeypatch.setenv("NO_PROXY", "")
    out, _ = await send(platform, _events(2))
    assert out.kind is OutcomeKind.DELIVERED
    through = len(proxy.requests())
    assert through == 1
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    out, _ = await send(platform, _events(2, start=2))
    assert out.kind is OutcomeKind.DELIVERED
    assert len(proxy.requests()) == through  # went direct
    assert len(platform.events()) == 4


def test_proxy_url_quotes_the_credentials_and_redacts_them() -> None:
    cloud = DatonisHttpCloud(
        access_key="ak",
        secret_key="sk",
        proxy_host="proxy.plant.local",
        proxy_port=3128,
        proxy_username="dom\\edge",
        proxy_password="p@ss:w/rd",
    )
    assert proxy_url(cloud) == "http://dom%5Cedge:p%40ss%3Aw%2Frd@proxy.plant.local:3128"
    assert redact_url(proxy_url(cloud) or "") == "http://***@proxy.plant.local:3128"
    assert "p@ss" not in repr(cloud)


# ---- TLS --------------------------------------------------------------------------------------


async def test_tls_with_the_plant_ca_as_ca_file(https_platform, pki) -> None:
    out, _ = await send(https_platform, _events(5), ca_file=str(pki / "ca.pem"))
    assert out.kind is OutcomeKind.DELIVERED, out.reason
    assert len(https_platform.events()) == 5


async def test_tls_without_ca_file_says_set_ca_file(https_platform, pki) -> None:
    out, status = await send(https_platform, _events(5))
    assert out.kind is OutcomeKind.RETRY
    assert status.last_error.startswith("certificate not trusted: set ca_file")
    out, status = await send(https_platform, _events(5), ca_file=str(pki / "other-ca.pem"))
    assert status.last_error.startswith(f"certificate not trusted by ca_file {pki}/other-ca.pem")
    assert https_platform.stats()["events"] == 0


async def test_client_certificate_for_a_platform_that_asks_for_one(tmp_path, pki) -> None:
    sim = tls_platform(tmp_path, pki, client_ca=True)
    try:
        ca = str(pki / "ca.pem")
        out, _ = await send(
            sim,
            _events(2),
            ca_file=ca,
            client_cert=str(pki / "client.pem"),
            client_key=str(pki / "client.key"),
        )
        assert out.kind is OutcomeKind.DELIVERED, out.reason
        out, status = await send(sim, _events(2), ca_file=ca)
        assert out.kind is OutcomeKind.RETRY
        assert "client certificate" in status.last_error and "set client_cert" in status.last_error
        # a certificate the platform's client CA did not sign
        rogue = tmp_path / "rogue"
        cert, key = _issue("rogue-gateway", None)
        _write(rogue, cert, key)
        out, status = await send(
            sim,
            _events(2),
            ca_file=ca,
            client_cert=str(rogue.with_suffix(".pem")),
            client_key=str(rogue.with_suffix(".key")),
        )
        assert out.kind is OutcomeKind.RETRY
        assert f"client_cert {rogue.with_suffix('.pem')} is not one it trusts" in status.last_error
        assert len(sim.events()) == 2
    finally:
        sim.stop()


def test_tls_files_are_checked_when_the_config_loads(pki, tmp_path: Path) -> None:
    base = {"access_key": "ak", "secret_key": "sk"}
    not_pem = tmp_path / "notes.txt"
    not_pem.write_text("not a certificate")
    with pytest.raises(ValueError, match=r"ca_file: '.*notes.txt' is not a PEM certificate"):
        DatonisHttpCloud(**base, ca_file=str(not_pem))
    # a key of another certificate
    other = tmp_path / "other"
    cert, key = _issue("x", None)
    _write(other, cert, key)
    with pytest.raises(ValueError, match=r"client_key: .* does not belong to client_cert"):
        DatonisHttpCloud(
            **base, client_cert=str(pki / "client.pem"), client_key=str(other.with_suffix(".key"))
        )
    # certificate and key in one file: client_key may be left out
    both = tmp_path / "both.pem"
    both.write_bytes((pki / "client.pem").read_bytes() + (pki / "client.key").read_bytes())
    assert DatonisHttpCloud(**base, client_cert=str(both)).client_key is None
