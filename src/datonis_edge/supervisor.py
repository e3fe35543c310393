"""The role state machine of one instance: standby ↔ master over the data-directory lock.

standby: poll the lock every `poll_s`; publish ourselves in ha/standby/<id>.json.
master:  bump the epoch, write ha/master.json, start the pipeline; every heartbeat rewrite
         master.json and re-read the epoch — if the epoch is not ours, or the data directory
         stops answering within the stall limit, or fails otherwise, stop forwarding at once
         and exit non-zero. A *full* disk is not lost mastership: the lock is held and the
         epoch readable, and a standby on the same disk could do no better, so the master
         keeps running, degraded and alerted, until master.json can be written again.
SIGTERM: stop the pipeline, release the lock, exit 0 (a standby takes over within one poll).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sqlite3
import time
import uuid
from pathlib import Path
from typing import Any

from . import __version__
from .console.alertlog import AlertLog
from .console_service import ConsoleServiceMixin, file_version
from .ha.lock import DataDirLock
from .ha.state import HaFiles
from .pipeline import Pipeline, preload
from .root_config import Config, ConfigError, load_config
from .status import Alerts
from .store.diskspace import Reserve, is_disk_full, mount_point

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_LOST_MASTERSHIP = 3
EXIT_STORAGE_STALLED = 4
EXIT_OUTBOX_DAMAGED = 5  # stopped so that the next start (or a standby) salvages the outbox


def heartbeat_survives(exc: OSError) -> bool:
    """May the master go on after this error writing its heartbeat? Only for a full disk
    (ENOSPC, EDQUOT): the lock is still held and the epoch still readable, so nobody else can
    be master, and stopping would only stop the service. Not for EIO: on NFS that is how a
    lost lease (and with it the lock) shows, and on a local disk the device is failing —
    either way mastership can no longer be proved, so it is given up as before. EROFS (a
    filesystem remounted read-only after errors) likewise."""
    return is_disk_full(exc)


class Supervisor(ConsoleServiceMixin):
    def __init__(
        self,
        datadir: Path,
        config: Config,
        http_port: int,
        instance_id: str | None = None,
        poll_s: float = 0.1,
        heartbeat_s: float = 1.0,
        stall_limit_s: float = 5.0,
        console_host: str = "0.0.0.0",
        console_scheme: str = "http",
    ) -> None:
        self.datadir = datadir
        self.config = config
        # the config file as this instance loaded it: a standby reloads it at takeover if changed
        self._config_version = file_version(datadir / "config" / "edge.yaml")
        self.http_port = http_port
        self.instance_id = instance_id or f"{socket.gethostname()}-{uuid.uuid4().hex[:8]}"
        self.poll_s = poll_s
        self.heartbeat_s = heartbeat_s
        self.stall_limit_s = stall_limit_s
        self.console_host = console_host
        self.console_scheme = console_scheme  # https when the console has a certificate
        self.ha = HaFiles(datadir)
        self.lock = DataDirLock(self.ha.lock_path)
        self.alerts = Alerts()
        # every alert also goes to DIR/log/alerts.log (JSON lines, rotated): the console's page
        self.alerts.listeners.append(AlertLog(datadir).write)
        self._applying = asyncio.Lock()
        self.role = "starting"
        self.epoch = 0
        self.since_ms = int(time.time() * 1000)
        self.gateway: Pipeline | None = None
        self._stop = asyncio.Event()
        self._heartbeats = 0
        self.heartbeat_error: str | None = None  # the heartbeat cannot be written (disk full)
        self.heartbeat_failures = 0
        self.heartbeat_ms: int | None = None  # when ha/master.json was last written
        self._previous_counters: dict[str, Any] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.exit_code = EXIT_OK

    # ------------------------------------------------------------------ identity

    @property
    def console_url(self) -> str:
        host = socket.gethostname() if self.console_host in ("0.0.0.0", "::") else self.console_host
        return f"{self.console_scheme}://{host}:{self.http_port}"

    def _identity(self) -> dict[str, Any]:
        return {
            "instance_id": self.instance_id,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "version": __version__,
            "console_url": self.console_url,
        }

    # ------------------------------------------------------------------ main

    def request_stop(self) -> None:
        self._stop.set()

    async def run(self) -> int:
        loop = self._loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self.request_stop)
        # import the configured protocols' code now (aiohttp, pymodbus, asyncua take tens of
        # ms each), so that a standby that takes over does not pay for it then
        preload(self.config)
        try:
            if await self._wait_for_lock():
                await self._be_master()
        finally:
            await asyncio.to_thread(self.ha.remove_standby, self.instance_id)
            self.lock.close()
        return self.exit_code

    async def _wait_for_lock(self) -> bool:
        self.role = "standby"
        announced = False
        last_beat = 0.0
        while not self._stop.is_set():
            if self.lock.try_acquire():
                return True
            if not announced:
                master = self.ha.read_master() or {}
                log.info(
                    "standby: %s is master (epoch %s); waiting for the lock",
                    master.get("instance_id", "another instance"),
                    master.get("epoch", "?"),
                )
                announced = True
            now = time.monotonic()
            if now - last_beat >= self.heartbeat_s:
                last_beat = now
                with contextlib.suppress(OSError):
                    await asyncio.to_thread(
                        self.ha.write_standby,
                        self.instance_id,
                        {
                            **self._identity(),
                            "since_ms": self.since_ms,
                            "heartbeat_ms": int(time.time() * 1000),
                        },
                    )
                    self.heartbeat_ms = int(time.time() * 1000)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.poll_s)
        return False

    async def _be_master(self) -> None:
        took_at = time.monotonic()
        previous = self.ha.read_master()
        counters = (previous or {}).get("counters")
        self._previous_counters = counters if isinstance(counters, dict) else None
        try:
            self.epoch = await asyncio.to_thread(self._bump_epoch)
        except OSError as exc:
            log.error(
                "cannot become master: %s could not be written (%s); check the data directory",
                self.ha.epoch_path,
                exc.strerror or exc,
            )
            self.exit_code, self.role = EXIT_STORAGE_STALLED, "stopped"
            return
        self.since_ms = int(time.time() * 1000)
        await asyncio.to_thread(self.ha.remove_standby, self.instance_id)
        await asyncio.to_thread(self._try_write_master, True)
        self.config = await asyncio.to_thread(self._config_at_takeover)
        self.gateway = Pipeline(self.datadir, self.config, self.epoch, self.alerts)
        try:
            await self.gateway.start(self._previous_counters)
        except (OSError, sqlite3.Error, RuntimeError) as exc:
            log.error(
                "cannot start as master: the outbox in %s could not be opened (%s); "
                "check that directory and its disk",
                self.gateway.outbox.directory,
                exc,
            )
            self.gateway.abort()
            await asyncio.to_thread(self.gateway.outbox.close)
            self.exit_code, self.role = EXIT_STORAGE_STALLED, "stopped"
            return
        self.role = "master"
        await asyncio.to_thread(self._try_write_master)  # now with the outbox depth
        log.info(
            "master: epoch %d, pipeline started %.0f ms after taking the lock",
            self.epoch,
            (time.monotonic() - took_at) * 1000,
        )
        if previous and previous.get("instance_id") != self.instance_id:
            self.alerts.raise_(
                "warning",
                f"failover: {self.instance_id} took over as master (epoch {self.epoch}) "
                f"from {previous.get('instance_id')} (epoch {previous.get('epoch')})",
            )
        try:
            await self._keep_alive()
        finally:
            if self.exit_code == EXIT_OK:
                await self.gateway.stop()
            self.role = "stopped"

    def _config_at_takeover(self) -> Config:
        """The data directory's configuration as it is now: a standby may have waited through
        a change of config/edge.yaml. One that no longer loads keeps the one we started with."""
        path = self.datadir / "config" / "edge.yaml"
        if file_version(path) in (None, self._config_version):  # unchanged: no reload
            return self.config
        try:
            config = load_config(path)
        except ConfigError as exc:
            message = (
                f"{path} does not load ({'; '.join(exc.problems)}); running the configuration "
                "this instance started with; fix the file"
            )
            log.error("%s", message)
            self.alerts.raise_("error", message)
            return self.config
        if config != self.config:
            log.info(
                "taking over with %s as it is now (it changed since this instance started)", path
            )
        return config

    def _bump_epoch(self) -> int:
        """Bump ha/epoch; on a full disk, with the room the outbox's reserve gives back."""
        try:
            return self.ha.bump_epoch()
        except OSError as exc:
            if not is_disk_full(exc):
                raise
            freed = Reserve(self.datadir / "outbox", 0).release()
            log.warning(
                "the disk is full while taking over: %d bytes of the outbox's reserve released "
                "to write %s",
                freed,
                self.ha.epoch_path,
            )
            return self.ha.bump_epoch()

    def _try_write_master(self, durable: bool = False) -> None:
        """Write master.json; a full disk makes the master degraded, not lost (see below)."""
        try:
            self._write_master(durable)
        except OSError as exc:
            if not heartbeat_survives(exc):
                raise
            self._heartbeat_failed(exc)
        else:
            self._heartbeat_written()

    def _write_master(self, durable: bool = False) -> None:
        info: dict[str, Any] = {
            **self._identity(),
            "epoch": self.epoch,
            "since_ms": self.since_ms,
            "heartbeat": self._heartbeats,
            "heartbeat_ms": int(time.time() * 1000),
            "heartbeat_interval_ms": int(self.heartbeat_s * 1000),
        }
        if self.gateway is not None and self.gateway.loop is not None:
            # for `datonis-edge status` on any host: the outbox itself is locked by the master
            stats = self.gateway.outbox.stats()
            info["outbox"] = {"pending": stats.pending, "bytes": stats.bytes}
            info["counters"] = stats.counters
        elif self._previous_counters is not None:
            # until the outbox is open, keep the last master's: they are what a torn WAL
            # is checked against, also if this start does not get that far
            info["counters"] = self._previous_counters
        self.ha.write_master(info, durable=durable)

    async def _keep_alive(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.heartbeat_s)
            if self._stop.is_set():
                return
            self._heartbeats += 1
            try:
                epoch = await asyncio.wait_for(asyncio.to_thread(self._beat), self.stall_limit_s)
            except TimeoutError:
                self._lose(
                    "the data directory did not answer within the stall limit", EXIT_STORAGE_STALLED
                )
                return
            except OSError as exc:
                self._lose(f"the data directory failed: {exc}", EXIT_STORAGE_STALLED)
                return
            if epoch != self.epoch:
                self._lose(
                    f"epoch is now {epoch}, ours is {self.epoch}: another master was elected",
                    EXIT_LOST_MASTERSHIP,
                )
                return
            assert self.gateway is not None
            if self.gateway.outbox.damage is not None:
                log.error(
                    "stopping: the outbox is damaged (%s); the next start salvages it "
                    "(the service manager restarts the gateway, or a standby takes over)",
                    self.gateway.outbox.damage,
                )
                self.exit_code, self.role = EXIT_OUTBOX_DAMAGED, "stopped"
                await self.gateway.stop()
                return

    def _beat(self) -> int:
        self._try_write_master()  # a full disk: degraded; any other error: raised, lost
        return self.ha.read_epoch()

    def _heartbeat_failed(self, exc: OSError) -> None:
        """On a worker thread: Alerts are raised on the loop."""
        self.heartbeat_failures += 1
        if self.heartbeat_error is not None:
            return
        self.heartbeat_error = f"ha/master.json not written: {exc.strerror or exc}"
        message = (
            f"heartbeat not written ({exc.strerror or exc}): still master — the lock is held "
            f"and epoch {self.epoch} is ours; free space on {mount_point(self.datadir)} "
            "(until then ha/master.json and `datonis-edge status` on other hosts are stale)"
        )
        log.warning("%s", message)
        self._alert_from_thread("warning", message)

    def _heartbeat_written(self) -> None:
        self.heartbeat_ms = int(time.time() * 1000)
        if self.heartbeat_error is None:
            return
        self.heartbeat_error = None
        message = (
            f"heartbeat written again after {self.heartbeat_failures} failures: "
            "ha/master.json is up to date"
        )
        self.heartbeat_failures = 0
        log.info("%s", message)
        self._alert_from_thread("info", message)

    def _alert_from_thread(self, level: str, message: str) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self.alerts.raise_, level, message)
        else:
            self.alerts.raise_(level, message)

    def _lose(self, why: str, code: int) -> None:
        log.error("mastership lost: %s; stopping at once", why)
        assert self.gateway is not None
        self.gateway.abort()
        self.exit_code = code
        self.role = "stopped"
