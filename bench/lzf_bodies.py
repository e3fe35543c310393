"""LZF bodies (use_compression): the codec on bulk bodies as the uplink sends them (ratio,
MB/s, per body; liblzf and the pure-Python fallback), and a backlog drained compressed.

    python bench/lzf_bodies.py [--quick]
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from common import Sim, cloud, report

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))
import orjson

from datonis_edge.protocol import lzf


def body(bulk: int) -> bytes:
    """A bulk body of `bulk` events shaped like bench/delivery.py's backlog."""
    events = [
        {
            "thing_key": f"press-{i % 50}",
            "timestamp": 1_700_000_000_000 + i * 1000,
            "data": {
                "temperature": round(20 + (i % 37) * 0.25, 2),
                "pressure": 1013 + i % 5,
                "seq": i,
            },
        }
        for i in range(bulk)
    ]
    return orjson.dumps({"events": events, "epoch": 3, "batch_id": "0000000000000001-00000001"})


def _rate(fn, data: bytes, min_seconds: float) -> float:  # type: ignore[no-untyped-def]
    """Seconds per call of fn(data), over at least min_seconds."""
    n, t0 = 0, time.perf_counter()
    while True:
        fn(data)
        n += 1
        elapsed = time.perf_counter() - t0
        if elapsed >= min_seconds:
            return elapsed / n


def codec(quick: bool = False) -> list[dict]:
    rows = []
    span = 0.2 if quick else 1.0
    for bulk in (25, 500, 2000):
        data = body(bulk)
        wire = lzf.encode(data)
        row = {"bulk": bulk, "body_bytes": len(data), "wire_bytes": len(wire)}
        row["ratio"] = round(len(data) / len(wire), 2)
        for name, raw in (("c", lzf.NATIVE), ("python", True)):
            if not raw:
                continue
            if name == "python":  # force the fallback codec for this measurement
                saved = lzf.compress_raw, lzf.decompress_raw
                lzf.compress_raw, lzf.decompress_raw = lzf.compress_raw_py, lzf.decompress_raw_py
            try:
                enc = _rate(lzf.encode, data, span)
                dec = _rate(lzf.decode, wire, span)
            finally:
                if name == "python":
                    lzf.compress_raw, lzf.decompress_raw = saved
            row[f"{name}_encode_us"] = round(enc * 1e6, 1)
            row[f"{name}_encode_mb_s"] = round(len(data) / enc / 1e6, 1)
            row[f"{name}_decode_mb_s"] = round(len(data) / dec / 1e6, 1)
        rows.append(report("lzf codec", **row))
    return rows


def drain(total: int, bulk: int, compressed: bool) -> dict:
    import delivery

    with tempfile.TemporaryDirectory() as d:
        sim = Sim(Path(d)).start()
        try:
            what = "lzf" if compressed else "json"
            return delivery.drain(
                f"platform-sim bulk {bulk} {what}",
                total,
                cloud(sim.url, bulk_max_elements=bulk, use_compression=compressed),
                sim.events,
            )
        finally:
            sim.stop()


def run(quick: bool = False) -> None:
    codec(quick)
    total = 100_000 if quick else 500_000
    for compressed in (False, True):
        drain(total, 500, compressed)


if __name__ == "__main__":
    run("--quick" in sys.argv)
