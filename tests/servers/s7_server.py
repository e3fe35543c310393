"""python-snap7's own S7 server (snap7.server.Server) for tests and benchmarks, in its own
process: one or more PLCs on loopback ports, with known bytes in DB, M, I and Q.

    python s7_server.py --ports N[,N...] --spec spec.json [--count-dir D]

spec.json: {"DB1": "<hex>", "DB2": "<hex>", "M": "<hex>", "I": "<hex>", "Q": "<hex>"}
(each area padded with zeros to --size bytes). Every read request is counted, and the
variables in it: with --count-dir, `<port>.count` holds "requests items".

One change to snap7's server, making it answer as an S7 CPU does: a bit write (transport
size BIT) sets that one bit; snap7's server writes the whole byte.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import struct
import threading
from pathlib import Path
from typing import Any

from snap7.datatypes import S7Area, S7WordLen
from snap7.server import Server
from snap7.type import SrvArea

logging.disable(logging.CRITICAL)

AREAS = {"M": SrvArea.MK, "I": SrvArea.PE, "Q": SrvArea.PA}


class CountingServer(Server):
    def __init__(self, count_file: Path | None) -> None:
        super().__init__(log=False)
        self.requests = 0
        self.items = 0
        self.count_file = count_file
        self._count_lock = threading.Lock()

    def _handle_read_area(self, request: dict[str, Any], client_address: Any) -> bytes:
        with self._count_lock:
            self.requests += 1
            self.items += request.get("parameters", {}).get("item_count", 1)
            if self.count_file is not None:
                self.count_file.write_text(f"{self.requests} {self.items}")
        return super()._handle_read_area(request, client_address)

    def _parse_address_specification(self, addr_spec: bytes) -> dict[str, Any]:
        parsed = super()._parse_address_specification(addr_spec)
        if parsed and parsed.get("word_len") == S7WordLen.BIT:
            parsed["bit"] = int.from_bytes(addr_spec[9:12], "big") % 8
        return parsed

    def _handle_write_area(self, request: dict[str, Any], client_address: Any) -> bytes:
        spec = request.get("parameters", {}).get("address_spec") or {}
        if spec.get("word_len") != S7WordLen.BIT:
            return super()._handle_write_area(request, client_address)
        key = (S7Area(spec["area"]), spec["db_number"])
        data = (request.get("data") or {}).get("data", b"")
        if key not in self.memory_areas or spec["start"] >= len(self.memory_areas[key]) or not data:
            return self._build_error_response(request, 0x8404)
        with self.area_locks[key]:
            memory = self.memory_areas[key]
            mask = 1 << spec["bit"]
            memory[spec["start"]] = (
                memory[spec["start"]] | mask if data[0] & 1 else memory[spec["start"]] & ~mask
            )
        header = struct.pack(">BBHHHHBB", 0x32, 3, 0, request["sequence"], 2, 1, 0, 0)
        return header + bytes([0x05, 0x01, 0xFF])


def serve(port: int, spec: dict[str, str], size: int, count_dir: Path | None) -> CountingServer:
    server = CountingServer(count_dir / f"{port}.count" if count_dir else None)
    for name, hex_bytes in spec.items():
        raw = bytes.fromhex(hex_bytes)
        memory = bytearray(raw.ljust(max(size, len(raw)), b"\0"))
        if name.upper().startswith("DB"):
            server.register_area(SrvArea.DB, int(name[2:]), memory)
        else:
            server.register_area(AREAS[name.upper()], 0, memory)
    server.start_to("127.0.0.1", port)
    return server


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ports", required=True, help="comma-separated: one PLC on each")
    ap.add_argument("--spec", required=True)
    ap.add_argument("--size", type=int, default=1024, help="bytes of each area")
    ap.add_argument("--count-dir")
    args = ap.parse_args()
    spec = json.loads(Path(args.spec).read_text())
    count_dir = Path(args.count_dir) if args.count_dir else None
    servers = [serve(int(p), spec, args.size, count_dir) for p in args.ports.split(",")]
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    for server in servers:
        server.stop()


if __name__ == "__main__":
    main()
