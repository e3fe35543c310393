"""A real pymodbus serial (RTU) server on one end of a pty pair, for tests and benchmarks.

    python modbus_rtu_server.py --port /path/to/pty --spec spec.json [--count-file F]
                                [--mute-file M] [--baudrate 9600]

spec.json: {"units": {"1": {"hr": {"0": [1, 2, 3]}, "ir": {...}, "co": {...}, "di": {...}}}}
Several units answer on the one line. Requests received are counted per unit and written to
--count-file as JSON {"units": {"1": n, ...}, "overlaps": n, "min_gap_ms": x}: a request
that arrived before the previous one was answered is an overlap (never, on a bus), and the
shortest silence seen between an answer and the next request. Units listed in --mute-file (JSON list of unit ids, read
every 50 ms) stop answering, as a unit that lost power does on a bus; removed, they answer
again.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import time
import warnings
from pathlib import Path

warnings.filterwarnings("ignore")
logging.disable(logging.CRITICAL)

from modbus_server import block  # noqa: E402 - the same register blocks as the TCP server
from pymodbus.datastore import (  # noqa: E402 - after silencing the deprecation notes
    ModbusDeviceContext,
    ModbusServerContext,
)
from pymodbus.server import ModbusSerialServer  # noqa: E402


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", required=True)
    ap.add_argument("--spec", required=True)
    ap.add_argument("--baudrate", type=int, default=9600)
    ap.add_argument("--count-file")
    ap.add_argument("--mute-file")
    args = ap.parse_args()
    spec = json.loads(Path(args.spec).read_text())
    devices = {
        int(unit): ModbusDeviceContext(
            **{k: block(spec_u.get(k, {})) for k in ("hr", "ir", "co", "di")}
        )
        for unit, spec_u in spec["units"].items()
    }
    muted: set[int] = set()
    context = ModbusServerContext(devices=devices, single=False)
    counts: dict[str, int] = {}
    line = {"overlaps": 0, "min_gap_ms": None, "answered_at": None, "pending": False}
    count_file = Path(args.count_file) if args.count_file else None
    count_tmp = Path(f"{args.count_file}.tmp")

    def trace(sending: bool, pdu):  # type: ignore[no-untyped-def]
        if not sending:
            key = str(pdu.dev_id)
            counts[key] = counts.get(key, 0) + 1
            if count_file:  # replaced whole: a reader never sees it half written
                count_tmp.write_text(json.dumps({"units": counts, **line}))
                count_tmp.replace(count_file)
        return pdu

    def silence(sending: bool, data: bytes) -> bytes:
        """Watch the line (a request before the last one was answered is an overlap; the
        silence before each request is measured) and keep a muted unit's answer off it."""
        now = time.monotonic()
        if not sending:
            if line["pending"]:
                line["overlaps"] += 1
            elif line["answered_at"] is not None:
                gap = (now - line["answered_at"]) * 1000
                line["min_gap_ms"] = min(gap, line["min_gap_ms"] or gap)
            line["pending"] = True
            return data
        line["pending"], line["answered_at"] = False, now
        if data and data[0] in muted:  # the first byte of an RTU frame is its unit
            return b""
        return data

    async def follow_mute_file() -> None:
        mute_file = Path(args.mute_file)
        while True:
            try:
                now = set(json.loads(mute_file.read_text() or "[]"))
            except (FileNotFoundError, ValueError):
                now = set()
            muted.clear()
            muted.update(now)
            await asyncio.sleep(0.05)

    server = ModbusSerialServer(
        context,
        port=args.port,
        baudrate=args.baudrate,
        ignore_missing_devices=True,  # a unit that is not there stays silent, as on a bus
        trace_pdu=trace,
        trace_packet=silence,
    )
    if args.mute_file:
        asyncio.get_running_loop().create_task(follow_mute_file())
    await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
