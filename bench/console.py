"""The console must not slow the gateway, and its pages must stay quick on a big gateway.

1. Ingestion (http_listener, bulk 4 x 500, wrk) with and without a headless Chromium that
   reloads the overview every second (its htmx part also polls every 2 s): runs alternate,
   the median of each kind is compared (the target: within 5 %).
2. Page render times (p50/p99, server side as the client sees it, over loopback) for a
   gateway with 10,000 metrics (20 things x 500 simulated metrics).

`--quick`: one run of each kind, 4 s, fewer page requests."""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from common import Edge, cloud, cpu_seconds, free_port, report, wrk_post
from ingest import bulk_body


class OverviewPoller(threading.Thread):
    """A real Chromium on the overview, reloaded every second, until stopped."""

    def __init__(self, base: str, headers: dict[str, str]) -> None:
        super().__init__(daemon=True)
        self.base, self.headers = base, headers
        self.loads = 0
        self.ready = threading.Event()
        self.done = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        from playwright.sync_api import sync_playwright

        try:
            with sync_playwright() as p:
                path = shutil.which("chromium") or shutil.which("chromium-browser")
                browser = p.chromium.launch(executable_path=path, headless=True)
                page = browser.new_context(extra_http_headers=self.headers).new_page()
                page.goto(f"{self.base}/")
                self.ready.set()
                while not self.done.wait(1.0):
                    page.reload()
                    self.loads += 1
                browser.close()
        except BaseException as exc:  # reported by the caller
            self.error = exc
            self.ready.set()


class HttpPoller(threading.Thread):
    """What a browser on the overview asks the gateway for (the page every second, its htmx
    part every 2 s, the chart's data every 5 s), without a browser's own CPU on this machine."""

    def __init__(self, base: str, headers: dict[str, str]) -> None:
        super().__init__(daemon=True)
        self.client = httpx.Client(base_url=base, headers=headers, timeout=30)
        self.loads = 0
        self.ready = threading.Event()
        self.done = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        self.ready.set()
        tick = 0
        while not self.done.wait(1.0):
            tick += 1
            try:
                self.client.get("/").raise_for_status()
                if tick % 2 == 0:
                    self.client.get("/overview/live").raise_for_status()
                if tick % 5 == 0:
                    self.client.get("/overview/rates.json").raise_for_status()
                self.loads += 1
            except httpx.HTTPError as exc:
                self.error = exc
        self.client.close()


def ingest_once(seconds: int, poller_kind: str | None) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="bench-console-") as d:
        tmp = Path(d)
        port = free_port()
        config = {
            "cloud": cloud(f"http://127.0.0.1:{free_port()}"),  # unreachable: ingestion alone
            "outbox": {"max_bytes": 8 << 30},
            "services": [
                {"name": "push", "type": "http_listener", "host": "127.0.0.1", "port": port}
            ],
        }
        edge = Edge(tmp, config).start()
        poller = None
        try:
            if poller_kind:
                kind = OverviewPoller if poller_kind == "browser" else HttpPoller
                poller = kind(f"http://127.0.0.1:{edge.port}", edge.auth)
                poller.start()
                poller.ready.wait(60)
                if poller.error:
                    raise RuntimeError(f"the poller failed: {poller.error}")
            url = f"http://127.0.0.1:{port}/api/v3/things/event.json"
            cpu0 = cpu_seconds(edge.pid)
            res = wrk_post(url, bulk_body(500), 4, seconds)
            cpu = cpu_seconds(edge.pid) - cpu0
            accepted = edge.status()["counters"]["accepted"]
        finally:
            if poller is not None:
                poller.done.set()
                poller.join(30)
            edge.stop()
    return {
        "events_per_s": accepted / res["seconds"],
        "cpu_cores": cpu / res["seconds"],
        "page_loads": poller.loads if poller else 0,
    }


def ingestion(seconds: int, rounds: int) -> dict[str, Any]:
    """Runs alternate (none, browser, http, none, ...): contention on this machine hits each
    kind alike. The browser runs on this machine too, so its own CPU (rendering, the chart)
    competes with the gateway and wrk for the same cores; the HTTP poller shows what the
    console costs the gateway itself."""
    runs: dict[str, list[dict[str, float]]] = {"none": [], "browser": [], "http": []}
    for _ in range(rounds):
        for kind in runs:
            runs[kind].append(ingest_once(seconds, None if kind == "none" else kind))
    rate = {k: statistics.median(r["events_per_s"] for r in v) for k, v in runs.items()}
    cpu_us = {
        k: statistics.median(r["cpu_cores"] / r["events_per_s"] * 1e6 for r in v)
        for k, v in runs.items()
    }
    base = rate["none"]
    return report(
        "console: ingestion bulk 4x500 with the overview polled every second",
        events_per_s_without=round(base),
        events_per_s_with_browser=round(rate["browser"]),
        events_per_s_with_http_poller=round(rate["http"]),
        change_percent_browser=round((rate["browser"] - base) / base * 100, 1),
        change_percent_http_poller=round((rate["http"] - base) / base * 100, 1),
        gateway_cpu_us_per_event={k: round(v, 2) for k, v in cpu_us.items()},
        runs_each=rounds,
        seconds_each=seconds,
        page_loads={k: [r["page_loads"] for r in v] for k, v in runs.items() if k != "none"},
        all_runs={k: [round(r["events_per_s"]) for r in v] for k, v in runs.items()},
    )


def big_config(things: int, metrics: int) -> dict[str, Any]:
    return {
        "cloud": cloud(f"http://127.0.0.1:{free_port()}"),
        "services": [
            {
                "name": "big",
                "type": "simulator",
                "scan_interval_ms": 1000,
                "things": [
                    {
                        "thing_key": f"machine-{t:02d}",
                        "metrics": [
                            {"name": f"m{m:03d}", "tag": f"ramp(0, {m + 1}, 60s)"}
                            for m in range(metrics)
                        ],
                    }
                    for t in range(things)
                ],
            }
        ],
    }


PAGES = ["/", "/overview/live", "/services", "/things", "/things?q=m499", "/declined"]
PAGES += ["/config", "/alerts"]


def render_times(requests: int) -> list[dict[str, Any]]:
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-console-pages-") as d:
        edge = Edge(Path(d), big_config(20, 500)).start()
        try:
            client = httpx.Client(
                base_url=f"http://127.0.0.1:{edge.port}", headers=edge.auth, timeout=30
            )
            deadline = time.monotonic() + 30  # every metric has a value
            while time.monotonic() < deadline and "—</td>" in client.get("/things").text:
                time.sleep(0.5)
            for path in PAGES:
                client.get(path).raise_for_status()  # templates compiled
                times = []
                for _ in range(requests):
                    t = time.perf_counter()
                    answer = client.get(path)
                    times.append((time.perf_counter() - t) * 1000)
                    answer.raise_for_status()
                times.sort()
                rows.append(
                    report(
                        f"console: page {path} (10,000 metrics)",
                        p50_ms=round(statistics.median(times), 1),
                        p99_ms=round(times[min(len(times) - 1, int(len(times) * 0.99))], 1),
                        bytes=len(answer.content),
                        requests=requests,
                    )
                )
        finally:
            edge.stop()
    return rows


def run(quick: bool = False) -> None:
    ingestion(4 if quick else 10, 1 if quick else 3)
    render_times(20 if quick else 200)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one run of each, 4 s; few requests")
    parser.add_argument("--only", choices=["ingest", "pages"], help="one part")
    args = parser.parse_args()
    if args.only != "pages":
        ingestion(4 if args.quick else 10, 1 if args.quick else 3)
    if args.only != "ingest":
        render_times(20 if args.quick else 200)
