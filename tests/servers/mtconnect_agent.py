"""A small MTConnect agent for the tests and the benchmark (aiohttp), written to the standard:
every document it serves validates against the official schemas in tests/schemas/mtconnect/
(tests/test_mtconnect_agent.py checks that).

    python mtconnect_agent.py --port N [--devices 1] [--samples 3] [--buffer 1024]
                              [--namespace 2.0|1.3] [--auto-ms 0] [--validate]

One or more devices, each with events (AVAILABILITY, EXECUTION, CONTROLLER_MODE, PROGRAM,
PART_COUNT), two CONDITIONs (SYSTEM, TEMPERATURE) and `--samples` SAMPLEs (POSITION, mm).
Observations live in a ring buffer of `--buffer` entries with sequence numbers and an
instanceId; /probe, /current, /sample?from=&count= and the long poll (&interval=&heartbeat=,
multipart/x-mixed-replace) are served, at / and under /<device name>/. `--auto-ms` changes
every sample (and the part count) that often. Test controls under /_control/:
  POST set     {"<item id>": value, ...}  (a condition: {"level": "fault", "native_code": ..,
                "text": ..}) appends observations, answers the new sequence numbers
  POST restart a new instanceId, an empty buffer, sequences from 1 (the agent restarted)
  POST mute    {"on": true} stops answering (requests hang) until {"on": false}
  GET  stats   requests by kind, firstSequence, nextSequence, instanceId
With `--validate` every document is checked against the official schemas before it is
served (2.0 only: no 1.x schemas are shipped); one that fails is printed and counted in
`stats["invalid"]`, which the test fixture asserts to be 0 when it stops the agent.
Prints "listening" once it is.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import itertools
import math
import time
import uuid
from collections import deque
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape, quoteattr

from aiohttp import web

EVENTS = [("avail", "AVAILABILITY", "Availability", "AVAILABLE"),
          ("exec", "EXECUTION", "Execution", "READY"),
          ("mode", "CONTROLLER_MODE", "ControllerMode", "AUTOMATIC"),
          ("program", "PROGRAM", "Program", "O1234"),
          ("parts", "PART_COUNT", "PartCount", "0")]  # fmt: skip
CONDITIONS = [("system", "SYSTEM"), ("temp_cond", "TEMPERATURE")]


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Item:
    def __init__(self, device: int, key: str, category: str, type_: str, element: str) -> None:
        self.id = f"d{device}_{key}"
        self.name = key
        self.device = device
        self.category = category
        self.type = type_
        self.element = element  # the Streams element of a SAMPLE or EVENT

    def probe(self) -> str:
        units = ' units="MILLIMETER" subType="ACTUAL"' if self.category == "SAMPLE" else ""
        return (
            f'<DataItem category="{self.category}" id="{self.id}" name="{self.name}" '
            f'type="{self.type}"{units}/>'
        )


class Agent:
    def __init__(self, devices: int, samples: int, buffer: int, namespace: str) -> None:
        self.devices = [f"VMC-{i + 1}" for i in range(devices)]
        self.items: dict[str, Item] = {}
        for d in range(devices):
            for key, type_, element, _ in EVENTS:
                self._add(Item(d, key, "EVENT", type_, element))
            for key, type_ in CONDITIONS:
                self._add(Item(d, key, "CONDITION", type_, ""))
            for s in range(samples):
                self._add(Item(d, f"x{s}", "SAMPLE", "POSITION", "Position"))
        self.buffer_size = buffer
        self.version = namespace
        self.ns = f"urn:mtconnect.org:MTConnect%s:{namespace}"
        self.stats: dict[str, int] = {"probe": 0, "current": 0, "sample": 0, "stream_parts": 0}
        self.muted = asyncio.Event()
        self.muted.set()  # set: answering
        self.changed = asyncio.Condition()
        self.validate: Validator | None = None
        self.restart()

    def _add(self, item: Item) -> None:
        self.items[item.id] = item

    def restart(self) -> None:
        self.instance_id = str(uuid.uuid4().int % 10**9 + 1)
        self.started = now_iso()
        self.ring: deque[tuple[int, str, str, Any]] = deque(maxlen=self.buffer_size)
        self.next_seq = 1
        self.latest: dict[str, tuple[int, str, Any]] = {}
        stamp = now_iso()
        for item in self.items.values():
            if item.category == "CONDITION":
                self.append(item.id, {"level": "normal"}, stamp)
            else:
                first = next((v for k, _, _, v in EVENTS if item.name == k), "UNAVAILABLE")
                self.append(item.id, first, stamp)

    def append(self, item_id: str, value: Any, stamp: str | None = None) -> int:
        seq = self.next_seq
        self.next_seq += 1
        entry = (seq, item_id, stamp or now_iso(), value)
        self.ring.append(entry)
        self.latest[item_id] = entry[0:1] + entry[2:]  # (seq, stamp, value)
        return seq

    @property
    def first_seq(self) -> int:
        return self.ring[0][0] if self.ring else self.next_seq

    # ------------------------------------------------------------------ documents

    def _header(self, kind: str, extra: str = "") -> str:
        if kind != "Error":
            extra += f' deviceModelChangeTime="{self.started}"'
        return (
            f'<Header creationTime="{now_iso()[:19]}Z" sender="fixture-agent" '
            f'instanceId="{self.instance_id}" version="{self.version}.0" '
            f'bufferSize="{self.buffer_size}"{extra}/>'
        )

    def _open(self, kind: str) -> str:
        ns = self.ns % kind
        return f'<?xml version="1.0" encoding="UTF-8"?>\n<MTConnect{kind} xmlns="{ns}">'

    def probe(self, device: str | None) -> str:
        parts = [self._open("Devices"), self._header("Devices", ' assetBufferSize="8" assetCount="0"'), "<Devices>"]  # fmt: skip
        for d, name in enumerate(self.devices):
            if device and device != name:
                continue
            own = [i for i in self.items.values() if i.device == d]
            avail = "".join(i.probe() for i in own if i.name == "avail")
            rest = "".join(i.probe() for i in own if i.name != "avail")
            parts.append(
                f'<Device id="dev{d}" name="{name}" uuid="uuid-{name}">'
                f"<DataItems>{avail}</DataItems><Components>"
                f'<Controller id="ctl{d}" name="controller"><DataItems>{rest}</DataItems>'
                "</Controller></Components></Device>"
            )
        parts.append("</Devices></MTConnectDevices>")
        return "".join(parts)

    def streams(self, entries: list[tuple[int, str, str, Any]], next_seq: int, device: str | None) -> str:  # fmt: skip
        last = self.next_seq - 1
        header = self._header(
            "Streams",
            f' nextSequence="{next_seq}" firstSequence="{self.first_seq}" lastSequence="{last}"',
        )
        out = [self._open("Streams"), header, "<Streams>"]
        for d, name in enumerate(self.devices):
            if device and device != name:
                continue
            mine = [e for e in entries if self.items[e[1]].device == d]
            if not mine:
                continue
            top = [e for e in mine if self.items[e[1]].name == "avail"]
            ctl = [e for e in mine if self.items[e[1]].name != "avail"]
            out.append(f'<DeviceStream name="{name}" uuid="uuid-{name}">')
            if top:
                out.append(f'<ComponentStream component="Device" componentId="dev{d}">{self._groups(top)}</ComponentStream>')  # fmt: skip
            if ctl:
                out.append(f'<ComponentStream component="Controller" componentId="ctl{d}" name="controller">{self._groups(ctl)}</ComponentStream>')  # fmt: skip
            out.append("</DeviceStream>")
        out.append("</Streams></MTConnectStreams>")
        return "".join(out)

    def _groups(self, entries: list[tuple[int, str, str, Any]]) -> str:
        groups: dict[str, list[str]] = {"SAMPLE": [], "EVENT": [], "CONDITION": []}
        for seq, item_id, stamp, value in entries:
            item = self.items[item_id]
            common = (
                f'dataItemId="{item.id}" sequence="{seq}" timestamp="{stamp}" name="{item.name}"'
            )
            if item.category == "CONDITION":
                level = value["level"].capitalize()
                code = f" nativeCode={quoteattr(value['native_code'])}" if value.get("native_code") else ""  # fmt: skip
                text = escape(value.get("text", ""))
                groups["CONDITION"].append(f'<{level} {common} type="{item.type}"{code}>{text}</{level}>')  # fmt: skip
            else:
                extra = ' subType="ACTUAL"' if item.category == "SAMPLE" else ""
                groups[item.category].append(f"<{item.element} {common}{extra}>{escape(str(value))}</{item.element}>")  # fmt: skip
        names = {"SAMPLE": "Samples", "EVENT": "Events", "CONDITION": "Condition"}
        return "".join(f"<{names[c]}>{''.join(v)}</{names[c]}>" for c, v in groups.items() if v)

    def error(self, code: str, text: str) -> str:
        return (
            f"{self._open('Error')}{self._header('Error')}"
            f'<Errors><Error errorCode="{code}">{escape(text)}</Error></Errors></MTConnectError>'
        )

    def current(self, device: str | None) -> str:
        entries = sorted(((s, i, t, v) for i, (s, t, v) in self.latest.items()), key=lambda e: e[0])
        return self.streams(entries, self.next_seq, device)

    def sample(self, start: int, count: int, device: str | None) -> tuple[str, int] | None:
        """The document and its nextSequence, or None when `start` is out of range."""
        if start < self.first_seq or start > self.next_seq:
            return None
        skip = start - self.first_seq
        chosen = list(itertools.islice(self.ring, skip, skip + count))
        next_seq = chosen[-1][0] + 1 if chosen else start
        return self.streams(chosen, next_seq, device), next_seq


XML = "text/xml"
SCHEMAS = Path(__file__).resolve().parent.parent / "schemas" / "mtconnect"


class Validator:
    def __init__(self, agent: Agent) -> None:
        from lxml import etree

        self.etree = etree
        self.agent = agent
        self.schemas = {
            kind: etree.XMLSchema(etree.parse(str(SCHEMAS / f"MTConnect{kind}_2.0_1.0.xsd")))
            for kind in ("Devices", "Streams", "Error")
        }

    def __call__(self, kind: str, text: str) -> str:
        schema = self.schemas[kind]
        if not schema.validate(self.etree.fromstring(text.encode())):
            self.agent.stats["invalid"] = self.agent.stats.get("invalid", 0) + 1
            print(f"INVALID {kind} document: {schema.error_log.last_error}", flush=True)
        return text


def _served(agent: Agent, kind: str, text: str) -> str:
    return agent.validate(kind, text) if agent.validate else text


def _device(request: web.Request) -> str | None:
    return request.match_info.get("device")


async def _answering(agent: Agent) -> None:
    await agent.muted.wait()


def routes(agent: Agent) -> web.Application:
    async def probe(request: web.Request) -> web.StreamResponse:
        await _answering(agent)
        agent.stats["probe"] += 1
        return web.Response(
            text=_served(agent, "Devices", agent.probe(_device(request))), content_type=XML
        )

    async def current(request: web.Request) -> web.StreamResponse:
        await _answering(agent)
        agent.stats["current"] += 1
        return web.Response(
            text=_served(agent, "Streams", agent.current(_device(request))), content_type=XML
        )

    async def sample(request: web.Request) -> web.StreamResponse:
        await _answering(agent)
        agent.stats["sample"] += 1
        q = request.query
        try:
            start = int(q.get("from", agent.first_seq))
            count = int(q.get("count", 100))
        except ValueError:
            text = _served(
                agent, "Error", agent.error("INVALID_REQUEST", "from and count are numbers")
            )
            return web.Response(status=400, text=text, content_type=XML)
        if "interval" not in q:
            doc = agent.sample(start, count, _device(request))
            if doc is None:
                return _out_of_range(agent, start)
            return web.Response(text=_served(agent, "Streams", doc[0]), content_type=XML)
        return await _stream(agent, request, start, count, int(q["interval"]), int(q.get("heartbeat", 10_000)))  # fmt: skip

    async def control_set(request: web.Request) -> web.StreamResponse:
        values: dict[str, Any] = await request.json()
        stamp = now_iso()
        unknown = [k for k in values if k not in agent.items]
        if unknown:
            return web.json_response({"error": f"unknown items {unknown}"}, status=400)
        seqs = {k: agent.append(k, v, stamp) for k, v in values.items()}
        async with agent.changed:
            agent.changed.notify_all()
        return web.json_response(seqs)

    async def control_restart(request: web.Request) -> web.StreamResponse:
        agent.restart()
        async with agent.changed:
            agent.changed.notify_all()
        return web.json_response({"instance_id": agent.instance_id})

    async def control_mute(request: web.Request) -> web.StreamResponse:
        on = (await request.json()).get("on", True)
        if on:
            agent.muted.clear()
        else:
            agent.muted.set()
        return web.json_response({"muted": on})

    async def control_stats(request: web.Request) -> web.StreamResponse:
        return web.json_response(
            {**agent.stats, "first_sequence": agent.first_seq, "next_sequence": agent.next_seq,
             "instance_id": agent.instance_id, "items": list(agent.items)}
        )  # fmt: skip

    app = web.Application()
    app.add_routes([
        web.post("/_control/set", control_set), web.post("/_control/restart", control_restart),
        web.post("/_control/mute", control_mute), web.get("/_control/stats", control_stats),
        web.get("/probe", probe), web.get("/current", current), web.get("/sample", sample),
        web.get("/{device}/probe", probe), web.get("/{device}/current", current),
        web.get("/{device}/sample", sample),
    ])  # fmt: skip
    return app


def _out_of_range(agent: Agent, start: int) -> web.Response:
    text = f"'from' must be in {agent.first_seq}..{agent.next_seq}, not {start}"
    body = _served(agent, "Error", agent.error("OUT_OF_RANGE", text))
    return web.Response(status=400, text=body, content_type=XML)


async def _stream(
    agent: Agent, request: web.Request, start: int, count: int, interval_ms: int, heartbeat_ms: int
) -> web.StreamResponse:
    if agent.sample(start, 1, None) is None:
        return _out_of_range(agent, start)
    boundary = uuid.uuid4().hex
    resp = web.StreamResponse(
        headers={"Content-Type": f"multipart/x-mixed-replace;boundary={boundary}"}
    )
    await resp.prepare(request)
    instance = agent.instance_id
    position = start
    last_sent = 0.0
    while True:
        await _answering(agent)
        if agent.instance_id != instance:
            return resp  # restarted: this stream ends, as a real agent's connection would
        doc = agent.sample(position, count, _device(request))
        if doc is None:
            return resp  # fell out of the buffer: the client asks again and hears OUT_OF_RANGE
        body, next_seq = doc
        now = time.monotonic()
        if next_seq > position or now - last_sent >= heartbeat_ms / 1000:
            data = _served(agent, "Streams", body).encode()
            head = f"--{boundary}\r\nContent-type: text/xml\r\nContent-length: {len(data)}\r\n\r\n"
            await resp.write(head.encode() + data + b"\r\n")
            agent.stats["stream_parts"] += 1
            position, last_sent = next_seq, now
            if agent.next_seq > position:
                continue  # more than `count` waiting: send on at once
            await asyncio.sleep(interval_ms / 1000)  # at most one part per interval
            continue
        async with agent.changed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(agent.changed.wait(), heartbeat_ms / 1000)
        await asyncio.sleep(0)


async def auto(agent: Agent, period_ms: int) -> None:
    """Every sample of every device changes each period (and the part count goes up)."""
    tick = 0
    while True:
        await asyncio.sleep(period_ms / 1000)
        tick += 1
        stamp = now_iso()
        for item in agent.items.values():
            if item.category == "SAMPLE":
                agent.append(item.id, round(100 * math.sin(tick / 10 + len(item.id)), 3), stamp)
            elif item.name == "parts":
                agent.append(item.id, str(tick), stamp)
        async with agent.changed:
            agent.changed.notify_all()


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--devices", type=int, default=1)
    ap.add_argument("--samples", type=int, default=3)
    ap.add_argument("--buffer", type=int, default=1024)
    ap.add_argument("--namespace", default="2.0")
    ap.add_argument("--auto-ms", type=int, default=0)
    ap.add_argument("--validate", action="store_true")
    args = ap.parse_args()
    agent = Agent(args.devices, args.samples, args.buffer, args.namespace)
    if args.validate and args.namespace == "2.0":
        agent.validate = Validator(agent)
    runner = web.AppRunner(routes(agent), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", args.port).start()
    if args.auto_ms:
        asyncio.get_running_loop().create_task(auto(agent, args.auto_ms))
    print("listening", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main())
