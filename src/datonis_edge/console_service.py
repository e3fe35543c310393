"""What the supervisor offers the console (console/app.py's ConsoleService): the status
snapshot, the declined batches (list, purge, replay), the latest values, a write typed in the
console, and a configuration change applied in-process. A mixin of `Supervisor`, kept apart so
that supervisor.py stays the role state machine and nothing else."""

from __future__ import annotations

import asyncio
import logging
import socket
import sqlite3
import time
from pathlib import Path
from typing import Any

from . import __version__
from .console.configfile import save_version
from .ha.state import HaFiles
from .pipeline import Pipeline
from .root_config import Config
from .status import Alerts
from .store.declined import DeclinedStore

log = logging.getLogger("datonis_edge.supervisor")


def file_version(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size


class ConsoleServiceMixin:
    """The console's side of the supervisor; these attributes are the supervisor's."""

    datadir: Path
    config: Config
    role: str
    epoch: int
    since_ms: int
    instance_id: str
    ha: HaFiles
    alerts: Alerts
    gateway: Pipeline | None
    heartbeat_error: str | None
    heartbeat_failures: int
    heartbeat_ms: int | None
    _applying: asyncio.Lock
    _config_version: tuple[int, int] | None

    def snapshot(self) -> dict[str, Any]:
        snap: dict[str, Any] = {
            "role": self.role,
            "instance_id": self.instance_id,
            "version": __version__,
            "epoch": self.epoch if self.role == "master" else self.ha.read_epoch(),
            "since_ms": self.since_ms,
            "datadir": str(self.datadir),
            "host": socket.gethostname(),
            "alerts": self.alerts.snapshot(),
        }
        if self.role == "master" and self.gateway is not None:
            snap.update(self.gateway.snapshot())
            snap["standbys"] = self.live_standbys()
            snap["heartbeat"] = {
                "ok": self.heartbeat_error is None,
                "error": self.heartbeat_error,
                "failures": self.heartbeat_failures,
                "at_ms": self.heartbeat_ms,
            }
            snap["degraded"] = self.degraded()
            reasons = snap["degraded"] + self.gateway.health()
            snap["health"] = "degraded" if reasons else "ok"
            snap["reasons"] = reasons
        else:
            snap["standbys"] = self.live_standbys()  # the others; this one is `snap` itself
            snap["heartbeat_ms"] = self.heartbeat_ms  # of this standby's ha/standby/ file
            master = self.ha.read_master()
            snap["master"] = (
                {
                    k: master.get(k)
                    for k in (
                        "instance_id",
                        "host",
                        "pid",
                        "epoch",
                        "console_url",
                        "since_ms",
                        "heartbeat_ms",
                    )
                }
                if master
                else None
            )
            if snap["master"] is not None:
                snap["master"]["since"] = master.get("since_ms") if master else None
        return snap

    def degraded(self) -> list[str]:
        """What makes this master degraded (for the status's health), as sentences."""
        reasons = []
        if self.heartbeat_error is not None:
            reasons.append(self.heartbeat_error)
        if self.gateway is not None:
            stats = self.gateway.outbox.stats()
            if stats.disk_full:
                reasons.append(f"disk full: readings refused ({stats.disk_free_bytes} bytes free)")
        return reasons

    def live_standbys(self, max_age_s: float = 10.0) -> list[dict[str, Any]]:
        now = time.time() * 1000
        return [
            {k: sb.get(k) for k in ("instance_id", "host", "pid", "console_url", "heartbeat_ms")}
            for sb in self.ha.read_standbys()
            if now - sb.get("heartbeat_ms", 0) <= max_age_s * 1000
            and sb.get("instance_id") != self.instance_id
        ]

    # ------------------------------------------------------------------ console service

    def declined_list(self) -> list[dict[str, Any]]:
        return [d.summary() for d in DeclinedStore(self.datadir / "declined").list()]

    def declined_purge(self, ids: list[str] | None) -> int:
        """Delete declined batches (`None`: all); on any instance (the files are shared)."""
        store = DeclinedStore(self.datadir / "declined")
        items = store.find(ids)
        for item in items:
            store.remove(item)
        return len(items)

    def latest_values(self) -> dict[str, dict[str, tuple[Any, int]]]:
        """thing_key -> metric -> (latest value, its time in ms), as the master received them."""
        return self.gateway.latest_values() if self.gateway is not None else {}

    async def write_instruction(
        self, thing_key: str, instruction: dict[str, Any]
    ) -> tuple[bool, str]:
        """The console's write form: through the thing's instruction rules, one at a time
        with the platform's instructions (master only)."""
        if self.role != "master" or self.gateway is None:
            return False, "this instance is not the master; write on the master"
        # in the instruction engine's turn: never beside a platform instruction
        return await self.gateway.instructions.write_now(thing_key, instruction)

    async def apply_config(self, text: str, config: Config) -> None:
        """Save `text` (already validated into `config`) as config/edge.yaml, the previous
        version kept in config/history/; on the master, restart the pipeline in-process with
        it (the outbox, the lock and the epoch stay). A standby reads it at takeover."""
        async with self._applying:
            path = self.datadir / "config" / "edge.yaml"
            await asyncio.to_thread(save_version, path, text)
            self._config_version = file_version(path)
            self.config = config
            if self.role != "master" or self.gateway is None:
                return
            old = self.gateway
            await old.stop()
            counters = old.outbox.stats().counters
            self.gateway = Pipeline(self.datadir, config, self.epoch, self.alerts)
            try:
                await self.gateway.start(counters)
            except (OSError, sqlite3.Error, RuntimeError) as exc:
                message = (
                    f"the pipeline did not start again with the new configuration ({exc}); "
                    "check the data directory, then restart the gateway"
                )
                log.error("%s", message)
                self.alerts.raise_("error", message)
                return
            log.info("configuration applied: the pipeline restarted with %s", path)

    async def replay(self, ids: list[str] | None) -> int:
        if self.gateway is None or self.role != "master":
            return 0
        return await self.gateway.replay(ids)
