"""One serialization per event: the bytes the outbox stored are the bytes on the wire, byte for
byte, wherever a batch starts or ends; older outboxes are upgraded in place and still read."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from datonis_edge.forwarder import Forwarder
from datonis_edge.model import Batch, Outcome, event_starts
from datonis_edge.protocol.datonis import EVENT_PATH, sign
from datonis_edge.status import Alerts
from datonis_edge.store import outbox_file
from datonis_edge.store.declined import DeclinedStore
from datonis_edge.store.outbox import Outbox
from datonis_edge.store.quarantine import find_undecodable
from datonis_edge.store.segments import SegmentDamaged
from datonis_edge.uplinks.base import Uplink
from datonis_edge.uplinks.datonis_http.config import DatonisHttpCloud
from datonis_edge.uplinks.mqtt_broker.config import MqttBrokerCloud
from datonis_edge.uplinks.mqtt_broker.uplink import MqttBrokerUplink
from helpers import base_config, free_port, simulator_service, wait_until


def _event(seq: int, thing_key: str = "t", **data: Any) -> dict[str, Any]:
    return {
        "thing_key": thing_key,
        "timestamp": 1_700_000_000_000 + seq,
        "data": {"seq": seq, **data},
    }


# events whose bytes hold `},{` other than between events: found by parsing, not by the scan
TRICKY = [
    _event(0, text="a},{b"),
    _event(1, rows=[{"x": 1}, {"y": [{"z": 2}, {}]}]),
    _event(2, text='quote " and \\ and é and \u2028'),
]


def _array(events: list[dict[str, Any]]) -> bytes:
    """What the outbox stores for these events: orjson's bytes of each, joined."""
    return b"[" + b",".join(orjson.dumps(e) for e in events) + b"]"


async def _read_all(outbox: Outbox, size: int) -> list[tuple[bytes, int]]:
    """Every batch of `size` from the head: its payload and count (nothing acknowledged)."""
    cursor = await outbox.head()
    out = []
    while (got := await outbox.read(cursor, size)).count:
        assert got.payload is not None
        out.append((got.payload, got.count))
        cursor = got.after
    return out


def test_event_starts_scans_compact_arrays_and_parses_the_tricky_ones() -> None:
    plain = [_event(i) for i in range(5)]
    for events in (plain, plain[:1], TRICKY, [*plain, *TRICKY, *plain]):
        data = _array(events)
        starts = event_starts(data, len(events))
        ends = [*(s - 1 for s in starts[1:]), len(data) - 1]
        assert [data[s:e] for s, e in zip(starts, ends, strict=True)] == [
            orjson.dumps(e) for e in events
        ]
    for bad in (b'[{"a": 1}, {"b": 2}]', b"[1,2]", b'[{"a":1}]', b'[{"a":1},{"b":'):
        with pytest.raises(ValueError):
            event_starts(bad, 2)


async def test_batches_cut_anywhere_carry_the_stored_bytes(tmp_path: Path) -> None:
    """Polled appends (events) and listener appends (bytes), joined into rows by the group
    commit; every batch size, so batches start and end in the middle of rows."""
    events = [_event(i) for i in range(40)]
    events[7:7] = TRICKY
    outbox = Outbox(tmp_path)
    outbox.open()
    try:
        chunks = [events[i : i + 6] for i in range(0, len(events), 6)]
        await asyncio.gather(  # concurrent: consecutive appends become one row
            *(
                outbox.append_raw(_array(c), len(c)) if k % 2 else outbox.append(c)
                for k, c in enumerate(chunks)
            )
        )
        assert outbox.stats().segments < len(chunks)  # joined
        for size in (1, 2, 3, 5, 7, 11, 43, 100):
            batches = await _read_all(outbox, size)
            assert sum(n for _, n in batches) == len(events)
            at = 0
            for payload, n in batches:
                assert payload == _array(events[at : at + n])  # byte for byte
                at += n
    finally:
        outbox.close()


async def test_a_batch_that_starts_and_ends_inside_one_row(tmp_path: Path) -> None:
    events = [_event(i, pad="x" * i) for i in range(10)]
    outbox = Outbox(tmp_path)
    outbox.open()
    try:
        seg = await outbox.append(events)
        got = await outbox.read((seg, 3), 4)
        assert (got.first, got.after, got.count) == ((seg, 3), (seg, 7), 4)
        assert got.payload == _array(events[3:7])
        batch = Batch("b", 1, got.after, got.count, got.payload)
        assert batch.event_json() == [orjson.dumps(e) for e in events[3:7]]
        assert batch.events == events[3:7]  # parsed on demand
        await outbox.ack((seg, 5), 5)
        got = await outbox.read(await outbox.head(), 100)
        assert got.first == (seg, 5) and got.payload == _array(events[5:])
    finally:
        outbox.close()


def test_the_envelope_is_what_orjson_writes_for_the_batch() -> None:
    events = [_event(1), *TRICKY]
    batch = Batch("12.3+4", 7, (12, 7), 4, _array(events))
    expected = orjson.dumps({"events": events, "epoch": 7, "batch_id": "12.3+4"})
    assert batch.envelope() == expected
    assert Batch("12.3+4", 7, (12, 7), 4, parsed=events).envelope() == expected


def test_the_mqtt_split_by_thing_sends_each_events_stored_bytes() -> None:
    events = [_event(0, "a"), _event(1, "b", text="x},{y"), _event(2, "a"), _event(3, "b")]
    cloud = MqttBrokerCloud(
        protocol="mqtt_broker", endpoint="mqtt://127.0.0.1:1", topic="p/{thing_key}"
    )
    messages = MqttBrokerUplink(cloud)._batch_messages(Batch("1.0+4", 2, (1, 4), 4, _array(events)))
    assert messages == [
        ("p/a", orjson.dumps({"events": events[0::2], "epoch": 2, "batch_id": "1.0+4"})),
        ("p/b", orjson.dumps({"events": events[1::2], "epoch": 2, "batch_id": "1.0+4"})),
    ]


@contextlib.contextmanager
def _db(directory: Path) -> Iterator[sqlite3.Connection]:
    """outbox.db of a stopped outbox, as the outbox opens it (exclusive: no -shm file)."""
    conn = sqlite3.connect(directory / "outbox.db", isolation_level=None)
    try:
        conn.execute("PRAGMA locking_mode=EXCLUSIVE")
        yield conn
    finally:
        conn.close()


async def test_other_json_arrays_are_stored_and_read_as_events(tmp_path: Path) -> None:
    """append_raw promises orjson's array of objects; other arrays still read back, parsed."""
    spaced = [_event(1), _event(2)]
    outbox = Outbox(tmp_path)
    outbox.open()
    try:
        await asyncio.gather(
            outbox.append([_event(0)]),
            outbox.append_raw(json.dumps(spaced).encode(), 2),
            outbox.append_raw(b"[1, [2]]", 2),
            outbox.append([_event(3)]),
        )
        for size in (1, 2, 3, 6):
            got = []
            for payload, _ in await _read_all(outbox, size):
                got += orjson.loads(payload)
            assert got == [_event(0), *spaced, 1, [2], _event(3)]
    finally:
        outbox.close()


# ---------------------------------------------------------------------- an older outbox

OLD_SCHEMA = """
CREATE TABLE segments (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    n INTEGER NOT NULL,
    acked INTEGER NOT NULL DEFAULT 0,
    nbytes INTEGER NOT NULL,
    created_ms INTEGER NOT NULL,
    payload BLOB NOT NULL
);
CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""


def _old_outbox(directory: Path, rows: list[bytes], acked_first: int = 0) -> None:
    """outbox.db as the version before segments.crc32 left it (WAL mode, rows, counters)."""
    directory.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(directory / "outbox.db", isolation_level=None)
    conn.execute("PRAGMA locking_mode=EXCLUSIVE")
    conn.execute("PRAGMA journal_mode=WAL")
    conn.executescript(OLD_SCHEMA)
    total = 0
    for i, payload in enumerate(rows):
        n = len(json.loads(payload))
        total += n
        conn.execute(
            "INSERT INTO segments(n, acked, nbytes, created_ms, payload) VALUES (?, ?, ?, 0, ?)",
            (n, acked_first if i == 0 else 0, len(payload), payload),
        )
    conn.execute(
        "INSERT INTO counters VALUES ('accepted', ?), ('delivered', ?)", (total, acked_first)
    )
    conn.close()


async def test_an_old_outbox_is_upgraded_in_place_and_its_rows_read_as_before(
    tmp_path: Path,
) -> None:
    old = [_event(i) for i in range(12)]
    rows = [
        json.dumps(old[:5]).encode(),  # the standard library's spacing: parsed, not scanned
        orjson.dumps(old[5:9]),
        orjson.dumps(old[9:]),
    ]
    _old_outbox(tmp_path, rows, acked_first=2)
    outbox = Outbox(tmp_path)
    outbox.open()
    try:
        assert outbox.pending == 10 and outbox.stats().counters["accepted"] == 12
        new = [_event(i) for i in range(12, 20)]
        await outbox.append(new[:3])
        await outbox.append_raw(_array(new[3:]), 5)
        batches = await _read_all(outbox, 4)  # across old and new rows
        assert b"".join(p[1:-1] + b"," for p, _ in batches) == _array(old[2:] + new)[1:-1] + b","
        cursor = await outbox.head()
        while (got := await outbox.read(cursor, 3)).count:
            await outbox.ack(got.after, got.count)
            cursor = got.after
        counters = outbox.stats().counters
        assert counters["accepted"] == 20 and counters["delivered"] == 20
    finally:
        outbox.close()
    with _db(tmp_path) as conn:
        columns = [r[1] for r in conn.execute("PRAGMA table_info(segments)")]
    assert columns[-1] == "crc32"


async def test_an_old_outbox_that_could_not_be_upgraded_works_without_checksums(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As after ALTER TABLE met a full disk: rows are written and read as before."""
    _old_outbox(tmp_path, [orjson.dumps([_event(0), _event(1)])])
    monkeypatch.setattr(outbox_file, "upgrade", lambda conn: None)
    outbox = Outbox(tmp_path)
    outbox.open()
    try:
        await outbox.append([_event(2), _event(3)])
        assert [p for p, _ in await _read_all(outbox, 3)] == [
            _array([_event(0), _event(1), _event(2)]),
            _array([_event(3)]),
        ]
        got = await outbox.read(await outbox.head(), 10)
        await outbox.ack(got.after, got.count)
        assert outbox.pending == 0 and outbox.stats().counters["delivered"] == 4
    finally:
        outbox.close()


# ---------------------------------------------------------------------- damage inside a row


async def test_a_row_damaged_inside_its_bytes_is_caught_by_its_checksum(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "outbox")
    outbox.open()
    for i in range(3):
        await outbox.append([_event(i * 2), _event(i * 2 + 1)])
    outbox.close()
    with _db(tmp_path / "outbox") as conn:
        (payload,) = conn.execute("SELECT payload FROM segments WHERE id = 2").fetchone()
        damaged = payload.replace(b'"seq":2', b'"seq":9')  # still JSON: only the sum knows
        conn.execute("UPDATE segments SET payload = ? WHERE id = 2", (damaged,))

    outbox = Outbox(tmp_path / "outbox")
    await asyncio.to_thread(outbox.open)
    try:
        with pytest.raises(SegmentDamaged):
            await outbox.read(await outbox.head(), 10)
        bad = await find_undecodable(outbox, await outbox.head(), 10)
        assert bad is not None and (bad.good_before, bad.segment, bad.raw) == (2, 2, damaged)
        assert "checksum" in bad.error

        class Recording(Uplink):
            def __init__(self) -> None:
                super().__init__("recording")
                self.bodies: list[bytes] = []

            async def send(self, batch: Batch) -> Outcome:
                self.bodies.append(batch.json())
                return Outcome.delivered(200)

        uplink = Recording()
        cloud = DatonisHttpCloud(
            endpoint="http://127.0.0.1:1",
            access_key="ak",
            secret_key="sk",
            bulk_transmit_interval_ms=0,
        )
        declined = DeclinedStore(tmp_path / "declined")
        forwarder = Forwarder(outbox, declined, uplink, cloud, epoch=1, alerts=Alerts())
        task = asyncio.create_task(forwarder.run())
        try:
            for _ in range(200):
                if outbox.pending == 0:
                    break
                await asyncio.sleep(0.05)
        finally:
            forwarder.stop_soon()
            await asyncio.wait_for(task, 10)
        assert b"".join(uplink.bodies) == _array([_event(0), _event(1)]) + _array(
            [_event(4), _event(5)]
        )
        [item] = declined.list()
        record = json.loads(item.path.read_bytes())
        assert record["local"] is True and record["count"] == 2
        assert record["raw_payload"] == damaged.decode() and "checksum" in record["reason"]
    finally:
        await asyncio.to_thread(outbox.close)


# ---------------------------------------------------------------------- a gateway process


class _Platform:
    """A stand-in for the platform that keeps every request's raw body: refuses (503) until
    told to accept, checks the signature."""

    def __init__(self, secret: str) -> None:
        self.bodies: list[bytes] = []
        self.accept = False
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                assert self.headers["X-Dtn-Signature"] == sign(secret, body)
                if self.path == EVENT_PATH and outer.accept:
                    outer.bodies.append(body)
                status = 200 if outer.accept or self.path != EVENT_PATH else 503
                self.send_response(status)
                if status == 503:
                    self.send_header("Retry-After", "1")
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_the_platform_receives_the_bytes_the_outbox_stored(gateway_factory) -> None:
    """Bodies from the http_listener and readings of a polled adapter, stored while the
    platform refuses, then delivered in batches of 7 that cut through the rows: the events
    in the bodies are the stored rows' bytes, byte for byte (and signed as sent)."""
    platform = _Platform("sk")
    try:
        config = base_config(None, endpoint=platform.url, bulk_max_elements=7)
        config["cloud"]["max_inflight_batches"] = 1
        port = free_port()
        config["services"] = [
            {"name": "push", "type": "http_listener", "host": "127.0.0.1", "port": port},
            simulator_service("press-1", scan_interval_ms=50),
        ]
        gw = gateway_factory(config).start()
        url = f"http://127.0.0.1:{port}{EVENT_PATH}"
        for k in range(3):
            events = [_event(k * 10 + i, "m") for i in range(10)]
            if k == 1:
                events[3:6] = TRICKY
            body = json.dumps({"events": events}, indent=1)  # spacing of the producer's own
            r = httpx.post(url, content=body, headers={"Content-Type": "application/json"})
            assert r.status_code == 200, r.text
        wait_until(lambda: gw.status()["outbox"]["pending"] >= 40, what="polled readings too")
        assert gw.stop() == 0
        with _db(gw.datadir / "outbox") as conn:
            rows = conn.execute("SELECT payload, crc32 FROM segments ORDER BY id").fetchall()
        assert all(crc is not None for _, crc in rows)
        stored = b",".join(payload[1:-1] for payload, _ in rows)

        platform.accept = True
        gw.start()
        wait_until(
            lambda: sum(len(b) for b in platform.bodies) > len(stored) + 100 * len(rows),
            what="the stored readings delivered",
        )
        arrays = []
        for body in platform.bodies:
            envelope = orjson.loads(body)
            arrays.append(body[len(b'{"events":') : body.rindex(b',"epoch":')])
            assert body.endswith(b',"batch_id":' + orjson.dumps(envelope["batch_id"]) + b"}")
            assert len(envelope["events"]) <= 7
        sent = b",".join(a[1:-1] for a in arrays)
        assert sent.startswith(stored)  # then what was read after the restart
        assert b'"text":"a},{b"' in stored
        assert gw.stop() == 0
    finally:
        platform.close()
