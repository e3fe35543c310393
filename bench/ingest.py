"""Acknowledged-durable ingestion through the http_listener, with wrk in its own process.

Shapes: bulk posts (4 connections × 500 events per POST) and single-event posts (16+
connections). Every 200 is sent only after the events are committed and fsync'ed."""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from common import Edge, cloud, cpu_seconds, free_port, peak_rss_mb, report, wrk_post


def bulk_body(n: int) -> bytes:
    return json.dumps(
        {
            "events": [
                {
                    "thing_key": f"press-{i % 10}",
                    "timestamp": 1_700_000_000_000 + i,
                    "data": {"temperature": 20.5 + i % 7, "pressure": 1013, "running": True},
                }
                for i in range(n)
            ]
        }
    ).encode()


def run(shape: str, connections: int, per_post: int, seconds: int = 10) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as d:
        tmp = Path(d)
        port = free_port()
        # the platform is unreachable: this measures ingestion alone
        config = {
            "cloud": cloud(f"http://127.0.0.1:{free_port()}"),
            "outbox": {"max_bytes": 8 << 30},
            "services": [
                {"name": "push", "type": "http_listener", "host": "127.0.0.1", "port": port}
            ],
        }
        edge = Edge(tmp, config).start()
        url = f"http://127.0.0.1:{port}/api/v3/things/event.json"
        body = (
            bulk_body(per_post)
            if per_post > 1
            else json.dumps(
                {"thing_key": "press-1", "data": {"temperature": 20.5, "pressure": 1013}}
            ).encode()
        )
        cpu0 = cpu_seconds(edge.pid)
        res = wrk_post(url, body, connections, seconds, threads=2 if connections > 4 else 1)
        cpu = cpu_seconds(edge.pid) - cpu0
        st = edge.status()
        rss = peak_rss_mb(edge.pid)
        edge.stop()
    accepted = st["counters"]["accepted"]
    ok_requests = res["requests"] - res["bad_status"]
    # wrk stops counting with up to one request per connection still in flight
    assert ok_requests * per_post <= accepted <= (ok_requests + connections) * per_post, (
        accepted,
        ok_requests,
    )
    return report(
        f"ingest {shape}",
        events_per_s=round(accepted / res["seconds"]),
        requests_per_s=round(ok_requests / res["seconds"]),
        connections=connections,
        events_per_post=per_post,
        p99_ms=round(res["p99_ms"], 1),
        errors=res["errors"] + res["bad_status"],
        commits=st["outbox"]["commits"],
        events_per_commit=round(accepted / max(1, st["outbox"]["commits"]), 1),
        gateway_cpu_cores=round(cpu / res["seconds"], 2),
        peak_rss_mb=round(rss, 1),
    )


SHAPES = {
    "bulk": ("bulk 4x500", 4, 500),
    "single16": ("single 16 clients", 16, 1),
    "single64": ("single 64 clients", 64, 1),
}

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Ingestion through the http_listener (wrk).")
    parser.add_argument("seconds", nargs="?", type=int, default=10, help="per shape (10)")
    parser.add_argument("--only", choices=sorted(SHAPES), action="append", help="these shapes")
    parser.add_argument("--label", default="", help="added to the name, e.g. before / after")
    args = parser.parse_args()
    for key in args.only or SHAPES:
        shape, connections, per_post = SHAPES[key]
        run(f"{shape} {args.label}".strip(), connections, per_post, args.seconds)
