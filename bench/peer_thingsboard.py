"""This gateway beside ThingsBoard IoT Gateway 3.8, on the same MQTT → MQTT pipeline.

    load (bench/peer/load.py, QoS 1 or 0, 3 datapoints a message)
      → southbound mosquitto → gateway (its MQTT listener, its durable store)
      → northbound mosquitto → sink (bench/peer/sink.py: distinct datapoints, duplicates)

- datonis-edge: `mqtt_listener` (timestamp_key ts) → outbox → `mqtt_broker` uplink
  (bulk_max_elements 500, bulk_transmit_interval_ms 200, the rest default);
- ThingsBoard IoT Gateway 3.8.5 in its own venv (bench/peer/thingsboard.py): MQTT connector,
  JSON converter, sqlite storage, the northbound broker as "the ThingsBoard server"; its update
  check and any connection beyond loopback switched off (bench/peer/tb_launch.py).

Rising rates per gateway and QoS, a series stopping once the gateway falls behind (delivered
< 80 % of offered, or > 1 % lost); then, per gateway, outages of the northbound broker (stopped,
started again on the same port) with the load going on (QoS 1) until the broker is back.
Prints one JSON line per step and, at the end, one Markdown table.

    python bench/peer_thingsboard.py            # full: 1k-20k msg/s x 15 s, outages 20 s, 120 s
    python bench/peer_thingsboard.py --quick    # smoke: 1k and 5k msg/s x 4 s, one 10 s outage
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from common import report
from peer import thingsboard
from peer.pipeline import Pipeline, Row, run_outage, run_rate

GATEWAYS = ("datonis-edge", "thingsboard")
FULL_RATES = (1000, 2000, 3000, 5000, 10_000, 20_000)
QUICK_RATES = (1000, 5000)
OUTAGE_RATE = 1000


def series(gateway: str, qos: int, rates: tuple[int, ...], seconds: float, tb: Path | None):
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix=f"bench-peer-{gateway}-") as d:
        pipeline = Pipeline(Path(d), gateway, tb)
        try:
            pipeline.start()
            for rate in rates:
                row = run_rate(pipeline, qos, rate, seconds, quiet_s=10)
                rows.append(_report(row))
                if row.behind:
                    break
        finally:
            pipeline.stop()
    return rows


def outages(gateway: str, lengths: tuple[float, ...], before_s: float, tb: Path | None):
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix=f"bench-peer-{gateway}-") as d:
        pipeline = Pipeline(Path(d), gateway, tb)
        try:
            pipeline.start()
            for outage_s in lengths:
                rows.append(_report(run_outage(pipeline, OUTAGE_RATE, outage_s, before_s, 20)))
        finally:
            pipeline.stop()
    return rows


def check_loopback(tb: Path) -> None:
    """ThingsBoard's gateway under strace for a short run (start, 1,000 msg/s for 3 s, stop):
    every connect/sendto of every thread is recorded, and one beyond loopback fails the bench
    (Pipeline.stop raises), as does a `BLOCKED` line of tb_launch.py's guard. Without strace
    (`apt-get install strace`) the guard alone stands, and the line says so."""
    if not shutil.which("strace"):
        report("peer thingsboard loopback check", skipped="strace is not installed")
        return
    with tempfile.TemporaryDirectory(prefix="bench-peer-strace-") as d:
        pipeline = Pipeline(Path(d), "thingsboard", tb, strace=True)
        try:
            pipeline.start()
            pipeline.publish("strace", 1000, 3.0, 1)
        finally:
            pipeline.stop()
        trace = (Path(d) / "tb.strace").read_text(errors="replace")
    connects = [line for line in trace.splitlines() if "connect(" in line]
    report(
        "peer thingsboard loopback check",
        connect_calls=len(connects),
        beyond_loopback=0,
        addresses=sorted(set(re.findall(r'inet_addr\("([^"]+)"\)', trace))),
    )


def _revision() -> str:
    """Where the gateway's code came from (PYTHONPATH may point at a snapshot of another
    commit): the commit, and whether its src/ had uncommitted changes, or the folder."""
    where = subprocess.run(
        [sys.executable, "-c", "import datonis_edge; print(datonis_edge.__file__)"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    folder = Path(where).parent
    git = ["git", "-C", str(folder)]
    head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    if head.returncode:
        return str(folder)
    dirty = subprocess.run(
        [*git, "status", "--porcelain", "--untracked-files=no", "."], capture_output=True, text=True
    )
    return head.stdout.strip() + (" + uncommitted changes in src/" if dirty.stdout.strip() else "")


def _report(row: Row) -> Row:
    report(f"peer {row.gateway} qos{row.qos} {row.step} {row.rate}/s", **dataclasses.asdict(row))
    return row


def table(rows: list[Row]) -> str:
    def num(x: float | None, digits: int = 0) -> str:
        return "—" if x is None else f"{x:,.{digits}f}"

    lines = [
        "| gateway | QoS | offered msg/s | dp/s delivered | lost dp | duplicate dp | CPU % of a core"
        " | peak RSS MB | first delivery after the outage, s | drain dp/s after it |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        offered = f"{r.rate:,}" + ("" if r.step == "rate" else f" + {r.step}")
        if r.notes:
            offered += f" ({'; '.join(r.notes)})"
        lines.append(
            f"| {r.gateway} | {r.qos} | {offered} | {num(r.delivered_dps)} | {r.lost:,}"
            f" | {r.duplicates:,} | {num(r.cpu_pct)} | {num(r.rss_mb)}"
            f" | {num(r.first_delivery_s, 2)} | {num(r.drain_dps)} |"
        )
    return "\n".join(lines)


def run(
    quick: bool = False,
    gateways: list[str] | None = None,
    qos_levels: list[int] | None = None,
    rates_too: bool = True,
    outages_too: bool = True,
    only_rates: tuple[int, ...] = (),
) -> list[Row]:
    rates = only_rates or (QUICK_RATES if quick else FULL_RATES)
    seconds = 4.0 if quick else 15.0
    lengths = (10.0,) if quick else (20.0, 120.0)
    gateways = gateways or list(GATEWAYS)
    tb = thingsboard.ensure_venv() if "thingsboard" in gateways else None
    if tb:
        check_loopback(tb)
    started = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    rows: list[Row] = []
    if rates_too:
        for qos in qos_levels or (1, 0):
            for gateway in gateways:
                rows += series(gateway, qos, rates, seconds, tb)
    if outages_too:
        for gateway in gateways:
            rows += outages(gateway, lengths, 3.0 if quick else 5.0, tb)
    kind = "quick" if quick else "full"
    print(f"\n{started}, {kind} run, gateway at {_revision()}\n\n{table(rows)}\n", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description="This gateway beside ThingsBoard IoT Gateway.")
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    parser.add_argument("--gateway", choices=GATEWAYS, action="append", help="only these")
    parser.add_argument("--qos", type=int, choices=(0, 1), action="append", help="only these")
    parser.add_argument("--no-outage", action="store_true", help="rates only")
    parser.add_argument("--only-outage", action="store_true", help="outages only")
    parser.add_argument("--rates", help="msg/s steps, comma-separated (e.g. 1000,2000,3000)")
    args = parser.parse_args()
    rates = tuple(int(r) for r in args.rates.split(",")) if args.rates else ()
    run(args.quick, args.gateway, args.qos, not args.only_outage, not args.no_outage, rates)


if __name__ == "__main__":
    main()
