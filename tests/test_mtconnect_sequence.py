"""The mtconnect adapter in process against the fixture agent, its readings collected as the
sink gets them: every observation the agent holds arrives once, through reconnects, agent
restarts (a new instanceId) and buffer overruns (OUT_OF_RANGE), in polling and streaming."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from datonis_edge.adapters.base import ValueRefused, WriteFailed
from datonis_edge.adapters.mtconnect.adapter import MtconnectAdapter
from datonis_edge.adapters.mtconnect.config import MtconnectService
from datonis_edge.adapters.mtconnect.documents import (
    BadDocument,
    parse_streams,
    sample_value,
    timestamp_ms,
)
from servers.mtconnect_fixture import MtconnectAgentProc


class Collect:
    def __init__(self) -> None:
        self.readings: list[dict[str, Any]] = []
        self.arrived = asyncio.Event()

    async def __call__(self, readings: Any, raw: Any = None, checked: bool = False) -> int:
        self.readings.extend(readings)
        self.arrived.set()
        return len(readings)

    def values(self, tag: str) -> list[Any]:
        return [r["data"][tag] for r in self.readings if tag in r["data"]]


async def until(check: Callable[[], Any], what: str, timeout: float = 20) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        got = check()
        if got:
            return got
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def service(agents: list[MtconnectAgentProc], mode: str, **extra: Any) -> MtconnectService:
    tags = [{"name": "x0", "data_item": "d0_x0"}, {"name": "exec", "data_item": "exec"}]
    return MtconnectService.model_validate({
        "name": "cnc", "type": "mtconnect", "mode": mode, "scan_interval_ms": 100,
        "heartbeat_ms": 500, "retry_max_backoff_ms": 300, "count": 50,
        "agents": [{"name": f"a{i}", "url": a.url, "timeout_ms": 1500} for i, a in enumerate(agents)],
        "tags": tags, "things": [{"thing_key": "vmc", "metrics": [{"name": "x0", "tag": "x0"}, {"name": "exec", "tag": "exec"}]}],
        **extra,
    })  # fmt: skip


@contextlib.asynccontextmanager
async def running(config: MtconnectService) -> AsyncIterator[tuple[MtconnectAdapter, Collect]]:
    sink = Collect()
    adapter = MtconnectAdapter(config, sink)
    task = asyncio.create_task(adapter.run())
    try:
        yield adapter, sink
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@pytest.fixture
def agent(tmp_path: Path):
    a = MtconnectAgentProc(tmp_path, "--buffer", "64").start()
    yield a
    a.stop()


def _set(agent: MtconnectAgentProc, values: list[float]) -> dict[float, int]:
    return {v: agent.set({"d0_x0": v})["d0_x0"] for v in values}


@pytest.mark.parametrize("mode", ["polling", "streaming"])
async def test_restart_and_overrun_lose_and_duplicate_nothing_the_agent_holds(
    mode, agent, caplog
) -> None:
    caplog.set_level(logging.INFO, "datonis_edge")
    async with running(service([agent], mode)) as (adapter, sink):
        await until(lambda: sink.values("exec") == ["READY"], "the /current state")
        assert sink.values("x0") == [None]  # UNAVAILABLE until the machine reports
        await asyncio.to_thread(_set, agent, [float(i) for i in range(1, 31)])
        await until(lambda: len(sink.values("x0")) >= 31, "30 values")
        await asyncio.sleep(0.5)
        assert sink.values("x0") == [None, *[float(i) for i in range(1, 31)]]

        # the agent restarts: a new instance, its buffer read from its first sequence
        sink.readings.clear()
        await asyncio.to_thread(agent.restart)
        await asyncio.to_thread(_set, agent, [100.0, 101.0])
        await until(lambda: sink.values("x0")[-1:] == [101.0], "values of the new instance")
        await asyncio.sleep(0.5)
        assert sink.values("x0") == [None, 100.0, 101.0]
        assert sink.values("exec") == ["READY"]
        state = adapter.followers[0].state
        assert state["agent_restarts"] == 1 and state["gaps"] == 0

        # a buffer overrun: the agent does not answer while 150 observations come (it holds 64)
        sink.readings.clear()
        before = state["next_sequence"]
        await asyncio.to_thread(agent.mute)
        seqs = await asyncio.to_thread(_set, agent, [float(1000 + i) for i in range(150)])
        first = (await asyncio.to_thread(agent.stats))["first_sequence"]
        await asyncio.to_thread(agent.mute, False)
        held = [v for v, s in seqs.items() if s >= first]
        await until(lambda: sink.values("x0")[-1:] == [1149.0], "the held tail")
        await asyncio.sleep(0.5)
        assert sink.values("x0") == held  # all the agent still held, once, in order
        assert state["gaps"] == 1
        assert state["lost_observations"] == first - before
        gap_lines = [r for r in caplog.records if "dropped" in r.getMessage()]
        assert len(gap_lines) == 1 and gap_lines[0].levelno == logging.WARNING
        assert f"dropped {first - before} observations" in gap_lines[0].getMessage()
        restart_lines = [r for r in caplog.records if "restarted" in r.getMessage()]
        assert len(restart_lines) == 1


@pytest.mark.parametrize("mode", ["polling", "streaming"])
async def test_a_reconnect_resumes_at_the_position_without_duplicates(mode, tmp_path) -> None:
    agent = MtconnectAgentProc(tmp_path, "--buffer", "1024").start()
    try:
        async with running(service([agent], mode)) as (adapter, sink):
            await until(lambda: sink.values("exec"), "the /current state")
            await asyncio.to_thread(_set, agent, [1.0, 2.0])
            await until(lambda: sink.values("x0")[-1:] == [2.0], "first values")
            await asyncio.to_thread(agent.mute)  # requests hang: the adapter times out
            await asyncio.to_thread(_set, agent, [3.0, 4.0])
            await until(lambda: not adapter.followers[0].state["connected"], "reported down")
            assert "retrying" in adapter.followers[0].state["last_error"]
            assert adapter.status.state == "degraded"
            await asyncio.to_thread(agent.mute, False)
            await until(lambda: sink.values("x0")[-1:] == [4.0], "values after the reconnect")
            await asyncio.sleep(0.3)
            assert sink.values("x0") == [None, 1.0, 2.0, 3.0, 4.0]
            assert adapter.status.state == "running"
    finally:
        agent.stop()


async def test_a_batch_of_many_data_items_is_one_request(tmp_path) -> None:
    """200 samples change every 100 ms: polling reads them with one /sample per scan,
    streaming with one request in all."""
    agent = MtconnectAgentProc(tmp_path, "--samples", "200", "--auto-ms", "100", "--buffer", "100000").start()  # fmt: skip
    try:
        tags = [{"name": f"x{i}", "data_item": f"d0_x{i}"} for i in range(200)]
        things = [{"thing_key": "vmc", "metrics": [{"name": t["name"], "tag": t["name"]} for t in tags]}]  # fmt: skip
        for mode in ("polling", "streaming"):
            config = service([agent], mode, tags=tags, things=things, count=100_000)
            before = await asyncio.to_thread(agent.stats)
            async with running(config) as (_, sink):
                await until(lambda: len(sink.readings) >= 10, "readings")
                start = await asyncio.to_thread(agent.stats)
                await asyncio.sleep(2.0)
                end = await asyncio.to_thread(agent.stats)
                counted = len(sink.values("x199"))
            samples = end["sample"] - start["sample"]
            assert counted >= 15  # 20 changes of every item in 2 s
            if mode == "polling":
                assert samples <= 2.0 / 0.1 + 3, samples  # one request per 100 ms scan
            else:
                assert end["sample"] - before["sample"] == 1  # one long poll
                assert end["stream_parts"] - start["stream_parts"] >= 10
            assert all(len(r["data"]) == 200 for r in sink.readings[2:-1])
    finally:
        agent.stop()


async def test_writes_are_refused_as_read_only(agent) -> None:
    adapter = MtconnectAdapter(service([agent], "polling"), Collect())
    with pytest.raises(ValueRefused, match="MTConnect agents are read-only"):
        await adapter.check_write("x0", 1.0)
    with pytest.raises(WriteFailed, match="MTConnect agents are read-only"):
        await adapter.write("x0", 1.0)


async def test_1x_namespaces_read_like_2x(tmp_path) -> None:
    agent = MtconnectAgentProc(tmp_path, "--namespace", "1.3").start()
    try:
        body = (await asyncio.to_thread(agent.get, "/current")).content
        assert b"urn:mtconnect.org:MTConnectStreams:1.3" in body
        doc = parse_streams(body)
        assert {o.data_item_id for o in doc.observations} >= {"d0_exec", "d0_system", "d0_x0"}
        async with running(service([agent], "streaming")) as (_, sink):
            await asyncio.to_thread(_set, agent, [7.5])
            await until(lambda: sink.values("x0")[-1:] == [7.5], "a value from a 1.3 agent")
    finally:
        agent.stop()


@pytest.mark.parametrize(
    "body, why",
    [
        (b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa">]><MTConnectStreams xmlns="urn:mtconnect.org:MTConnectStreams:2.0">&a;</MTConnectStreams>', "DOCTYPE"),
        (b'<MTConnectStreams xmlns="urn:mtconnect.org:MTConnectStreams:2.0"><Header/></MTConnectStreams>', "instanceId"),
        (b'<html><body>proxy error</body></html>', "not an MTConnect document"),
        (b"<MTConnectStreams", "not well-formed"),
    ],
)  # fmt: skip
def test_hostile_or_foreign_documents_are_refused_by_name(body: bytes, why: str) -> None:
    with pytest.raises(BadDocument, match=why):
        parse_streams(body)


async def test_a_document_over_the_bound_is_refused_and_reported(tmp_path) -> None:
    agent = MtconnectAgentProc(tmp_path, "--samples", "3000").start()  # a /probe of ~300 kB
    try:
        config = service([agent], "polling", max_document_bytes=65_536)
        async with running(config) as (adapter, _):
            await until(
                lambda: adapter.followers and adapter.followers[0].state["last_error"], "the error"
            )
            assert "max_document_bytes" in adapter.followers[0].state["last_error"]
    finally:
        agent.stop()


async def test_a_new_run_goes_on_from_the_saved_position(agent, tmp_path) -> None:
    """A gateway restart (or a failover: the position is in the data directory) neither
    re-delivers nor skips: it reads on from where the last run's durable readings ended."""
    config = service([agent], "streaming")
    first = Collect()
    adapter = MtconnectAdapter(config, first, workdir=tmp_path)
    task = asyncio.create_task(adapter.run())
    await until(lambda: first.values("exec"), "the /current state")
    await asyncio.to_thread(_set, agent, [1.0, 2.0])
    await until(lambda: first.values("x0")[-1:] == [2.0], "first values")
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    saved = json.loads((tmp_path / "mtconnect" / "cnc" / "a0.json").read_text())
    assert saved["next_sequence"] == adapter.followers[0].state["next_sequence"]
    await asyncio.to_thread(_set, agent, [3.0, 4.0])  # while the gateway is away
    second = Collect()
    async with running_in(config, second, tmp_path) as adapter:
        await until(lambda: second.values("x0")[-1:] == [4.0], "values of the gap")
        await asyncio.sleep(0.3)
        assert second.values("x0") == [3.0, 4.0] and second.values("exec") == []
    # the agent restarts while the gateway is away: its new instance is read from the start
    await asyncio.to_thread(agent.restart)
    await asyncio.to_thread(_set, agent, [5.0])
    third = Collect()
    async with running_in(config, third, tmp_path) as adapter:
        await until(lambda: third.values("x0")[-1:] == [5.0], "the new instance")
        assert third.values("x0") == [None, 5.0] and third.values("exec") == ["READY"]
        assert adapter.followers[0].state["agent_restarts"] == 1


@contextlib.asynccontextmanager
async def running_in(
    config: MtconnectService, sink: Collect, workdir: Path
) -> AsyncIterator[MtconnectAdapter]:
    adapter = MtconnectAdapter(config, sink, workdir=workdir)
    task = asyncio.create_task(adapter.run())
    try:
        yield adapter
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@pytest.mark.parametrize(
    "text, ms",
    [
        ("2026-11-26T06:06:48.893375Z", 1795673208893),
        ("2026-11-26T06:06:48Z", 1795673208000),
        ("2026-11-26T06:06:48.8Z", 1795673208800),
        ("2026-11-26T06:06:48.893+00:00", 1795673208893),
        ("2026-11-26T08:06:48.893+02:00", 1795673208893),
    ],
)
def test_timestamps_are_read_to_the_millisecond(text: str, ms: int) -> None:
    assert timestamp_ms(text) == ms


@pytest.mark.parametrize(
    "text, value",
    [("12.5", 12.5), ("-3", -3.0), ("1.0 2.5 -3", [1.0, 2.5, -3.0]), ("UNAVAILABLE", None),
     ("", None), ("NaN", None), ("1 INF", None), ("fast", "fast")],
)  # fmt: skip
def test_sample_values_are_numbers_lists_or_null(text: str, value: Any) -> None:
    """NaN and INF (JSON has neither) are null; a word is passed on rather than stalling."""
    assert sample_value(text) == value
