"""tests/servers/mtconnect_agent.py in its own process, restartable on the same port, with its
test controls (set values, restart, mute, stats) as plain calls."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Any

import httpx

from helpers import Proc, free_port, wait_port

SCRIPT = Path(__file__).parent / "mtconnect_agent.py"


class MtconnectAgentProc:
    """`validate` (the tests' default): every document served is checked against the official
    schemas, and stop() fails the test if any was not valid."""

    def __init__(
        self, tmp: Path, *extra: str, port: int | None = None, validate: bool = True
    ) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.validate = validate
        self.args = [sys.executable, str(SCRIPT), "--port", str(self.port), *extra]
        if validate:
            self.args.append("--validate")
        self.log = tmp / f"mtconnect-{self.port}.log"
        self.proc: Proc | None = None
        self.http = httpx.Client(base_url=self.url, timeout=10)

    def start(self) -> MtconnectAgentProc:
        self.proc = Proc(self.args, self.log).start()
        wait_port(self.port, timeout=30)
        return self

    def stop(self) -> None:
        invalid = 0
        if self.proc and self.proc.p and self.proc.p.poll() is None and self.validate:
            with contextlib.suppress(httpx.HTTPError):  # gone: nothing to ask
                invalid = self.stats().get("invalid", 0)
        if self.proc:
            self.proc.stop()
        assert not invalid, f"the fixture agent served {invalid} invalid documents: see {self.log}"

    def kill(self) -> None:
        if self.proc:
            self.proc.kill()

    def set(self, values: dict[str, Any]) -> dict[str, int]:
        """Append observations; answers each item's new sequence number."""
        r = self.http.post("/_control/set", json=values)
        r.raise_for_status()
        return r.json()

    def restart(self) -> str:
        return self.http.post("/_control/restart").json()["instance_id"]

    def mute(self, on: bool = True) -> None:
        self.http.post("/_control/mute", json={"on": on}).raise_for_status()

    def stats(self) -> dict[str, Any]:
        return self.http.get("/_control/stats").json()

    def get(self, path: str, **params: Any) -> httpx.Response:
        return self.http.get(path, params=params)
