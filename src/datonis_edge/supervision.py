"""Supervision of the master's long-running parts (the forwarder, each adapter, the replay
watcher, the alert sender, the heartbeat, the outbox watch).

When a part fails, its status says `failed` with the error and the time, one ERROR line and
one alert name the cause, and it is started again with backoff; once it has run
RUNNING_AGAIN_AFTER_S without failing, one INFO line (and an alert) say so. A part that keeps
failing is logged at most once a minute, never a flood. A part that ends on its own shows
`stopped`; the status never says `running` for a dead task.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from .backoff import Backoff
from .logs import OnceLogger
from .serving import PortError
from .status import Alerts, PartStatus

log = logging.getLogger("datonis_edge.pipeline")

RUNNING_AGAIN_AFTER_S = 2.0  # a restarted part that lives this long is running again

PartRun = Callable[[], Coroutine[Any, Any, Any]]


@dataclass
class Part:
    """One long-running part under supervision: how to (re)start it and where it reports."""

    name: str
    status: PartStatus
    run: PartRun
    backoff: Backoff = field(default_factory=lambda: Backoff(1.0, 30.0))
    failing: bool = False  # failed, and not yet running again
    reported: bool = False  # its failure was logged: its recovery is logged too
    task: asyncio.Task[Any] | None = None

    @property
    def ours(self) -> bool:
        """One of the pipeline's own loops (adapters and the forwarder report for themselves)."""
        return self.status.type == "task"


class Parts:
    def __init__(self, alerts: Alerts) -> None:
        self.alerts = alerts
        self.stopping = asyncio.Event()
        self._parts: dict[str, Part] = {}
        self._once = OnceLogger(log, interval_s=60.0)

    def add(self, name: str, run: PartRun, status: PartStatus | None = None) -> Part:
        part = Part(name, status or PartStatus(name=name, type="task"), run)
        self._parts[name] = part
        return part

    def __getitem__(self, name: str) -> Part:
        return self._parts[name]

    def running(self) -> list[Part]:
        return [p for p in self._parts.values() if p.task is not None]

    def start(self, name: str) -> None:
        part = self._parts[name]
        part.task = asyncio.create_task(self._supervise(part), name=name)
        part.task.add_done_callback(self._task_done)

    def start_all(self) -> None:
        for name in self._parts:
            self.start(name)

    async def cancel(self, names: list[str] | None = None) -> None:
        """Cancel the named parts (all when None) and wait until they have ended."""
        tasks = [p.task for p in self.running() if names is None or p.name in names]
        for task in tasks:
            task.cancel()  # type: ignore[union-attr]
        await asyncio.gather(*tasks, return_exceptions=True)  # type: ignore[arg-type]

    def abort(self) -> None:
        self.stopping.set()
        for part in self.running():
            part.task.cancel()  # type: ignore[union-attr]

    async def _supervise(self, part: Part) -> None:
        """Run the part; when it fails, report it and start it again after a backoff."""
        loop = asyncio.get_running_loop()
        while True:
            if part.ours:
                part.status.ok("running")
            steady = (
                loop.call_later(RUNNING_AGAIN_AFTER_S, self._running_again, part)
                if part.failing
                else None
            )
            try:
                await part.run()
                if not self.stopping.is_set():  # it ended on its own: not running any more
                    part.status.state = "stopped"
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                delay = part.backoff.next()
                self._failed(part, exc, delay)
            finally:
                if steady is not None:
                    steady.cancel()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), delay)
            if self.stopping.is_set():
                return
            part.status.count("restarts")
            part.status.state = "starting"

    def _failed(self, part: Part, exc: Exception, delay: float) -> None:
        cause = str(exc) if isinstance(exc, PortError) else f"{exc.__class__.__name__}: {exc}"
        again = f"restarting in {delay:.1f} s"
        part.status.failed(f"{cause}; {again}")
        first = not part.failing
        part.failing = True
        # never resolved: a part that flaps is logged at most once a minute (with a count)
        if first and self._once.log(
            f"failed {part.name}", "%s failed: %s; %s", part.name, cause, again, level=logging.ERROR
        ):
            part.reported = True
            log.debug("%s failed", part.name, exc_info=exc)  # the traceback, for a bug report
            self.alerts.raise_("error", f"{part.name} failed: {cause}; {again}")

    def _running_again(self, part: Part) -> None:
        part.failing = False
        part.backoff.reset()
        if part.status.state in ("starting", "failed"):
            part.status.ok("running")
        if part.reported:
            part.reported = False
            log.info("%s is running again", part.name)
            self.alerts.raise_("info", f"{part.name} is running again")

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        """A supervision that ended by an exception: a bug in it; the part stays down."""
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            part = self._parts.get(task.get_name())
            if part is not None:
                part.status.failed(f"{exc.__class__.__name__}: {exc}; not restarted")
            log.error(
                "%s stopped and is not restarted: %s; please report this bug", task.get_name(), exc
            )
            log.debug("%s stopped", task.get_name(), exc_info=exc)
            self.alerts.raise_("error", f"{task.get_name()} stopped: {exc}")
