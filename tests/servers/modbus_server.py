"""A real pymodbus TCP server for tests and benchmarks, in its own process.

    python modbus_server.py --port N --spec spec.json [--count-file F]

spec.json: {"units": {"1": {"hr": {"0": [1, 2, 3]}, "ir": {...}, "co": {"0": [1, 0]}, "di": {...}}}}
Every request received is counted; with --count-file the count is written there.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import warnings
from pathlib import Path

warnings.filterwarnings("ignore")
logging.disable(logging.CRITICAL)

from pymodbus.datastore import (  # noqa: E402 - after silencing the deprecation notes
    ModbusDeviceContext,
    ModbusSequentialDataBlock,
    ModbusServerContext,
)
from pymodbus.server import ModbusTcpServer  # noqa: E402

SIZE = 10_000


def block(areas: dict[str, list[int]]) -> ModbusSequentialDataBlock:
    values = [0] * SIZE
    for start, vals in areas.items():
        values[int(start) : int(start) + len(vals)] = [int(v) for v in vals]
    return ModbusSequentialDataBlock(1, values)  # block address 1 is protocol address 0


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--spec", required=True)
    ap.add_argument("--count-file")
    args = ap.parse_args()
    spec = json.loads(Path(args.spec).read_text())
    devices = {
        int(unit): ModbusDeviceContext(
            **{k: block(spec_u.get(k, {})) for k in ("hr", "ir", "co", "di")}
        )
        for unit, spec_u in spec["units"].items()
    }
    count = [0]
    count_file = Path(args.count_file) if args.count_file else None

    def trace(sending: bool, pdu):  # type: ignore[no-untyped-def]
        if not sending:
            count[0] += 1
            if count_file:
                count_file.write_text(str(count[0]))
        return pdu

    server = ModbusTcpServer(
        ModbusServerContext(devices=devices, single=False),
        address=("127.0.0.1", args.port),
        trace_pdu=trace,
    )
    await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
