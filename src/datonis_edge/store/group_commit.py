"""Group commit: one thread owns one SQLite connection and runs everything that was queued
meanwhile as one transaction with one commit (one fsync), then wakes every waiter.

The queue is the batching: while one commit's fsync runs, new operations pile up and go
together in the next. At low rates that is not enough (each append arrives alone, a fsync
each), so appends that come frequently wait a moment for company (`_gather`: the commit
window, at most WINDOW_S after the first arrived); a lone append after a pause commits at
once, and a window that catches little makes the next ones rarer (a producer that waits
for each commit gains nothing from it). An append's waiter is woken only after its commit. What an operation means is the caller's business (`run_ops`); this
module knows transactions, isolation of a failing operation, and waking waiters.

The thread never dies of a failing operation: a group that fails is rolled back and its
operations run again one by one, so that one bad operation fails alone; the owner hears of
every failure (`failed`) and may turn it into a result (a full disk becomes a refusal).
Between groups, and after IDLE_S without any, the owner may tidy up outside any transaction
(`maintain`: checkpoints, giving space back).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

log = logging.getLogger(__name__)

MAX_GROUP = 10_000
IDLE_S = 1.0  # maintain() runs at least this often when nothing is queued
WINDOW_S = 0.008  # the longest an append waits for company (well inside a 20 ms PUBACK budget)
WINDOW_EVENTS = 64  # a group this large commits at once: the rate is high, the queue batches
MAX_SKIP = 64  # after fruitless windows, up to this many groups commit without one


class Op:
    """One queued operation: a function of the connection, or an append (payload, count,
    compact: whether the payload is orjson's array of objects, sent as stored)."""

    __slots__ = ("append", "at", "done", "error", "fn", "future", "loop", "result", "tag")

    def __init__(
        self,
        fn: Callable[[sqlite3.Connection], Any] | None,
        future: asyncio.Future[Any] | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
        append: tuple[bytes, int, bool] | None = None,
    ) -> None:
        self.fn = fn
        self.future = future
        self.loop = loop
        self.append = append  # (JSON array payload, event count, compact)
        self.result: Any = None
        self.error: BaseException | None = None
        self.done: threading.Event | None = None  # for callers without an event loop
        self.tag: Any = None  # what the owner needs to know of it after a failure
        self.at = 0.0  # time.monotonic() when it was queued


def _resolve(ops: list[Op]) -> None:
    for op in ops:
        fut = op.future
        if fut is None or fut.done():
            continue
        if op.error is not None:
            fut.set_exception(op.error)
        else:
            fut.set_result(op.result)


class Owner(Protocol):
    """What the thread's owner (the outbox) says about its operations and its state."""

    def run_ops(self, conn: sqlite3.Connection, ops: list[Op]) -> None:
        """Run `ops` inside the open transaction (set op.result; raise to fail them)."""

    def snapshot(self) -> Any:
        """The in-memory state a rollback must bring back."""

    def restore(self, snapshot: Any) -> None: ...

    def committed(self) -> None:
        """The transaction just committed (its effects are durable)."""

    def failed(self, exc: BaseException, op: Op | None) -> bool:
        """A transaction failed and was rolled back: `op` alone, or a whole group (None).
        True if the owner settled `op` itself (set its result); else `exc` is its error."""

    def maintain(self, conn: sqlite3.Connection) -> None:
        """Outside any transaction, after each group and when idle."""


class GroupCommitThread:
    def __init__(self, name: str, owner: Owner) -> None:
        self.name = name
        self._owner = owner
        self._queue: queue.SimpleQueue[Op | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self.commits = 0
        self._last_at = 0.0  # when the last append was queued
        self._gap = WINDOW_S  # mean time between appends (moving average)
        self._per_op = 1.0  # mean events per append (moving average)
        self._skip = 0  # groups still to commit without a window
        self._fruitless = 0  # windows in a row that caught nothing

    def start(self, connect: Callable[[], sqlite3.Connection]) -> None:
        """Open the connection on the thread (`connect` also recovers); raise what it raised."""
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            try:
                conn = connect()
            except BaseException as exc:  # reported to start()'s caller
                failure.append(exc)
                ready.set()
                return
            ready.set()
            self._serve(conn)

        self._thread = threading.Thread(target=run, name=self.name, daemon=True)
        self._thread.start()
        ready.wait()
        if failure:
            self._thread = None
            raise failure[0]

    def stop(self) -> None:
        """Run what is queued, close the connection, end the thread."""
        if self._thread is None:
            return
        self._queue.put(None)
        self._thread.join(timeout=30)
        self._thread = None

    # ------------------------------------------------------------------ submitting

    def put(self, op: Op) -> None:
        op.at = time.monotonic()
        self._queue.put(op)

    async def submit(self, op: Op) -> Any:
        loop = asyncio.get_running_loop()
        op.loop, op.future = loop, loop.create_future()
        op.at = time.monotonic()
        self._queue.put(op)
        return await op.future

    def submit_sync(self, op: Op) -> Any:
        """For callers without an event loop (the CLI): waits for the commit."""
        op.done = threading.Event()
        op.at = time.monotonic()
        self._queue.put(op)
        op.done.wait()
        if op.error is not None:
            raise op.error
        return op.result

    # ------------------------------------------------------------------ the thread

    def _serve(self, conn: sqlite3.Connection) -> None:
        stop = False
        while not stop:
            try:
                first = self._queue.get(timeout=IDLE_S)
            except queue.Empty:
                self._maintain(conn)
                continue
            if first is None:
                break
            ops = [first]
            while len(ops) < MAX_GROUP:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stop = True
                    break
                ops.append(nxt)
            if not stop:
                stop = self._gather(ops)
            self._run_group(conn, ops)
            self._maintain(conn)
        with contextlib.suppress(sqlite3.Error):  # a close on a full disk cannot checkpoint
            conn.close()

    def _gather(self, ops: list[Op]) -> bool:
        """The commit window: a small group of appends that follows others closely waits for
        more, until WINDOW_S after its first was queued, until none came for four times the
        usual gap between appends, or until WINDOW_EVENTS events. A lone append after a pause,
        a group holding anything but appends (a read, an ack), a large one, appends that come
        less often than two per WINDOW_S (producers that gather their own batches, as the
        mqtt_listener does), or any at a rate above WINDOW_EVENTS per WINDOW_S (where the
        queue batches by itself) commits at once.
        A window that did not at least double its group (producers that wait for their
        commit, as HTTP clients do) makes the next ones rarer. True: stop was queued."""
        gap = ops[0].at - self._last_at
        events = 0
        for op in ops:
            self._arrived(op)
            events += op.append[1] if op.append is not None else WINDOW_EVENTS
        if (
            events >= WINDOW_EVENTS
            or gap > WINDOW_S  # idle before: a lone reading must not wait
            or 2 * self._gap > WINDOW_S  # fewer than two more expected: producers that gather
            or self._gap < self._per_op * WINDOW_S / WINDOW_EVENTS  # a high rate: the queue batches
        ):
            return False
        if self._skip > 0:  # the last windows caught little: the producers wait for us
            self._skip -= 1
            return False
        deadline = ops[0].at + WINDOW_S
        before = len(ops)
        while events < WINDOW_EVENTS:
            timeout = min(deadline - time.monotonic(), 4 * self._gap)
            if timeout <= 0:
                break
            try:
                nxt = self._queue.get(timeout=timeout)
            except queue.Empty:
                break
            if nxt is None:
                return True
            ops.append(nxt)
            self._arrived(nxt)
            if nxt.append is None:
                break
            events += nxt.append[1]
        if len(ops) >= 2 * before:
            self._fruitless = 0
        else:
            self._fruitless += 1
            self._skip = min(MAX_SKIP, 1 << min(self._fruitless, 6))
        return False

    def _arrived(self, op: Op) -> None:
        if op.append is None:
            return
        gap = min(op.at - self._last_at, WINDOW_S)
        self._gap += (max(gap, 0.0) - self._gap) / 8
        self._per_op += (op.append[1] - self._per_op) / 8
        self._last_at = op.at

    def _maintain(self, conn: sqlite3.Connection) -> None:
        try:
            self._owner.maintain(conn)
        except Exception:  # a bug: the writer must live on, the next maintain tries again
            log.exception("%s: maintenance failed", self.name)
        if conn.in_transaction:  # never leave a transaction open behind maintenance
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")

    def _transaction(self, conn: sqlite3.Connection, ops: list[Op]) -> None:
        conn.execute("BEGIN IMMEDIATE")
        self._owner.run_ops(conn, ops)
        conn.execute("COMMIT")
        self.commits += 1
        self._owner.committed()

    def _undo(self, conn: sqlite3.Connection, snapshot: Any) -> None:
        if conn.in_transaction:  # SQLite may have rolled back already (SQLITE_FULL does)
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
        self._owner.restore(snapshot)

    def _run_group(self, conn: sqlite3.Connection, ops: list[Op]) -> None:
        snapshot = self._owner.snapshot()
        try:
            self._transaction(conn, ops)
        except BaseException as exc:
            # One bad op must not fail its neighbours: undo, then run each on its own.
            self._undo(conn, snapshot)
            self._owner.failed(exc, None)
            for op in ops:
                op.result, op.error = None, None
                snap = self._owner.snapshot()
                try:
                    self._transaction(conn, [op])
                except BaseException as exc:
                    self._undo(conn, snap)
                    if not self._owner.failed(exc, op):
                        op.error = exc
        by_loop: dict[asyncio.AbstractEventLoop, list[Op]] = {}
        for op in ops:
            if op.done is not None:
                op.done.set()
            if op.loop is not None:
                by_loop.setdefault(op.loop, []).append(op)
        for loop, group in by_loop.items():  # one wake-up per loop, not one per waiter
            with contextlib.suppress(RuntimeError):  # loop closed: nobody waits any more
                loop.call_soon_threadsafe(_resolve, group)
