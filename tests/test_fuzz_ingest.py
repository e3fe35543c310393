"""Fuzzing both listeners of ONE real gateway process (platform simulator, mosquitto, QoS 1).

Hypothesis draws rounds of input: random JSON of any shape, valid events with one field
mutated, truncated and bit-flipped bodies, huge numbers, deep nesting, repeated keys, odd
unicode; every round also carries numbered valid readings (a unique `seq`). All of it goes in
over HTTP and over MQTT. Afterwards, the promises:

- no 5xx ever, and every 4xx names its reason in one line;
- every reading answered 2xx, and every MQTT message, is accounted for: stored (then delivered,
  or declined with a reason) or, for MQTT, set aside in malformed/ with a reason;
- every numbered valid reading is delivered;
- nothing is stalled: outbox drained, listeners up, no traceback in the gateway's log.

`DATONIS_EDGE_FUZZ_EXAMPLES` sets the number of rounds (default 5000: about a minute, ~28000 inputs);
`DATONIS_EDGE_FUZZ_SEED` replays one seed (default: derandomized, the same rounds every run).
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from helpers import Gateway, Mosquitto, PlatformSim, wait_until
from ingest_stack import MQTT_SERVICE, IngestStack

EXAMPLES = int(os.environ.get("DATONIS_EDGE_FUZZ_EXAMPLES", "5000"))
SEED = os.environ.get("DATONIS_EDGE_FUZZ_SEED")
TS = 1_700_000_000_000

# ---------------------------------------------------------------------- what is sent

odd_text = st.text(
    st.characters(codec=None, categories=["L", "M", "N", "P", "S", "Z", "C"]), max_size=12
) | st.sampled_from(
    ["", "\u0000", "\u202eevil", "e\u0301", "🏭", "\ufeff", "\ud800", "a\udfffb", "+", "#", "/"]
)
huge_numbers = st.sampled_from(
    [2**63 - 1, 2**63, 2**64 - 1, 2**64, -(2**63) - 1, 10**30, 1e30, 1e308, -1e308, 5e-324]
)
json_leaf = (
    st.none()
    | st.booleans()
    | st.integers()
    | huge_numbers
    | st.floats(allow_nan=False, allow_infinity=False)
    | odd_text
)
json_any = st.recursive(
    json_leaf,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(odd_text, inner, max_size=5),
    max_leaves=25,
)
fields = st.sampled_from(["thing_key", "timestamp", "data", "waypoint", "extra", "seq"])
transports = st.sampled_from(["http", "mqtt"])


@dataclass(frozen=True)
class Valid:
    """Numbered valid readings (the sender numbers them): all must be delivered."""

    n: int
    transport: str
    shape: str  # http: single | bulk; mqtt: event | flat


@dataclass(frozen=True)
class RandomJson:
    value: Any
    transport: str
    ascii: bool


@dataclass(frozen=True)
class Mutated:
    """A valid event with one field replaced (or dropped)."""

    field: str
    value: Any
    drop: bool
    transport: str


@dataclass(frozen=True)
class Bytes:
    """A valid body damaged as text: cut, one bit flipped, keys repeated, nested, odd escapes."""

    how: str
    at: int
    transport: str


damages = st.sampled_from(
    ["cut", "flip", "repeat_events", "repeat_key", "deep", "huge_int", "escape", "cesu"]
)
plans = (
    st.builds(Valid, st.integers(1, 5), transports, st.sampled_from(["single", "bulk", "flat"]))
    | st.builds(RandomJson, json_any, transports, st.booleans())
    | st.builds(Mutated, fields, json_any, st.booleans(), transports)
    | st.builds(Bytes, damages, st.integers(0, 10_000), transports)
)
rounds = st.lists(plans, min_size=1, max_size=6)


# ---------------------------------------------------------------------- the ledger


@dataclass
class Ledger:
    seq: Iterator[int] = field(default_factory=itertools.count)
    valid_seqs: set[int] = field(default_factory=set)  # must all be delivered
    http_accepted: int = 0  # events answered 2xx
    mqtt_sent: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    bad_answers: list[str] = field(default_factory=list)
    rounds: int = 0
    inputs: int = 0

    def next_seq(self) -> int:
        return next(self.seq)


def event(seq: Any, thing_key: str = "fuzz-1") -> dict[str, Any]:
    return {"thing_key": thing_key, "timestamp": TS, "data": {"seq": seq, "temp": 21.5}}


def damage(how: str, at: int, body: bytes) -> bytes:
    i = at % max(1, len(body))
    if how == "cut":
        return body[:i]
    if how == "flip":
        return body[:i] + bytes([body[i] ^ (1 << (at % 8))]) + body[i + 1 :]
    if how == "repeat_events":
        inner = body[body.index(b"[") : body.rindex(b"]") + 1]
        return b'{"events": ' + inner + b', "events": ' + inner + b"}"
    if how == "repeat_key":  # the key twice, in the event itself
        return body.replace(b'"thing_key": ', b'"thing_key": "dup", "thing_key": ', 1)
    if how == "deep":
        levels = 30 + at % 1100
        return body.replace(b'"temp": 21.5', b'"temp": ' + b"[" * levels + b"]" * levels, 1)
    if how == "huge_int":
        return body.replace(b"21.5", b"9" * (1 + at % 40), 1)
    if how == "escape":  # a lone surrogate, a NUL, an escaped key
        return body.replace(b'"temp"', [b'"\\ud800"', b'"\\u0000"', b'"\\u0074emp"'][at % 3], 1)
    # "cesu": a surrogate encoded as UTF-8 bytes, which is not UTF-8
    return body.replace(b'"temp"', b'"\xed\xa0\x80"', 1)


class Sender:
    def __init__(self, stack: IngestStack, ledger: Ledger) -> None:
        self.stack = stack
        self.ledger = ledger

    def http(self, body: bytes, numbered: set[int] | None = None) -> None:
        r = self.stack.post(body)
        led = self.ledger
        led.statuses[r.status_code] = led.statuses.get(r.status_code, 0) + 1
        if r.status_code >= 500:
            led.bad_answers.append(f"{r.status_code} for {body[:200]!r}: {r.text[:300]}")
        elif r.status_code >= 400:
            reason = r.json().get("reason", "")
            if not reason or "\n" in reason or "Traceback" in reason:
                led.bad_answers.append(f"{r.status_code} without a one-line reason: {r.text[:300]}")
        else:
            led.http_accepted += r.json()["accepted"]
        if numbered is not None:
            assert r.status_code == 200, (body[:300], r.text)
            led.valid_seqs |= numbered

    def mqtt(
        self, payload: bytes, thing_key: str = "fuzz-1", numbered: set[int] | None = None
    ) -> None:
        self.stack.publish(thing_key, payload)
        self.ledger.mqtt_sent += 1
        if numbered is not None:
            self.ledger.valid_seqs |= numbered

    def send(self, plan: Any) -> None:
        led = self.ledger
        led.inputs += 1
        if isinstance(plan, Valid):
            seqs = [led.next_seq() for _ in range(plan.n)]
            if plan.transport == "http":
                if plan.shape == "single":
                    for s in seqs:
                        self.http(json.dumps(event(s)).encode(), {s})
                else:
                    body = json.dumps({"events": [event(s) for s in seqs]}).encode()
                    self.http(body, set(seqs))
            else:
                for s in seqs:
                    payload = event(s) if plan.shape != "flat" else {"seq": s, "timestamp": TS}
                    if plan.shape != "flat":
                        del payload["thing_key"]  # from the topic
                    self.mqtt(json.dumps(payload).encode(), numbered={s})
            return
        if isinstance(plan, RandomJson):
            body = json.dumps(plan.value, ensure_ascii=plan.ascii).encode("utf-8", "surrogatepass")
        elif isinstance(plan, Mutated):
            ev = event(f"m{led.next_seq()}")
            target = ev["data"] if plan.field == "seq" else ev
            if plan.drop:
                target.pop(plan.field, None)
            else:
                target[plan.field] = plan.value
            body = json.dumps(ev).encode("utf-8", "surrogatepass")
        else:
            tags = [f"b{led.next_seq()}" for _ in range(2)]
            body = damage(
                plan.how, plan.at, json.dumps({"events": [event(t) for t in tags]}).encode()
            )
        if plan.transport == "http":
            self.http(body)
        elif isinstance(plan, Mutated) and plan.field == "thing_key" and topic_level(plan.value):
            self.mqtt(body, thing_key=plan.value)  # the odd key as the topic level
        else:
            self.mqtt(body)


def topic_level(value: Any) -> bool:
    """Whether `value` can be one level of a topic that `plant/+/data` matches and that
    mosquitto takes (it drops a client that publishes control characters, surrogates or
    non-characters in a topic)."""
    if type(value) is not str or not value or any(c in value for c in "/+#"):
        return False
    return not any(
        ord(c) <= 0x1F
        or 0x7F <= ord(c) <= 0x9F
        or 0xD800 <= ord(c) <= 0xDFFF
        or 0xFDD0 <= ord(c) <= 0xFDEF
        or ord(c) & 0xFFFE == 0xFFFE
        for c in value
    )


# ---------------------------------------------------------------------- the run


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[IngestStack]:
    tmp = tmp_path_factory.mktemp("fuzz")
    platform = PlatformSim(tmp).start()
    broker = Mosquitto(tmp).start()
    gateways: list[Gateway] = []

    def factory(config: dict[str, Any]) -> Gateway:
        gw = Gateway(tmp, tmp / "data", config, name="fuzz")
        gateways.append(gw)
        return gw

    s = IngestStack(platform, broker, factory, bulk_max_elements=100)
    yield s
    s.close()
    for gw in gateways:
        gw.close()
    broker.stop()
    platform.stop()


def test_fuzzed_input_on_both_listeners_never_loses_or_stalls(stack: IngestStack) -> None:
    ledger = Ledger()
    sender = Sender(stack, ledger)

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        derandomize=SEED is None,
        suppress_health_check=list(HealthCheck),
    )
    @given(rounds)
    def one_round(plans: list[Any]) -> None:
        ledger.rounds += 1
        for plan in plans:
            sender.send(plan)
        sender.send(Valid(1, "mqtt", "event"))  # numbered readings in every round, both ways
        sender.send(Valid(2, "http", "bulk"))

    if SEED is not None:
        one_round = seed(int(SEED))(one_round)
    one_round()
    # and the sizes: a body over max_body_bytes, a 2 MiB message of garbage
    too_big = b'{"events": [' + b"1," * (8 << 20) + b"1]}"
    r = stack.post(too_big)
    assert r.status_code == 413 and "max_body_bytes" in r.json()["reason"]
    sender.mqtt(b"\xff" * (2 << 20))

    assert not ledger.bad_answers, "\n".join(ledger.bad_answers[:20])
    assert all(status < 500 for status in ledger.statuses)
    # every MQTT message is stored or set aside with a reason, none is left unacknowledged
    wait_until(
        lambda: _mqtt_settled(stack) == ledger.mqtt_sent,
        timeout=60,
        what=f"all {ledger.mqtt_sent} MQTT messages stored or set aside",
    )
    svc = stack.service(MQTT_SERVICE)
    stored_mqtt = svc["counters"].get("messages", 0)
    records = stack.malformed_records()
    assert len(records) == svc["counters"].get("malformed", 0)  # counted once kept
    assert all(r["reason"] and "\n" not in r["reason"] for r in records)
    big = records[-1]  # the garbage, last sent: cut to 1 MiB, its size noted
    assert big["payload_encoding"] == "base64" and big["payload_bytes"] == 2 << 20
    # every numbered reading delivered; every accepted one delivered or declined
    stack.wait_delivered(ledger.valid_seqs, timeout=60)
    st = stack.wait_drained(timeout=60)
    counters = st["counters"]
    assert counters["accepted"] == ledger.http_accepted + stored_mqtt
    assert counters["accepted"] == counters["delivered"] + counters["declined"]
    assert counters["evicted"] == 0 and counters["rejected"] == 0
    declined = _declined(stack.datadir)
    assert sum(len(d.get("events") or []) for d in declined) == counters["declined"]
    assert all(d.get("reason") for d in declined)
    assert len(stack.platform.events()) >= counters["delivered"]
    # nothing stalled
    states = {s["name"]: s["state"] for s in st["services"]}
    assert states == {"push": "listening", MQTT_SERVICE: "connected"}, states
    log = stack.gw.proc.log() if stack.gw.proc else ""
    assert "Traceback" not in log, log[log.index("Traceback") - 500 :][:3000]
    print(
        f"\nfuzz: {ledger.rounds} rounds, {ledger.inputs} inputs, statuses {ledger.statuses}, "
        f"{ledger.mqtt_sent} MQTT messages ({len(records)} set aside), "
        f"{counters['accepted']} accepted, {counters['delivered']} delivered, "
        f"{counters['declined']} declined, {len(ledger.valid_seqs)} numbered readings delivered"
    )


def _mqtt_settled(stack: IngestStack) -> int:
    counters = stack.service(MQTT_SERVICE)["counters"]
    return counters.get("messages", 0) + counters.get("malformed", 0)


def _declined(datadir: Path) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted((datadir / "declined").glob("*.json"))]
