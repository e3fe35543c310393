"""What the console tests share: a cookie-keeping HTTP client that fills in the CSRF token the
pages carry, users made with the real CLI, a self-signed certificate for HTTPS, and the real
headless Chromium (Debian's `chromium` driven by Playwright with `executable_path`) with its
fixtures `chromium` and `page`. With CONSOLE_SCREENSHOTS=DIR set, pages are saved there as PNG
(docs/console/)."""

from __future__ import annotations

import datetime
import ipaddress
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from helpers import EDGE, Gateway, PlatformSim, base_config

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


class ConsoleClient:
    """A browser without a browser: keeps the session cookie, reads CSRF tokens from pages."""

    def __init__(self, base_url: str, verify: Any = True) -> None:
        self.http = httpx.Client(base_url=base_url, timeout=15, verify=verify)

    def csrf(self, path: str = "/login") -> str:
        page = self.http.get(path)
        match = CSRF.search(page.text)
        assert match, f"no CSRF token on {path} ({page.status_code}): {page.text[:300]}"
        return match.group(1)

    def login(self, user: str, password: str, next: str = "/") -> httpx.Response:
        token = self.csrf("/login")
        return self.http.post(
            "/login",
            data={"csrf_token": token, "username": user, "password": password, "next": next},
        )

    def change_password(self, current: str, new: str, confirm: str | None = None) -> httpx.Response:
        token = self.csrf("/password")
        return self.http.post(
            "/password",
            data={
                "csrf_token": token,
                "current": current,
                "new": new,
                "confirm": new if confirm is None else confirm,
            },
        )

    def close(self) -> None:
        self.http.close()


def console(gw: Gateway) -> ConsoleClient:
    return ConsoleClient(f"http://127.0.0.1:{gw.http_port}")


def edge(*args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([EDGE, *args], input=input, capture_output=True, text=True, timeout=60)


def add_user(datadir: Path, name: str, password: str, role: str) -> None:
    done = edge(
        "console", "user", "add", name, "--role", role, "--password-stdin",
        "--datadirpath", str(datadir), input=password + "\n",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr


def first_start(datadir: Path) -> None:
    """Undo what the Gateway helper does (no users): the next start makes the first admin."""
    (datadir / "console" / "users.json").unlink()


def audit(datadir: Path) -> list[dict[str, Any]]:
    import json

    path = datadir / "log" / "audit.log"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def self_signed_cert(tmp: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key (PEM), made with `cryptography`."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp / "console.crt", tmp / "console.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return cert_path, key_path


# ---------------------------------------------------------------------- the browser


Factory = Callable[..., Gateway]
STRONG = "correct horse battery"


def chromium_path() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.fail("chromium is not installed; `make test` installs it from Debian (apt-get)")
    return path


@pytest.fixture(scope="module")
def chromium() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path(), headless=True)
        yield browser
        browser.close()


@pytest.fixture
def page(chromium):  # type: ignore[no-untyped-def]
    context = chromium.new_context(viewport={"width": 1100, "height": 700})
    yield context.new_page()
    context.close()


def shot(page, name: str) -> None:  # type: ignore[no-untyped-def]
    folder = os.environ.get("CONSOLE_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(folder) / f"{name}.png"), full_page=True)


def url(gw: Gateway, path: str = "/") -> str:
    return f"http://127.0.0.1:{gw.http_port}{path}"


def log_in(page, gw: Gateway, user: str, password: str) -> None:  # type: ignore[no-untyped-def]
    page.goto(url(gw, "/login"))
    page.fill("input[name=username]", user)
    page.fill("input[name=password]", password)
    page.click("main button[type=submit]")


def logged_in(factory: Factory, platform: PlatformSim, page, role: str) -> Gateway:  # type: ignore[no-untyped-def]
    """A running gateway, and `page` logged in to it as a new user of `role` (named so)."""
    gw = factory(base_config(platform)).start()
    add_user(gw.datadir, f"{role}1", STRONG, role)
    log_in(page, gw, f"{role}1", STRONG)
    page.wait_for_url(url(gw, "/"))
    return gw
