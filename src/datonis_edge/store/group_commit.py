"""Group commit: one thread owns one SQLite connection and runs everything that was queued
meanwhile as one transaction with one commit (one fsync), then wakes every waiter.

The queue is the batching: while one commit's fsync runs, new operations pile up and go
together in the next. What an operation means is the caller's business (`run_ops`); this
module knows transactions, isolation of a failing operation, and waking waiters.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import sqlite3
import threading
from collections.abc import Callable
from typing import Any

MAX_GROUP = 10_000


class Op:
    """One queued operation: a function of the connection, or an append (payload, count)."""

    __slots__ = ("append", "done", "error", "fn", "future", "loop", "result")

    def __init__(
        self,
        fn: Callable[[sqlite3.Connection], Any] | None,
        future: asyncio.Future[Any] | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
        append: tuple[bytes, int] | None = None,
    ) -> None:
        self.fn = fn
        self.future = future
        self.loop = loop
        self.append = append  # (JSON array payload, event count)
        self.result: Any = None
        self.error: BaseException | None = None
        self.done: threading.Event | None = None  # for callers without an event loop


def _resolve(ops: list[Op]) -> None:
    for op in ops:
        fut = op.future
        if fut is None or fut.done():
            continue
        if op.error is not None:
            fut.set_exception(op.error)
        else:
            fut.set_result(op.result)


class GroupCommitThread:
    def __init__(
        self,
        name: str,
        run_ops: Callable[[sqlite3.Connection, list[Op]], None],
        snapshot: Callable[[], Any],
        restore: Callable[[Any], None],
    ) -> None:
        self.name = name
        self._run_ops = run_ops
        self._snapshot = snapshot
        self._restore = restore
        self._queue: queue.SimpleQueue[Op | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self.commits = 0

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
        self._queue.put(op)

    async def submit(self, op: Op) -> Any:
        loop = asyncio.get_running_loop()
        op.loop, op.future = loop, loop.create_future()
        self._queue.put(op)
        return await op.future

    def submit_sync(self, op: Op) -> Any:
        """For callers without an event loop (the CLI): waits for the commit."""
        op.done = threading.Event()
        self._queue.put(op)
        op.done.wait()
        if op.error is not None:
            raise op.error
        return op.result

    # ------------------------------------------------------------------ the thread

    def _serve(self, conn: sqlite3.Connection) -> None:
        stop = False
        while not stop:
            first = self._queue.get()
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
            self._run_group(conn, ops)
        conn.close()

    def _transaction(self, conn: sqlite3.Connection, ops: list[Op]) -> None:
        conn.execute("BEGIN IMMEDIATE")
        self._run_ops(conn, ops)
        conn.execute("COMMIT")
        self.commits += 1

    def _run_group(self, conn: sqlite3.Connection, ops: list[Op]) -> None:
        snapshot = self._snapshot()
        try:
            self._transaction(conn, ops)
        except BaseException:
            # One bad op must not fail its neighbours: undo, then run each on its own.
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            self._restore(snapshot)
            for op in ops:
                op.result, op.error = None, None
                snap = self._snapshot()
                try:
                    self._transaction(conn, [op])
                except BaseException as exc:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    self._restore(snap)
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
