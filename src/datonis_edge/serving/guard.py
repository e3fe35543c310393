"""The deadline of each connection (headers, body, idle keep-alive) and the header-size cap,
in a subclass of uvicorn's httptools protocol."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import httptools
import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from .accept import _Slot
from .limits import _LINGER_S, _Alarms, _answer, _Limits

log = logging.getLogger("datonis_edge.serving")


class _HeadTooLarge(Exception):
    pass


class _GuardedProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a deadline on reading each request's head and body and
    a cap on the head's size; after a refusal it reads and drops for a moment, then closes."""

    def __init__(
        self,
        config: uvicorn.Config,
        server_state: Any,
        app_state: dict[str, Any],
        limits: _Limits,
        alarms: _Alarms,
        slot: _Slot,
    ) -> None:
        super().__init__(config, server_state, app_state)
        self.limits = limits
        self.alarms = alarms
        self.slot = slot
        self.phase: str | None = None  # "head" or "body" while we wait on the client
        self.deadline = 0.0  # loop time the current phase must end by
        self.timer: asyncio.TimerHandle | None = None
        self.timer_at = 0.0
        self.head_seen = False  # bytes of the awaited request have arrived
        self.head_wire = 0  # bytes of whole chunks that left the head unfinished
        self.head_parsed = 0  # bytes of the request line and the finished headers
        self.head_too_large = False
        self.began_in_chunk = False
        self.refusing = False

    # deadlines: one timer per connection, re-armed only when it fires early

    def _wait_for(self, phase: str, seconds: float) -> None:
        self.phase = phase
        self.deadline = self.loop.time() + seconds
        if self.timer is not None and self.timer_at > self.deadline:
            self.timer.cancel()
            self.timer = None

    def _arm(self) -> None:
        if self.phase is not None and self.timer is None and not self.refusing:
            self.timer_at = self.deadline
            self.timer = self.loop.call_at(self.deadline, self._on_timer)

    def _on_timer(self) -> None:
        self.timer = None
        if self.phase is None or self.transport.is_closing():
            return
        now = self.loop.time()
        ours = self.flow.read_paused or (
            self.phase == "body" and self.cycle is not None and self.cycle.waiting_for_100_continue
        )
        if ours:  # we are the ones not reading: the client is not late
            timeout = (
                self.limits.header_timeout if self.phase == "head" else self.limits.body_timeout
            )
            self.deadline = now + timeout
        if now < self.deadline:
            self._arm()
            return
        if self.phase == "head" and not self.head_seen:
            self.transport.close()  # connected and never asked anything: nothing to answer
            return
        if self.phase == "body" and self.cycle is not None and self.cycle.response_complete:
            self.transport.close()  # answered already; the rest of the body is not needed
            return
        if self.phase == "head":
            self.alarms.note(
                "header_timeout",
                "closed a connection that did not send its request headers within "
                f"{self.limits.header_timeout:g} s (limits.header_timeout_ms)",
            )
        else:
            self.alarms.note(
                "body_timeout",
                "closed a connection whose request body stalled for "
                f"{self.limits.body_timeout:g} s (limits.body_timeout_ms)",
            )
        self._refuse(408, "request not received in time\n")

    # refusals

    def _refuse(self, status: int, text: str) -> None:
        self.phase = None
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            if cycle.response_started:  # an answer is half written: all we can do is stop
                self.transport.close()
                return
            cycle.disconnected = True  # the app's receive() ends, its send() is dropped
            cycle.message_event.set()
        self.refusing = True
        self.transport.write(_answer(status, text))
        self.flow.resume_reading()
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(_LINGER_S, self.transport.close)

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._wait_for("head", self.limits.header_timeout)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.phase = None
        self.slot.release()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        self._unset_keepalive_if_required()
        if self.refusing:
            return
        if self.phase == "head":
            self.head_seen = True
        self.began_in_chunk = False
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            pass  # no WebSocket here: the request was answered as plain HTTP
        except httptools.HttpParserError:
            if self.head_too_large:
                self._head_too_large()
            else:
                self.alarms.note("bad_request", "answered 400 to a request that is not HTTP")
                self._refuse(400, "Invalid HTTP request received.\n")
            return
        if self.phase == "head" and not self.began_in_chunk:
            # the whole chunk belongs to an unfinished head (one whose start is in this chunk
            # is measured by its parsed parts instead)
            self.head_wire += len(data)
            if self.head_wire > self.limits.max_header_bytes:
                self._head_too_large()
                return
        self._arm()

    def _head_too_large(self) -> None:
        self.alarms.note(
            "header_size",
            "answered 431 to a request whose headers are over "
            f"{self.limits.max_header_bytes} bytes (limits.max_header_bytes)",
        )
        self._refuse(431, "request line and headers are too large\n")

    # parser callbacks

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self.phase != "head":  # the connection's first request keeps its deadline from connect
            self._wait_for("head", self.limits.header_timeout)
        self.head_seen = True
        self.head_wire = self.head_parsed = 0
        self.began_in_chunk = True

    def _count_head(self, n: int) -> None:
        self.head_parsed += n
        if self.head_parsed > self.limits.max_header_bytes:
            self.head_too_large = True
            raise _HeadTooLarge  # the parser stops; data_received answers 431

    def on_url(self, url: bytes) -> None:
        self._count_head(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count_head(len(name) + len(value) + 4)
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._wait_for("body", self.limits.body_timeout)
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        self.deadline = self.loop.time() + self.limits.body_timeout
        super().on_body(body)

    def on_message_complete(self) -> None:
        self.phase = None
        super().on_message_complete()
