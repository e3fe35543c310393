"""The console's login in a real headless Chromium (Debian's `chromium`, driven by Playwright
with `executable_path`: Playwright's own browser download is not used), against a real gateway
process. With CONSOLE_SCREENSHOTS=DIR set, the pages are saved there as PNG (docs/console/)."""

from __future__ import annotations

from console_helpers import (
    STRONG,
    Factory,
    add_user,
    audit,
    first_start,
    log_in,
    logged_in,
    shot,
    url,
)
from helpers import PlatformSim, base_config, simulator_service

pytest_plugins = ["console_helpers"]  # the chromium and page fixtures


def test_first_login_with_the_generated_password_forces_a_change(
    gateway_factory: Factory, platform: PlatformSim, page
) -> None:  # type: ignore[no-untyped-def]
    config = base_config(platform)
    config["services"] = [simulator_service("press-1", scan_interval_ms=200)]
    gw = gateway_factory(config)
    first_start(gw.datadir)
    gw.start()
    generated = (gw.datadir / "console" / "initial-admin-password").read_text().strip()

    page.goto(url(gw, "/"))  # no session: to the login, and back here after it
    assert page.url == url(gw, "/login?next=/")
    assert "initial-admin-password" in page.inner_text("main")
    shot(page, "login")
    log_in(page, gw, "admin", generated)
    page.wait_for_url(url(gw, "/password"))
    assert "Choose your own password" in page.inner_text("main")
    page.fill("input[name=current]", generated)
    page.fill("input[name=new]", STRONG)
    page.fill("input[name=confirm]", STRONG)
    shot(page, "change-password")
    page.click("main button[type=submit]")
    page.wait_for_url(url(gw, "/"))
    page.wait_for_function("document.getElementById('role').textContent.includes('master')")
    page.wait_for_selector("#services td")
    assert "admin" in page.inner_text("header")
    shot(page, "status")
    assert not (gw.datadir / "console" / "initial-admin-password").exists()

    page.click("text=Log out")
    page.wait_for_url(url(gw, "/login"))
    page.goto(url(gw, "/"))
    assert page.url.startswith(url(gw, "/login"))


def test_five_wrong_passwords_lock_the_login(
    gateway_factory: Factory, platform: PlatformSim, page
) -> None:  # type: ignore[no-untyped-def]
    gw = gateway_factory(base_config(platform)).start()
    add_user(gw.datadir, "alice", STRONG, "admin")
    for attempt in range(5):
        log_in(page, gw, "alice", f"wrong password {attempt}")
        page.wait_for_selector(".error")
    assert "Too many failed logins" in page.inner_text(".error")
    shot(page, "login-locked")
    log_in(page, gw, "alice", STRONG)  # the right one, while locked
    page.wait_for_selector(".error")
    assert "Too many failed logins" in page.inner_text(".error")
    assert page.url.startswith(url(gw, "/login"))


def test_a_viewer_sees_no_admin_forms_and_cannot_replay(
    gateway_factory: Factory, platform: PlatformSim, page
) -> None:  # type: ignore[no-untyped-def]
    logged_in(gateway_factory, platform, page, "viewer")
    assert "viewer" in page.inner_text("header")
    assert page.locator("form[action='/declined/replay']").count() == 0
    # what a crafted request from the viewer's own page gets
    status = page.evaluate(
        """async () => {
            const csrf = document.querySelector("input[name=csrf_token]").value;
            const r = await fetch("/api/v1/declined/replay",
                                  {method: "POST", headers: {"X-CSRF-Token": csrf}});
            return r.status;
        }"""
    )
    assert status == 403


def test_an_admin_replays_from_the_page_and_a_form_without_csrf_is_refused(
    gateway_factory: Factory, platform: PlatformSim, page
) -> None:  # type: ignore[no-untyped-def]
    gw = logged_in(gateway_factory, platform, page, "admin")
    page.click("text=Replay all declined batches")
    page.wait_for_url(url(gw, "/?replayed=0"))
    assert any(e["action"] == "declined_replay" for e in audit(gw.datadir))

    # the same form with its CSRF field taken out
    page.evaluate(
        "document.querySelector(\"form[action='/declined/replay'] input[name=csrf_token]\")"
        ".remove()"
    )
    with page.expect_response(lambda r: r.url.endswith("/declined/replay")) as answer:
        page.click("text=Replay all declined batches")
    assert answer.value.status == 403
    assert "CSRF" in page.inner_text("body")
