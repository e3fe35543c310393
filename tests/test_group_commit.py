"""The commit window: at a low steady rate appends share commits; a lone append commits alone.
And its counterpart in the mqtt_listener: a steady stream is stored in batches (one append,
one commit, one PUBACK write each), a lone message on its own. And the forwarder, while a
partial batch waits for the transmit interval, does not read the outbox after every append."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from datonis_edge.adapters.mqtt_listener.adapter import MqttListenerAdapter
from datonis_edge.adapters.mqtt_listener.config import MqttListenerService
from datonis_edge.forwarder import Forwarder
from datonis_edge.model import Batch, Outcome
from datonis_edge.status import Alerts
from datonis_edge.store import group_commit
from datonis_edge.store.declined import DeclinedStore
from datonis_edge.store.outbox import Outbox
from datonis_edge.uplinks.base import Uplink
from datonis_edge.uplinks.mqtt_broker.config import MqttBrokerCloud
from helpers import Mosquitto


def _event(i: int) -> list[dict]:
    return [{"thing_key": "t", "timestamp": 1_700_000_000_000 + i, "data": {"seq": i}}]


async def _drain_seqs(outbox: Outbox) -> list[int]:
    got = await outbox.read(await outbox.head(), 10_000)
    return [e["data"]["seq"] for e in got.events]


async def test_a_low_steady_rate_of_appends_shares_commits(tmp_path: Path) -> None:
    """One append a millisecond, each from its own producer that does not wait for the one
    before (as MQTT messages arrive): alone, each would be a commit of its own (the fsync of
    a small transaction is about as quick); the window joins them."""
    outbox = Outbox(tmp_path)
    outbox.open()
    try:
        commits0 = outbox.stats().commits
        appends = []
        for i in range(300):
            appends.append(asyncio.ensure_future(outbox.append(_event(i))))
            await asyncio.sleep(0.001)
        await asyncio.gather(*appends)
        stats = outbox.stats()
        assert stats.appends == 300
        assert (stats.commits - commits0) * 2 <= 300, stats.commits - commits0
        assert await _drain_seqs(outbox) == list(range(300))  # in order, every one
    finally:
        outbox.close()


async def test_a_lone_append_after_a_pause_commits_alone_and_is_durable(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path)
    outbox.open()
    try:
        await asyncio.gather(*(outbox.append(_event(i)) for i in range(20)))  # busy before
        await asyncio.sleep(group_commit.WINDOW_S * 10)  # then a pause: the window is closed
        commits = outbox.stats().commits
        await outbox.append(_event(20))  # returns: it was committed, not kept for company
        assert outbox.stats().commits == commits + 1
    finally:
        outbox.close()
    again = Outbox(tmp_path)
    again.open()
    try:
        assert 20 in await _drain_seqs(again)
    finally:
        again.close()


async def test_a_producer_that_waits_for_each_commit_is_not_slowed_by_fruitless_windows(
    tmp_path: Path,
) -> None:
    """Appends one after the other: a window can catch nothing (the producer waits for the
    commit), so after fruitless windows most groups commit without one."""
    outbox = Outbox(tmp_path)
    outbox.open()
    try:
        for i in range(200):
            await outbox.append(_event(i))
        writer = outbox._writer
        assert writer._fruitless > 0 and writer._skip > 0
        assert await _drain_seqs(outbox) == list(range(200))
    finally:
        outbox.close()


def _publish_steadily(port: int, n: int) -> None:
    """`n` QoS 1 messages, about one a millisecond (a paho publisher on its own thread)."""
    client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2)
    client.max_inflight_messages_set(0)
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        infos = []
        for seq in range(n):
            payload = b'{"seq": %d, "temperature": 21}' % seq
            infos.append(client.publish(f"plant/press-{seq % 3}/data", payload, qos=1))
            time.sleep(0.001)
        for info in infos:
            info.wait_for_publish(30)
    finally:
        client.disconnect()
        client.loop_stop()


async def test_the_listener_stores_a_steady_stream_in_batches_and_a_lone_message_alone(
    tmp_path: Path,
) -> None:
    """mosquitto as it comes (no TCP_NODELAY: it holds a small PUBLISH until the one before is
    TCP-acknowledged). Before the listener acknowledged its reads at once, each message came
    only after the PUBACK of the one before, and every batch held one message."""
    broker = Mosquitto(tmp_path).start()
    outbox = Outbox(tmp_path / "outbox")
    outbox.open()
    batches: list[list[int]] = []

    async def sink(readings: list[dict[str, Any]], raw: Any = None, checked: bool = False) -> int:
        batches.append([r["data"]["seq"] for r in readings])
        await outbox.append(readings)
        return len(readings)

    config = MqttListenerService(
        type="mqtt_listener",
        name="line",
        port=broker.port,
        topics=["plant/+/data"],
        thing_key_topic_level=1,
    )
    adapter = MqttListenerAdapter(config, sink, workdir=tmp_path)
    run = asyncio.create_task(adapter.run())

    def stored() -> list[int]:
        return [seq for batch in batches for seq in batch]

    async def until(predicate: Any, what: str) -> None:
        deadline = time.monotonic() + 60
        while not predicate():
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            await asyncio.sleep(0.02)

    try:
        await until(lambda: adapter.status.state == "connected", "the listener to connect")
        await asyncio.sleep(0.3)  # its SUBSCRIBE follows the connection
        await asyncio.to_thread(_publish_steadily, broker.port, 600)
        # every message stored once and acknowledged (nothing held unacknowledged)
        await until(lambda: len(stored()) >= 600 and adapter._inbox.lag()[0] == 0, "all 600")
        assert sorted(stored()) == list(range(600))
        assert len(batches) * 3 <= 600, f"{len(batches)} batches for 600 messages"

        await asyncio.sleep(0.1)  # a pause, then one message: stored on its own, acknowledged
        await asyncio.to_thread(_publish_steadily, broker.port, 1)
        await until(lambda: len(stored()) == 601 and adapter._inbox.lag()[0] == 0, "the lone one")
        assert batches[-1] == [0]
    finally:
        run.cancel()
        await asyncio.gather(run, return_exceptions=True)
        outbox.close()
        broker.stop()


async def test_a_partial_batch_waits_for_the_interval_without_a_read_per_append(
    tmp_path: Path, monkeypatch: Any
) -> None:
    """200 appends while a batch of up to 1,000 waits for its 1 s interval: before, each append
    woke the forwarder to read (and decode) the whole partial batch again."""
    outbox = Outbox(tmp_path / "outbox")
    outbox.open()
    reads = [0]
    read = outbox.read

    async def counted(*args: Any) -> Any:
        reads[0] += 1
        return await read(*args)

    monkeypatch.setattr(outbox, "read", counted)
    sent: list[list[int]] = []

    class Recording(Uplink):
        async def send(self, batch: Batch) -> Outcome:
            sent.append([e["data"]["seq"] for e in batch.events])
            return Outcome.delivered(200)

    cloud = MqttBrokerCloud(
        protocol="mqtt_broker",
        endpoint="mqtt://127.0.0.1:1",
        bulk_max_elements=1000,
        bulk_transmit_interval_ms=1000,
    )
    forwarder = Forwarder(
        outbox, DeclinedStore(tmp_path / "declined"), Recording("rec"), cloud, 1, Alerts()
    )
    task = asyncio.create_task(forwarder.run())
    try:
        await outbox.append(_event(0))
        deadline = time.monotonic() + 30
        while not sent:  # the first goes at once (nothing sent for longer than the interval)
            assert time.monotonic() < deadline, "the first event was not sent"
            await asyncio.sleep(0.01)
        reads[0] = 0
        for i in range(1, 201):
            await outbox.append(_event(i))
        while sum(map(len, sent)) < 201:
            assert time.monotonic() < deadline, f"not all sent: {sent}"
            await asyncio.sleep(0.01)
        assert [seq for batch in sent for seq in batch] == list(range(201))
        assert len(sent) == 2, [len(b) for b in sent]  # the 200 waited for the interval
        assert reads[0] <= 10, f"{reads[0]} reads for 200 appends"
    finally:
        forwarder.stop_soon()
        await asyncio.wait_for(task, 10)
        outbox.close()
