"""A serial line on loopback for the modbus_rtu tests and benchmark: a pty pair made by socat
(`<dir>/gateway` for the gateway, `<dir>/units` for the server) and
tests/servers/modbus_rtu_server.py on the units' end, serving several unit ids."""

from __future__ import annotations

import json
import logging
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Any

from helpers import Proc

SERVER = Path(__file__).parent / "modbus_rtu_server.py"


def socat_binary() -> str:
    found = shutil.which("socat")
    if found is None:
        raise RuntimeError("socat is not installed: run `make system-deps` (Debian package socat)")
    return found


def _wait_for(paths: list[Path], proc: Proc, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not all(p.exists() for p in paths):
        if proc.p is not None and proc.p.poll() is not None:
            raise RuntimeError(f"{proc.args[0]} exited: {proc.log()}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"no {paths} after {timeout} s: {proc.log()}")
        time.sleep(0.02)


class RtuLine:
    """The pty pair and the units' server; `stop()` always stops both."""

    def __init__(self, tmp: Path, spec: dict[str, Any], name: str = "rtu", baudrate: int = 9600):
        self.dir = tmp / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.gateway_port = self.dir / "gateway"
        self.units_port = self.dir / "units"
        self.count_file = self.dir / "count.json"
        self.mute_file = self.dir / "mute.json"
        spec_path = self.dir / "spec.json"
        spec_path.write_text(json.dumps(spec))
        self.spec = spec
        for stale in (self.count_file, self.mute_file):
            stale.unlink(missing_ok=True)
        self.probes: dict[int, int] = {}
        self.socat = Proc(
            [
                socat_binary(),
                "-d",
                "-d",
                f"pty,raw,echo=0,link={self.gateway_port}",
                f"pty,raw,echo=0,link={self.units_port}",
            ],
            self.dir / "socat.log",
        )
        self.server = Proc(
            [
                sys.executable,
                str(SERVER),
                "--port",
                str(self.units_port),
                "--spec",
                str(spec_path),
                "--baudrate",
                str(baudrate),
                "--count-file",
                str(self.count_file),
                "--mute-file",
                str(self.mute_file),
            ],
            self.dir / "server.log",
        )

    def start(self, probe: bool = True) -> RtuLine:
        """Without `probe`, the gateway's end may already be in use: nothing else opens it,
        and what the gateway sends before the server has opened its end is lost."""
        self.socat.start()
        _wait_for([self.gateway_port, self.units_port], self.socat)
        self.server.start()
        if probe:
            self._probe(int(next(iter(self.spec["units"]))))
        return self

    def _probe(self, unit: int, timeout: float = 30.0) -> None:
        """Wait until the server answers on the line (it opens its end some time after it
        starts; what is written before is lost). Its requests are left out of `requests()`."""
        from pymodbus.client import ModbusSerialClient

        logging.getLogger("pymodbus").setLevel(
            logging.CRITICAL
        )  # probes that time out are expected
        client = ModbusSerialClient(str(self.gateway_port), timeout=0.2, retries=0)
        deadline = time.monotonic() + timeout
        in_a_row = 0  # late answers to lost probes may still be on the line: wait them out
        try:
            client.connect()
            while in_a_row < 3:
                in_a_row += 1
                time.sleep(0.05)  # a silence longer than any inter_frame_ms a test measures
                try:
                    if client.read_holding_registers(0, count=1, device_id=unit).isError():
                        in_a_row = 0
                except Exception:  # any failure: not ready yet
                    in_a_row = 0
                if self.server.p is not None and self.server.p.poll() is not None:
                    raise RuntimeError(f"the RTU server exited: {self.server.log()}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the RTU server did not answer in {timeout} s")
        finally:
            client.close()
        self.probes = self.requests()

    def requests(self) -> dict[int, int]:
        """Requests the server received, per unit id (a muted unit's are counted too)."""
        units = self.line().get("units", {})
        return {int(k): v - self.probes.get(int(k), 0) for k, v in units.items()}

    def line(self) -> dict[str, Any]:
        """What the server saw: requests per unit, overlaps, the shortest inter-frame gap."""
        try:
            return dict(json.loads(self.count_file.read_text()))
        except (FileNotFoundError, ValueError):
            return {}

    def mute(self, *units: int) -> None:
        """These units stop answering (all others answer)."""
        tmp = self.mute_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(list(units)))
        tmp.replace(self.mute_file)

    def stop(self) -> None:
        self.server.signal(signal.SIGCONT)
        self.server.stop()
        self.socat.stop()
