"""The console's security at the HTTP level, against a real gateway process: the first admin
and the forced change, sessions, CSRF, lockout, roles, API tokens made with the CLI, HTTPS,
/metrics behind a token, the audit log. (tests/test_console_browser.py drives a real browser.)"""

from __future__ import annotations

import json
import os
import re
import ssl
import stat
import subprocess
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
import yaml

from console_helpers import (
    ConsoleClient,
    add_user,
    audit,
    console,
    edge,
    first_start,
    self_signed_cert,
)
from helpers import EDGE, Gateway, PlatformSim, Proc, base_config, free_port, wait_until

Factory = Callable[..., Gateway]
STRONG = "correct horse battery"


@pytest.fixture
def gw(gateway_factory: Factory, platform: PlatformSim) -> Gateway:
    return gateway_factory(base_config(platform)).start()


def _warnings(gw: Gateway, needle: str) -> list[str]:
    assert gw.proc
    return [line for line in gw.proc.log().splitlines() if " WARNING " in line and needle in line]


# ---------------------------------------------------------------------- first start


def test_first_start_makes_admin_with_a_generated_password_and_forces_a_change(
    gateway_factory: Factory, platform: PlatformSim, tmp_path: Path
) -> None:
    gw = gateway_factory(base_config(platform))
    first_start(gw.datadir)
    gw.start()
    password_file = gw.datadir / "console" / "initial-admin-password"
    assert stat.S_IMODE(password_file.stat().st_mode) == 0o600
    assert stat.S_IMODE((gw.datadir / "console" / "session-secret").stat().st_mode) == 0o600
    assert stat.S_IMODE((gw.datadir / "console" / "users.json").stat().st_mode) == 0o600
    lines = _warnings(gw, "initial-admin-password")
    assert len(lines) == 1 and str(password_file) in lines[0]
    generated = password_file.read_text().strip()

    browser = console(gw)
    page = browser.http.get("/login")
    assert "First start" in page.text and str(password_file) in page.text
    r = browser.login("admin", generated)
    assert r.status_code == 303 and r.headers["location"] == "/password"
    # until the change, every page leads to it and the API refuses the session
    assert browser.http.get("/").headers["location"] == "/password"
    assert browser.http.get("/api/v1/status").status_code == 403

    weak = browser.change_password(generated, "short")
    assert weak.status_code == 400 and "at least 10" in weak.text
    differ = browser.change_password(generated, STRONG, STRONG + "x")
    assert differ.status_code == 400 and "differ" in differ.text
    r = browser.change_password(generated, STRONG)
    assert r.status_code == 303
    assert not password_file.exists()
    assert browser.http.get("/").status_code == 200
    assert browser.http.get("/api/v1/status").json()["role"] == "master"

    again = console(gw)
    assert again.login("admin", generated).status_code == 401  # the generated one is dead
    assert again.login("admin", STRONG).status_code == 303
    actions = [(e["actor"], e["action"]) for e in audit(gw.datadir)]
    assert ("admin", "login") in actions and ("admin", "password_changed") in actions
    assert ("admin", "login_failed") in actions
    assert all(e["from"] == "127.0.0.1" for e in audit(gw.datadir))

    # a restart does not make a new admin or log the password again
    gw.stop()
    gw.start()
    assert len(_warnings(gw, "initial-admin-password")) == 1


# ---------------------------------------------------------------------- no credentials


def test_no_session_redirects_to_login_and_no_token_is_401(gw: Gateway) -> None:
    anonymous = httpx.Client(base_url=f"http://127.0.0.1:{gw.http_port}", timeout=10)
    r = anonymous.get("/?x=1")
    assert r.status_code == 303 and r.headers["location"] == "/login?next=/%3Fx%3D1"
    r = anonymous.get("/api/v1/status")
    assert r.status_code == 401 and "Authorization: Bearer" in r.json()["error"]
    r = anonymous.post("/api/v1/declined/replay")
    assert r.status_code == 401
    r = anonymous.get("/api/v1/status", headers={"Authorization": "Bearer dte_wrong"})
    assert r.status_code == 401 and "not valid" in r.json()["error"]
    for open_path in ("/healthz", "/readyz", "/metrics", "/login", "/static/console.css"):
        assert anonymous.get(open_path).status_code == 200, open_path
    assert gw.http.get("/api/v1/status").status_code == 200  # the helper's admin token
    anonymous.close()


def test_login_after_the_redirect_returns_to_the_page_asked_for(gw: Gateway) -> None:
    add_user(gw.datadir, "operator", STRONG, "viewer")
    browser = console(gw)
    r = browser.login("operator", STRONG, next="/api/v1/declined")
    assert r.status_code == 303 and r.headers["location"] == "/api/v1/declined"
    r = console(gw).login("operator", STRONG, next="//evil.example/")
    assert r.headers["location"] == "/"  # never off the console


# ---------------------------------------------------------------------- lockout


def test_five_wrong_passwords_lock_the_user_and_the_right_one_is_refused_while_locked(
    gw: Gateway,
) -> None:
    add_user(gw.datadir, "alice", STRONG, "admin")
    browser = console(gw)
    for _ in range(4):
        assert browser.login("alice", "wrong password").status_code == 401
    locked = browser.login("alice", "wrong password")
    assert locked.status_code == 429 and "Too many failed logins" in locked.text
    refused = browser.login("alice", STRONG)
    assert refused.status_code == 429
    assert browser.http.get("/api/v1/status").status_code == 401  # no session came of it
    assert len(_warnings(gw, "login locked")) == 1
    actions = [e["action"] for e in audit(gw.datadir) if e["actor"] == "alice"]
    assert actions.count("login_failed") == 5 and "locked_out" in actions


def test_wrong_passwords_for_many_names_lock_the_address(gw: Gateway) -> None:
    add_user(gw.datadir, "bob", STRONG, "viewer")
    browser = console(gw)
    for i in range(4):
        assert browser.login(f"guess{i}", "x" * 12).status_code == 401
    assert browser.login("guess4", "x" * 12).status_code == 429
    # the address is locked: even a right password of another user waits
    assert console(gw).login("bob", STRONG).status_code == 429


# ---------------------------------------------------------------------- roles, CSRF


def test_a_viewer_cannot_replay_and_sees_no_admin_forms(gw: Gateway) -> None:
    add_user(gw.datadir, "viewer1", STRONG, "viewer")
    add_user(gw.datadir, "admin1", STRONG, "admin")
    viewer = console(gw)
    assert viewer.login("viewer1", STRONG).status_code == 303
    page = viewer.http.get("/")
    assert page.status_code == 200 and "viewer1" in page.text
    assert "/declined/replay" not in page.text  # no admin form
    token = viewer.csrf("/")
    r = viewer.http.post("/api/v1/declined/replay", headers={"X-CSRF-Token": token})
    assert r.status_code == 403 and "viewer" in r.json()["error"]
    r = viewer.http.post("/declined/replay", data={"csrf_token": token})
    assert r.status_code == 403
    assert viewer.http.get("/api/v1/status").status_code == 200  # reading is fine

    admin = console(gw)
    admin.login("admin1", STRONG)
    assert "/declined/replay" in admin.http.get("/").text
    r = admin.http.post("/api/v1/declined/replay", headers={"X-CSRF-Token": admin.csrf("/")})
    assert r.status_code == 200 and r.json() == {"replayed_events": 0}
    assert any(
        e["action"] == "declined_replay" and e["actor"] == "admin1" for e in audit(gw.datadir)
    )


def test_a_form_or_cookie_post_without_the_csrf_token_is_403(gw: Gateway) -> None:
    add_user(gw.datadir, "admin1", STRONG, "admin")
    browser = console(gw)
    assert browser.login("admin1", STRONG).status_code == 303
    token = browser.csrf("/")
    for data in ({}, {"csrf_token": "0" * 64}):
        r = browser.http.post("/declined/replay", data=data)
        assert r.status_code == 403 and "CSRF" in r.text
    assert browser.http.post("/api/v1/declined/replay").status_code == 403
    assert browser.http.post("/logout", data={}).status_code == 403
    assert browser.http.post("/declined/replay", data={"csrf_token": token}).status_code == 303
    # the login form has its token too
    fresh = console(gw)
    fresh.http.get("/login")
    r = fresh.http.post("/login", data={"username": "admin1", "password": STRONG})
    assert r.status_code == 403
    # a Bearer request needs none
    assert gw.http.post("/api/v1/declined/replay").status_code == 200


def test_logout_ends_the_session(gw: Gateway) -> None:
    add_user(gw.datadir, "admin1", STRONG, "admin")
    browser = console(gw)
    browser.login("admin1", STRONG)
    stolen = browser.http.cookies.get("dte_session")
    r = browser.http.post("/logout", data={"csrf_token": browser.csrf("/")})
    assert r.status_code == 303 and r.headers["location"] == "/login"
    assert browser.http.get("/").status_code == 303
    assert stolen  # (a signed cookie stays valid until it expires or the password changes)


# ---------------------------------------------------------------------- the CLI


def _token_line(listing: str, name: str) -> str:
    return next(line for line in listing.splitlines() if line.startswith(name))


def test_tokens_created_listed_and_revoked_with_the_cli(gw: Gateway) -> None:
    dd = str(gw.datadir)
    made = edge("console", "token", "create", "grafana", "--role", "viewer", "--datadirpath", dd)
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip()
    assert token.startswith("dte_") and "shown this once" in made.stderr
    assert token not in (gw.datadir / "console" / "tokens.json").read_text()  # only its hash
    api = httpx.Client(
        base_url=f"http://127.0.0.1:{gw.http_port}",
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    assert api.get("/api/v1/status").status_code == 200
    assert api.post("/api/v1/declined/replay").status_code == 403  # viewer
    listed = edge("console", "token", "list", "--datadirpath", dd)
    assert "viewer" in _token_line(listed.stdout, "grafana")

    def last_use_noted() -> bool:
        listing = edge("console", "token", "list", "--datadirpath", dd).stdout
        return "never" not in _token_line(listing, "grafana")

    wait_until(last_use_noted, what="the token's last use noted (in the background)")
    dup = edge("console", "token", "create", "grafana", "--role", "viewer", "--datadirpath", dd)
    assert dup.returncode == 1 and "exists already" in dup.stderr
    bad_role = edge("console", "token", "create", "x", "--role", "root", "--datadirpath", dd)
    assert bad_role.returncode == 1 and "not a role" in bad_role.stderr

    revoked = edge("console", "token", "revoke", "grafana", "--datadirpath", dd)
    assert revoked.returncode == 0
    r = api.get("/api/v1/status")
    assert r.status_code == 401 and "not valid" in r.json()["error"]
    unknown = edge("console", "token", "revoke", "grafana", "--datadirpath", dd)
    assert unknown.returncode == 1 and "no token named 'grafana'" in unknown.stderr
    actions = [e["action"] for e in audit(gw.datadir)]
    assert "token_created" in actions and "token_revoked" in actions
    assert all(e["from"].startswith("cli ") for e in audit(gw.datadir))
    api.close()


def test_user_cli_errors_are_clear(gw: Gateway) -> None:
    dd = str(gw.datadir)
    weak = edge("console", "user", "add", "u1", "--role", "viewer", "--password-stdin",
                "--datadirpath", dd, input="short\n")  # fmt: skip
    assert weak.returncode == 1 and "at least 10" in weak.stderr
    add_user(gw.datadir, "boss", STRONG, "admin")
    last = edge("console", "user", "remove", "boss", "--datadirpath", dd)
    assert last.returncode == 1 and "last admin" in last.stderr
    unknown = edge("console", "user", "passwd", "nobody", "--password-stdin", "--datadirpath", dd,
                   input=STRONG + "\n")  # fmt: skip
    assert unknown.returncode == 1 and "no user 'nobody'" in unknown.stderr
    twice = edge("console", "user", "add", "boss", "--role", "admin", "--password-stdin",
                 "--datadirpath", dd, input=STRONG + "\n")  # fmt: skip
    assert twice.returncode == 1 and "exists already" in twice.stderr
    nowhere = edge("console", "user", "list", "--datadirpath", "/nonexistent/dir")
    assert nowhere.returncode == 1 and "--datadirpath" in nowhere.stderr
    assert "Traceback" not in weak.stderr + last.stderr + unknown.stderr + nowhere.stderr


def test_a_password_change_or_removal_from_the_cli_ends_the_users_sessions(gw: Gateway) -> None:
    dd = str(gw.datadir)
    add_user(gw.datadir, "boss", STRONG, "admin")
    add_user(gw.datadir, "eve", STRONG, "viewer")
    eve, boss = console(gw), console(gw)
    assert eve.login("eve", STRONG).status_code == 303
    assert boss.login("boss", STRONG).status_code == 303
    changed = edge("console", "user", "passwd", "eve", "--password-stdin", "--datadirpath", dd,
                   input="another good one\n")  # fmt: skip
    assert changed.returncode == 0, changed.stderr
    assert eve.http.get("/").status_code == 303  # back to the login
    assert eve.login("eve", "another good one").status_code == 303
    removed = edge("console", "user", "remove", "eve", "--datadirpath", dd)
    assert removed.returncode == 0
    assert eve.http.get("/api/v1/status").status_code == 401
    assert boss.http.get("/api/v1/status").status_code == 200  # others stay logged in
    actions = [e["action"] for e in audit(gw.datadir)]
    assert {"user_added", "password_changed", "user_removed"} <= set(actions)


# ---------------------------------------------------------------------- HTTPS, ports, metrics


def test_https_with_a_certificate_and_the_port_from_the_config(
    tmp_path: Path, platform: PlatformSim
) -> None:
    cert, key = self_signed_cert(tmp_path)
    port = free_port()
    config = base_config(platform)
    config["console"] = {
        "tls_cert": str(cert),
        "tls_key": str(key),
        "port": port,
        "host": "127.0.0.1",
    }
    (tmp_path / "edge.yaml").write_text(yaml.safe_dump(config))
    datadir = tmp_path / "data"
    from helpers import api_token

    token = api_token(datadir, "https-test")
    add_user(datadir, "admin1", STRONG, "admin")
    proc = Proc(
        [EDGE, "run", "--datadirpath", str(datadir), "--config", str(tmp_path / "edge.yaml")],
        tmp_path / "https.log",
    ).start()
    try:
        api = httpx.Client(
            base_url=f"https://127.0.0.1:{port}",
            verify=ssl.create_default_context(cafile=str(cert)),
            headers={"Authorization": f"Bearer {token}"},
            timeout=10,
        )
        wait_until(lambda: api.get("/api/v1/status").json()["role"] == "master", what="master")
        master = json.loads((datadir / "ha" / "master.json").read_text())
        assert master["console_url"] == f"https://127.0.0.1:{port}"
        browser = ConsoleClient(
            f"https://127.0.0.1:{port}", verify=ssl.create_default_context(cafile=str(cert))
        )
        r = browser.login("admin1", STRONG)
        assert r.status_code == 303
        cookie = r.headers["set-cookie"]
        for flag in ("HttpOnly", "SameSite=Strict", "Secure", "Max-Age=43200"):
            assert flag in cookie
        assert browser.http.get("/").status_code == 200
        with pytest.raises(httpx.HTTPError):  # no plain HTTP on the HTTPS port
            httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=3).raise_for_status()
        assert "console on https://127.0.0.1" in proc.log()
        api.close()
        browser.close()
    finally:
        proc.stop()


def test_a_bad_certificate_is_one_sentence_and_exit_2(tmp_path: Path) -> None:
    config = base_config(None)
    config["console"] = {"tls_cert": str(tmp_path / "missing.crt"), "tls_key": str(tmp_path / "k")}
    (tmp_path / "edge.yaml").write_text(yaml.safe_dump(config))
    done = subprocess.run(
        [EDGE, "run", "--datadirpath", str(tmp_path / "d"), "--config", str(tmp_path / "edge.yaml"),
         "--http-port", str(free_port())],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2
    assert "console.tls_cert" in done.stderr and "missing.crt" in done.stderr
    assert "Traceback" not in done.stderr
    half = base_config(None)
    half["console"] = {"tls_cert": "/x.crt"}
    (tmp_path / "half.yaml").write_text(yaml.safe_dump(half))
    check = subprocess.run(
        [EDGE, "config", "validate", str(tmp_path / "half.yaml")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert check.returncode == 2 and "tls_key" in check.stderr


def test_metrics_need_a_token_when_metrics_auth_is_set(
    gateway_factory: Factory, platform: PlatformSim
) -> None:
    config = base_config(platform)
    config["console"] = {"metrics_auth": True}
    gw = gateway_factory(config).start()
    anonymous = httpx.get(f"http://127.0.0.1:{gw.http_port}/metrics", timeout=10)
    assert anonymous.status_code == 401
    made = edge("console", "token", "create", "prometheus", "--role", "viewer",
                "--datadirpath", str(gw.datadir))  # fmt: skip
    scraped = httpx.get(
        f"http://127.0.0.1:{gw.http_port}/metrics",
        headers={"Authorization": f"Bearer {made.stdout.strip()}"},
        timeout=10,
    )
    assert scraped.status_code == 200 and "datonis_edge_ha_master" in scraped.text
    assert httpx.get(f"http://127.0.0.1:{gw.http_port}/healthz").status_code == 200


def test_the_standby_serves_the_same_login(
    gateway_factory: Factory, platform: PlatformSim, shared_dir: Path
) -> None:
    master = gateway_factory(base_config(platform), datadir=shared_dir, name="a").start()
    standby = gateway_factory(None, datadir=shared_dir, name="b").start(wait_master=False)
    standby.wait_role("standby")
    add_user(shared_dir, "ops", STRONG, "viewer")
    on_master, on_standby = console(master), console(standby)
    assert on_master.login("ops", STRONG).status_code == 303
    assert on_standby.login("ops", STRONG).status_code == 303
    assert on_standby.http.get("/api/v1/status").json()["role"] == "standby"
    # one session secret: the master's cookie is good on the standby (after a failover too)
    carried = httpx.Client(
        base_url=f"http://127.0.0.1:{standby.http_port}",
        cookies={"dte_session": on_master.http.cookies["dte_session"]},
    )
    assert carried.get("/api/v1/status").status_code == 200
    assert os.path.exists(shared_dir / "console" / "session-secret")


def test_users_and_tokens_managed_over_the_api_by_an_admin_only(gw: Gateway) -> None:
    add_user(gw.datadir, "viewer1", STRONG, "viewer")
    made = gw.http.post("/api/v1/tokens", json={"name": "script", "role": "viewer"})
    assert made.status_code == 201
    script = httpx.Client(
        base_url=f"http://127.0.0.1:{gw.http_port}",
        headers={"Authorization": f"Bearer {made.json()['token']}"},
        timeout=10,
    )
    assert script.get("/api/v1/status").status_code == 200
    assert script.get("/api/v1/tokens").status_code == 403  # a viewer reads no tokens
    assert script.post("/api/v1/tokens", json={"name": "x"}).status_code == 403
    names = [t["name"] for t in gw.http.get("/api/v1/tokens").json()["tokens"]]
    assert "script" in names and all(
        "sha256" not in t for t in gw.http.get("/api/v1/tokens").json()["tokens"]
    )

    added = gw.http.post(
        "/api/v1/users", json={"name": "carol", "role": "viewer", "password": STRONG}
    )
    assert added.status_code == 201
    weak = gw.http.post("/api/v1/users", json={"name": "dave", "role": "viewer", "password": "x"})
    assert weak.status_code == 400 and "at least 10" in weak.json()["error"]
    carol = console(gw)
    assert carol.login("carol", STRONG).headers["location"] == "/password"  # set by an admin
    users = {u["name"]: u for u in gw.http.get("/api/v1/users").json()["users"]}
    assert users["carol"]["must_change"] and users["viewer1"]["role"] == "viewer"

    assert gw.http.delete("/api/v1/users/carol").status_code == 200
    assert gw.http.delete("/api/v1/users/carol").status_code == 400
    assert gw.http.delete("/api/v1/tokens/script").status_code == 200
    assert script.get("/api/v1/status").status_code == 401
    trail = gw.http.get("/api/v1/audit", params={"limit": 50}).json()["audit"]
    mine = [(e["actor"], e["action"]) for e in trail if e["actor"].startswith("token:tests-")]
    assert [a for _, a in mine] == ["token_created", "user_added", "user_removed", "token_revoked"]


def test_the_demo_prints_the_login_it_made(tmp_path: Path) -> None:
    port = free_port()
    demo = Proc(
        [EDGE, "demo", "--http-port", str(port), "--platform-port", str(free_port()),
         "--listener-port", str(free_port()), "--datadirpath", str(tmp_path / "demo")],
        tmp_path / "demo.log",
    ).start()  # fmt: skip
    try:
        banner = wait_until(
            lambda: re.search(r"log in as admin, password (\S+)\)", demo.log()), what="banner"
        )
        browser = ConsoleClient(f"http://127.0.0.1:{port}")
        r = browser.login("admin", banner.group(1))
        assert r.status_code == 303 and r.headers["location"] == "/"  # no forced change
        assert browser.http.get("/api/v1/status").status_code == 200
        browser.close()
    finally:
        demo.stop()
