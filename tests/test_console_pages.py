"""The console's pages in a real headless Chromium against a real gateway process and the
platform simulator: the overview's numbers are the status API's; a declined batch replayed
from the Declined page reaches the platform, another is purged; a configuration with an error
shows its line and saves nothing, a valid one (a new metric) reaches the platform without a
process restart; a standby shows the banner and no edit form; a viewer sees no admin form;
the Logs page shows this instance's own log, filtered and refreshed live, without secrets;
Services says since when each service is in its state.
With CONSOLE_SCREENSHOTS=docs/console every page is saved as PNG."""

from __future__ import annotations

from typing import Any

import httpx
import yaml

from console_helpers import (
    STRONG,
    Factory,
    add_user,
    audit,
    log_in,
    shot,
    url,
)
from datonis_edge.console.pages.common import when
from helpers import Gateway, PlatformSim, base_config, free_port, simulator_service, wait_until

PAGES = ["/", "/services", "/things", "/declined", "/config", "/alerts", "/logs"]

pytest_plugins = ["console_helpers"]  # the chromium and page fixtures


def listener_config(platform: PlatformSim) -> tuple[dict[str, Any], int]:
    port = free_port()
    config = base_config(platform)
    config["services"] = [
        {"name": "push", "type": "http_listener", "host": "127.0.0.1", "port": port}
    ]
    return config, port


def decline_one(gw: Gateway, platform: PlatformSim, port: int, thing_key: str) -> None:
    """One event pushed while the platform answers 422: a declined batch."""
    before = gw.status()["declined_batches"]
    platform.fault(status=422, count=1)
    httpx.post(
        f"http://127.0.0.1:{port}/api/v3/things/event.json",
        json={"thing_key": thing_key, "data": {"v": 1}},
    ).raise_for_status()
    wait_until(lambda: gw.status()["declined_batches"] == before + 1, 20, "a declined batch")


def admin_on(gw: Gateway, page) -> None:  # type: ignore[no-untyped-def]
    add_user(gw.datadir, "admin1", STRONG, "admin")
    log_in(page, gw, "admin1", STRONG)
    page.wait_for_url(url(gw, "/"))


def edit_forms(page) -> int:  # type: ignore[no-untyped-def]
    """Forms that change something, but the logout."""
    return page.locator("form[method=post]:not([action='/logout'])").count()


def test_overview_declined_replay_and_purge(
    gateway_factory: Factory, platform: PlatformSim, page
) -> None:  # type: ignore[no-untyped-def]
    config, port = listener_config(platform)
    gw = gateway_factory(config).start()
    decline_one(gw, platform, port, "press-replayed")
    admin_on(gw, page)

    # the overview's numbers are the status API's (nothing moves: no scanning service)
    page.goto(url(gw, "/"))
    status = gw.status()
    shown = {
        "#role": status["role"],
        "#epoch": str(status["epoch"]),
        "#outbox-pending": str(status["outbox"]["pending"]),
        "#count-delivered": str(status["counters"].get("delivered", 0)),
        "#count-declined": str(status["counters"].get("declined", 0)),
        "#count-evicted": str(status["counters"].get("evicted", 0)),
        "#count-accepted": str(status["counters"].get("accepted", 0)),
        "#outbox-fill": f"{status['outbox']['fill'] * 100:.1f}",
        "#health": status["health"],
    }
    assert {sel: page.inner_text(sel).strip() for sel in shown} == shown
    assert status["counters"]["declined"] == 1
    # the chart draws the console's samples (every 5 s; the page asks for them every 5 s)
    page.wait_for_function(
        "Number(document.getElementById('chart').dataset.points) >= 1", timeout=30_000
    )
    shot(page, "overview")

    # Declined: the batch, with its status and reason; replay it from the page
    page.goto(url(gw, "/declined"))
    row = page.locator("#declined tr", has_text="press-replayed")
    assert "422" in row.inner_text()
    shot(page, "declined")
    row.locator("input[name=id]").check()
    page.click("button[value=replay]")
    page.wait_for_selector("#message")
    assert "1 events replayed" in page.inner_text("#message")
    wait_until(
        lambda: any(e["thing_key"] == "press-replayed" for e in platform.events()),
        20,
        "the replayed event at the platform",
    )
    assert any(e["action"] == "declined_replay" for e in audit(gw.datadir))

    # another one, purged
    decline_one(gw, platform, port, "press-purged")
    page.goto(url(gw, "/declined"))
    page.locator("#declined tr", has_text="press-purged").locator("input[name=id]").check()
    page.click("button[value=purge]")
    page.wait_for_selector("#message")
    assert "1 batches purged" in page.inner_text("#message")
    assert "No declined batches" in page.inner_text("#declined")
    assert gw.status()["declined_batches"] == 0
    assert not any(e["thing_key"] == "press-purged" for e in platform.events())
    assert any(e["action"] == "declined_purge" for e in audit(gw.datadir))

    export = page.request.get(url(gw, "/declined/export.json"))
    assert export.ok and export.json() == {"declined": []}

    for path, name in [("/services", "services"), ("/alerts", "alerts"), ("/users", "users")]:
        page.goto(url(gw, path))
        shot(page, name)
    assert "admin1" in page.inner_text("#users")


def test_config_edit_error_at_its_line_then_a_new_metric_without_restart(
    gateway_factory: Factory, platform: PlatformSim, page
) -> None:  # type: ignore[no-untyped-def]
    config = base_config(platform)
    config["services"] = [simulator_service("press-1", scan_interval_ms=200)]
    gw = gateway_factory(config).start()
    pid = gw.proc.p.pid  # type: ignore[union-attr]
    edge_yaml = gw.datadir / "config" / "edge.yaml"
    stored = edge_yaml.read_text()
    admin_on(gw, page)

    page.goto(url(gw, "/config"))
    text = page.input_value("textarea[name=text]")
    assert "********" in text and platform.secret_key not in text  # secrets masked

    # an unknown key inside the service: shown at its line, nothing saved
    lines = text.splitlines()
    at = next(i for i, line in enumerate(lines) if line.strip().startswith("scan_interval_ms"))
    indent = lines[at][: len(lines[at]) - len(lines[at].lstrip())]
    broken = [*lines[: at + 1], f"{indent}scan_intervall_ms: 100", *lines[at + 1 :]]
    page.fill("textarea[name=text]", "\n".join(broken) + "\n")
    page.click("#check")
    page.wait_for_selector("#problems")
    problems = page.inner_text("#problems")
    assert f"line {at + 2}" in problems and "scan_intervall_ms" in problems, problems
    assert page.locator("#save").count() == 0
    shot(page, "config-error")
    assert edge_yaml.read_text() == stored
    assert not (edge_yaml.parent / "history").exists()

    # a new metric: diff, save, at the platform from the same process
    metric = next(i for i, line in enumerate(lines) if "counter(0, 1)" in line)
    item = next(i for i in range(metric, -1, -1) if lines[i].lstrip().startswith("- "))
    dash = lines[item][: len(lines[item]) - len(lines[item].lstrip())]
    added = [*lines[: metric + 1], f"{dash}- name: added", f"{dash}  tag: const(42)"]
    page.fill("textarea[name=text]", "\n".join([*added, *lines[metric + 1 :]]) + "\n")
    page.click("#check")
    page.wait_for_selector("#diff")
    assert "+" in page.inner_text("#diff") and "added" in page.inner_text("#diff")
    shot(page, "config-diff")
    page.click("#save")
    page.wait_for_selector("#message")
    assert "saved" in page.inner_text("#message")
    saved = yaml.safe_load(edge_yaml.read_text())
    assert saved["cloud"]["secret_key"] == platform.secret_key  # the mask kept the secret
    assert [m["name"] for m in saved["services"][0]["things"][0]["metrics"]] == ["n", "added"]
    assert len(list((edge_yaml.parent / "history").glob("edge-*.yaml"))) == 1
    wait_until(
        lambda: any(e["data"].get("added") == 42 for e in platform.events()),
        20,
        "the new metric at the platform",
    )
    assert gw.proc.p.poll() is None and gw.proc.p.pid == pid  # type: ignore[union-attr]
    assert gw.status()["pipeline"] == "running"
    assert any(e["action"] == "config_saved" for e in audit(gw.datadir))

    # the Things page shows the new metric's latest value
    page.goto(url(gw, "/things?q=added"))
    page.wait_for_selector("#things td")
    assert "42" in page.inner_text("#things")
    shot(page, "things")
    page.goto(url(gw, "/things?errors=1"))  # the one service runs: nothing in error
    assert page.locator("#things td").count() == 0


def test_a_standby_shows_the_banner_and_no_edit_form(
    gateway_factory: Factory, platform: PlatformSim, page
) -> None:  # type: ignore[no-untyped-def]
    master = gateway_factory(base_config(platform)).start()
    standby = gateway_factory(None, datadir=master.datadir).start(wait_master=False)
    standby.wait_role("standby")
    add_user(master.datadir, "admin1", STRONG, "admin")
    log_in(page, standby, "admin1", STRONG)
    page.wait_for_url(url(standby, "/"))
    banner = page.inner_text("#standby-banner")
    assert master.name in banner and "read-only" in banner
    link = page.get_attribute("#standby-banner a", "href")
    assert link is not None and link.endswith(f":{master.http_port}")
    shot(page, "standby")
    # a standby's overview lists the master (heartbeat age, console link) and the other standbys
    other = gateway_factory(None, datadir=master.datadir, name="gw3").start(wait_master=False)
    other.wait_role("standby")
    page.goto(url(standby, "/"))
    page.wait_for_selector(f".standby-row:has-text('{other.name}')")
    row = page.inner_text("#instances .master-row")
    assert master.name in row and "ago" in row, row
    link = page.get_attribute("#instances .master-row a", "href")
    assert link is not None and link.endswith(f":{master.http_port}")
    link = page.get_attribute(".standby-row a", "href")
    assert link is not None and link.endswith(f":{other.http_port}")
    for path in [*PAGES, "/users"]:
        page.goto(url(standby, path))
        assert page.locator("#standby-banner").count() == 1, path
        assert edit_forms(page) == 0, path
    # the master lists the standby with its heartbeat
    log_in(page, master, "admin1", STRONG)
    page.wait_for_url(url(master, "/"))
    page.wait_for_selector(f".standby-row:has-text('{standby.name}')")
    page.wait_for_selector(f".standby-row:has-text('{other.name}')")
    assert "ago" in page.inner_text("#instances .this-row")  # the master's own heartbeat age
    # a change crafted on the standby's page (an admin, with the CSRF token) is refused: 409
    stored = (master.datadir / "config" / "edge.yaml").read_text()
    page.goto(url(standby, "/declined"))
    status = page.evaluate(
        """async () => {
            const csrf = document.querySelector("input[name=csrf_token]").value;
            const body = new URLSearchParams({csrf_token: csrf, text: "cloud: {}", action: "save"});
            const r = await fetch("/config", {method: "POST", body});
            return [r.status, await r.text()];
        }"""
    )
    assert status[0] == 409 and "standby" in status[1], status
    assert (master.datadir / "config" / "edge.yaml").read_text() == stored


def test_a_viewer_sees_no_admin_form_on_any_page(
    gateway_factory: Factory, platform: PlatformSim, page
) -> None:  # type: ignore[no-untyped-def]
    gw = gateway_factory(base_config(platform)).start()
    add_user(gw.datadir, "viewer1", STRONG, "viewer")
    log_in(page, gw, "viewer1", STRONG)
    page.wait_for_url(url(gw, "/"))
    for path in PAGES:
        page.goto(url(gw, path))
        assert edit_forms(page) == 0, path
    assert page.locator("nav a[href='/users']").count() == 0
    assert page.goto(url(gw, "/users")).status == 403  # type: ignore[union-attr]
    page.goto(url(gw, "/config"))
    assert page.locator("#config-text").count() == 1  # read, not edited
    status = page.evaluate(
        """async () => {
            const csrf = document.querySelector("input[name=csrf_token]").value;
            const body = new URLSearchParams({csrf_token: csrf, text: "cloud: {}", action: "save"});
            const r = await fetch("/config", {method: "POST", body});
            return r.status;
        }"""
    )
    assert status == 403
    assert (gw.datadir / "config" / "edge.yaml").exists()


def test_an_admin_disables_and_enables_a_service(
    gateway_factory: Factory, platform: PlatformSim, page
) -> None:  # type: ignore[no-untyped-def]
    config = base_config(platform)
    config["services"] = [
        simulator_service("press-1", scan_interval_ms=200, name="line"),
        simulator_service("press-2", scan_interval_ms=200, name="other"),
    ]
    gw = gateway_factory(config).start()
    pid = gw.proc.p.pid  # type: ignore[union-attr]
    admin_on(gw, page)
    page.goto(url(gw, "/services"))
    # each service: its state and since when (the status API's `since`)
    line = next(s for s in gw.status()["services"] if s["name"] == "line")
    assert line["state"] == "running" and line["since"] > 0
    assert page.inner_text("tr[data-service=line] .since") == f"since {when(line['since'])}"
    page.locator("tr[data-service=other] button", has_text="Disable").click()
    page.wait_for_selector(".message")
    assert "other disabled" in page.inner_text(".message")
    assert "disabled" in page.inner_text("tr[data-service=other]")
    assert [s["name"] for s in gw.status()["services"]] == ["line"]
    saved = yaml.safe_load((gw.datadir / "config" / "edge.yaml").read_text())
    assert saved["services"][1]["enabled"] is False
    page.locator("tr[data-service=other] button", has_text="Enable").click()
    page.wait_for_selector(".message")
    assert [s["name"] for s in gw.status()["services"]] == ["line", "other"]
    assert gw.proc.p.pid == pid and gw.proc.p.poll() is None  # type: ignore[union-attr]
    actions = [e["action"] for e in audit(gw.datadir)]
    assert "service_disabled" in actions and "service_enabled" in actions


def test_the_logs_page_shows_the_own_log_filtered_live_and_without_secrets(
    gateway_factory: Factory, platform: PlatformSim, page
) -> None:  # type: ignore[no-untyped-def]
    config, port = listener_config(platform)
    gw = gateway_factory(config).start()
    add_user(gw.datadir, "viewer1", STRONG, "viewer")  # a viewer may read the log
    log_in(page, gw, "viewer1", STRONG)
    page.wait_for_url(url(gw, "/"))
    page.click("nav a[href='/logs']")
    page.wait_for_url(url(gw, "/logs"))
    assert "master: epoch" in page.inner_text("#logs")
    assert edit_forms(page) == 0

    # only warnings and worse: the INFO line goes; then a decline appears without a reload
    page.select_option("select[name=level]", "WARNING")
    page.click("#logs-filter button")
    page.wait_for_url(url(gw, "/logs?level=WARNING&q="))
    assert "master: epoch" not in page.inner_text("#logs")
    decline_one(gw, platform, port, "press-logged")
    page.wait_for_selector("#logs tr.log-error:has-text('422')", timeout=15_000)
    shot(page, "logs")

    # text filter; the secret key never shows, and the JSON API says the same
    page.goto(url(gw, "/logs?q=epoch"))
    rows = page.locator("#logs tr[class^=log-]").all_inner_texts()
    assert rows and all("epoch" in r.lower() for r in rows), rows
    secret = config["cloud"]["secret_key"]
    page.goto(url(gw, "/logs"))
    assert secret not in page.content()
    api = gw.http.get("/api/v1/logs", params={"level": "error"}).json()
    assert any("422" in ln["text"] for ln in api["lines"])
    assert all(ln["level"] in ("ERROR", "CRITICAL") for ln in api["lines"])
