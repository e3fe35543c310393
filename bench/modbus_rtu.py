"""Modbus RTU: 8 units × 50 registers on one serial line (a socat pty pair, pymodbus' serial
server on the far end), delivered to the platform simulator, at 9600 and 115200 baud.

A pty moves bytes at memory speed whatever the baud rate says, so what is measured is the
gateway's side (tags/s it reads and delivers, its CPU; the baud rate changes only the
inter-frame silence it keeps), set beside the line's theoretical limit computed from the
bits a poll puts on the wire: a real line at that baud rate cannot go faster.

    python bench/modbus_rtu.py [--quick]
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from common import Edge, Sim, measure, one_service, report

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))
from datonis_edge.adapters.modbus_rtu.line import frame_bytes
from servers.modbus_rtu_rig import RtuLine


def line_limit(units: int, registers: int, baudrate: int, bits_per_char: int = 10) -> dict:
    """The fastest a real line polls: every byte of every request and answer, and the 3.5
    character silence before each frame (1.75 ms above 19200 baud)."""
    request, answer = frame_bytes("holding", registers)
    gap_s = 3.5 * bits_per_char / baudrate if baudrate <= 19200 else 0.00175
    bits_per_poll = units * (request + answer) * bits_per_char
    poll_s = bits_per_poll / baudrate + units * 2 * gap_s
    return {
        "bits_per_poll": bits_per_poll,
        "line_poll_ms": round(poll_s * 1000, 1),
        "line_limit_tags_per_s": round(units * registers / poll_s),
    }


def run(
    baudrate: int, scan_ms: int = 1000, units: int = 8, registers: int = 50, seconds: float = 15.0
) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-rtu-") as d:
        tmp = Path(d)
        spec = {
            "units": {str(u): {"hr": {"0": list(range(registers))}} for u in range(1, units + 1)}
        }
        line = RtuLine(tmp, spec, baudrate=baudrate).start()
        sim = Sim(tmp).start()
        tags, things = [], []
        for u in range(1, units + 1):
            names = [f"u{u}-r{i}" for i in range(registers)]
            tags += [
                {"name": n, "device": f"unit-{u}", "register": "holding", "address": i}
                for i, n in enumerate(names)
            ]
            things.append(
                {"thing_key": f"unit-{u}", "metrics": [{"name": n, "tag": n} for n in names]}
            )
        config = one_service(
            sim.url,
            {
                "name": "line",
                "type": "modbus_rtu",
                "port": str(line.gateway_port),
                "baudrate": baudrate,
                "timeout_ms": 1000,
                "scan_interval_ms": scan_ms,
                "devices": [{"name": f"unit-{u}", "unit_id": u} for u in range(1, units + 1)],
                "tags": tags,
                "things": things,
            },
        )
        edge = Edge(tmp, config).start()
        w = measure(edge, seconds)
        seen = line.line()
        edge.stop()
        sim.stop()
        line.stop()
    svc = w.service
    return report(
        "modbus_rtu",
        baudrate=baudrate,
        scan_interval_ms=scan_ms,
        units=units,
        registers_per_unit=registers,
        requests_per_scan=svc["details"]["requests_per_scan"],
        inter_frame_ms=svc["details"]["line"]["inter_frame_ms"],
        tags_read_per_s=w.per_s(w.received * registers),
        tags_delivered_per_s=w.per_s(w.delivered * registers),
        gateway_cpu_cores=w.cores,
        overlaps_seen_by_units=seen.get("overlaps"),
        units_down=sum(1 for u in svc["details"]["devices"] if not u["connected"]),
        **line_limit(units, registers, baudrate),
    )


def run_all(quick: bool = False) -> None:
    seconds = 5 if quick else 15
    for baudrate in (9600, 115200):
        run(baudrate, 1000, seconds=seconds)  # the plant: every unit once a second
        run(baudrate, 20, seconds=seconds)  # as fast as the gateway goes over a pty: its ceiling


if __name__ == "__main__":
    run_all("--quick" in sys.argv)
