"""Fuzzed parsers of bytes a peer sends: S7 read answers, CIP replies, signed instructions,
httpAcks, MTConnect documents, the platform simulator's envelopes. Garbage gets a clear
refusal (the parser's own error), never an exception nobody catches, an over-long value or
a hang; a valid input, mutated or not, is still read right."""

from __future__ import annotations

import asyncio
import json
import struct
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from datonis_edge.adapters.ethernet_ip import codec as cip
from datonis_edge.adapters.ethernet_ip.reader import Reader
from datonis_edge.adapters.ethernet_ip.reader import TagRead as ReaderTag
from datonis_edge.adapters.ethernet_ip.tagpath import parse as parse_tag
from datonis_edge.adapters.mtconnect.documents import (
    AgentError,
    BadDocument,
    Streams,
    parse_streams,
)
from datonis_edge.adapters.s7.adapter import _Plc
from datonis_edge.adapters.s7.address import parse_address
from datonis_edge.adapters.s7.codec import (
    Block,
    Item,
    Request,
    TagRead,
    decode,
    plan_blocks,
    plan_requests,
)
from datonis_edge.adapters.s7.config import S7Device
from datonis_edge.adapters.s7.link import ItemRefused, LinkDown, S7Link
from datonis_edge.protocol import datonis as wire
from datonis_edge.protocol.instructions import (
    InstructionError,
    sign_instruction,
    verify_instruction,
)
from datonis_edge.uplinks.base import Outcome
from datonis_edge.uplinks.datonis_mqtt.uplink import DatonisMqttUplink

FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _mutated(valid: bytes, edits: list[tuple[int, int, int]]) -> bytes:
    """`valid` with bytes flipped (op 0), cut off (op 1) or inserted (op 2) at positions."""
    out = bytearray(valid)
    for op, at, byte in edits:
        at = at % (len(out) + 1)
        if op == 0 and at < len(out):
            out[at] = byte
        elif op == 1:
            del out[at:]
        else:
            out.insert(at, byte)
    return bytes(out)


_edits = st.lists(
    st.tuples(st.integers(0, 2), st.integers(0, 1 << 16), st.integers(0, 255)), max_size=6
)

# ---- S7: the multi-variable read answer ---------------------------------------------------


def _s7_answer(chunks: list[bytes]) -> bytes:
    """A read answer as an S7 CPU (and the tests' snap7 server) sends it: header, function
    0x04 and the item count, then per item return code 0xFF, transport BYTE (length in bits),
    the data and a fill byte after an odd item that is not the last."""
    data = b""
    for i, chunk in enumerate(chunks):
        data += struct.pack(">BBH", 0xFF, 0x04, len(chunk) * 8) + chunk
        if len(chunk) % 2 and i < len(chunks) - 1:
            data += b"\0"
    params = bytes([0x04, len(chunks)])
    return struct.pack(">BBHHHHBB", 0x32, 3, 0, 1, len(params), len(data), 0, 0) + params + data


def _s7_read(answer: bytes, lengths: list[int]) -> list[bytes | ItemRefused]:
    link = S7Link.__new__(S7Link)
    link.client = SimpleNamespace(protocol=SimpleNamespace(build_multi_read_request=lambda _: b""))

    async def exchange(_pdu: bytes) -> bytes:
        return answer

    link._exchange = exchange  # type: ignore[method-assign]
    block = Block(0x84, 1, 0, sum(lengths))
    request, at = Request(), 0
    for n in lengths:
        request.items.append(Item(block, at, n))
        at += n
    return asyncio.run(link.read(request))


_s7_chunks = st.lists(st.binary(min_size=1, max_size=24), min_size=1, max_size=5)


@FAST
@given(chunks=_s7_chunks, edits=_edits)
def test_s7_read_answer_mutated_gives_exact_items_or_a_clear_error(
    chunks: list[bytes], edits: list[tuple[int, int, int]]
) -> None:
    lengths = [len(c) for c in chunks]
    if not edits:  # the valid answer is read item by item, byte for byte
        assert _s7_read(_s7_answer(chunks), lengths) == chunks
    try:
        out = _s7_read(_mutated(_s7_answer(chunks), edits), lengths)
    except (LinkDown, ItemRefused) as exc:
        assert str(exc)
        return
    assert len(out) == len(lengths)
    for got, n in zip(out, lengths, strict=True):
        assert isinstance(got, ItemRefused) or len(got) == n


@FAST
@given(answer=st.binary(max_size=80), lengths=st.lists(st.integers(1, 20), min_size=1, max_size=4))
def test_s7_random_answers_are_refused_clearly(answer: bytes, lengths: list[int]) -> None:
    try:
        out = _s7_read(b"\x32" + answer, lengths)
    except (LinkDown, ItemRefused) as exc:
        assert str(exc)
        return
    assert len(out) == len(lengths)
    assert all(isinstance(g, ItemRefused) or len(g) == n for g, n in zip(out, lengths, strict=True))


_PLC_TAGS = [
    ("label", parse_address("DB1.DBB0", "STRING", 10)),
    ("count", parse_address("DB1.DBW14", "INT")),
    ("speed", parse_address("DB1.DBD20", "REAL")),
    ("running", parse_address("DB1.DBX24.3")),
    ("total", parse_address("MD8", "DINT")),
]


def _plc_scan(memory: dict[int, bytes], edits: list[tuple[int, int, int]]) -> _Plc:
    """One scan of a PLC whose link answers every request from `memory` (area code ->
    bytes), the answer mutated by `edits`."""
    blocks = plan_blocks([TagRead(n, a) for n, a in _PLC_TAGS], max_gap=4)
    plc = _Plc(S7Device(name="press"), blocks, 1.0)
    plc.requests = plan_requests(blocks, 240)
    link = plc.link
    link.client = SimpleNamespace(
        get_connected=lambda: True,
        protocol=SimpleNamespace(build_multi_read_request=lambda specs: specs),
    )

    async def exchange(specs: Any) -> bytes:
        answer = _s7_answer([memory[area][at : at + n] for area, _db, at, n in specs])
        return _mutated(answer, edits)

    link._exchange = exchange  # type: ignore[method-assign]
    plc.values = asyncio.run(plc.read())  # type: ignore[attr-defined]
    return plc


@FAST
@given(
    db=st.binary(min_size=32, max_size=32), merker=st.binary(min_size=12, max_size=12), edits=_edits
)
def test_s7_plc_scan_reads_values_or_names_the_trouble_in_its_status(
    db: bytes, merker: bytes, edits: list[tuple[int, int, int]]
) -> None:
    memory = {0x84: db, 0x83: merker}
    plc = _plc_scan(memory, edits)
    values: dict[str, Any] = plc.values  # type: ignore[attr-defined]
    if not edits:
        by_area = {"DB": db, "M": merker}
        assert values == {n: decode(by_area[a.area][a.offset :], a) for n, a in _PLC_TAGS}
    if not values or len(values) < len(_PLC_TAGS):
        assert plc.state["name"] == "press" and plc.state["last_error"]
    assert set(values) <= {n for n, _ in _PLC_TAGS}
    label = values.get("label")
    assert label is None or (isinstance(label, str) and len(label) <= 10)
    assert -(1 << 15) <= values.get("count", 0) < 1 << 15


@FAST
@given(raw=st.binary(min_size=22, max_size=22), declared=st.integers(1, 20))
def test_s7_string_never_longer_than_declared(raw: bytes, declared: int) -> None:
    address = parse_address("DB1.DBB0", "STRING", declared)
    text = decode(raw[: address.size], address)
    assert isinstance(text, str) and len(text) <= declared


# ---- EtherNet/IP: CIP replies -------------------------------------------------------------

_DECODE_ERRORS = (ValueError, IndexError, struct.error)  # what reader.py turns into a tag error
_ATOMIC_VALUES = {
    "BOOL": st.booleans(),
    "DINT": st.integers(-(1 << 31), (1 << 31) - 1),
    "INT": st.integers(-(1 << 15), (1 << 15) - 1),
    "REAL": st.just(1.5),
    "LREAL": st.floats(allow_nan=False, allow_infinity=False),
    "ULINT": st.integers(0, (1 << 64) - 1),
}
_CODE = {name: code for code, (name, _) in cip.ATOMIC.items()}
_text = st.text(st.characters(max_codepoint=255), max_size=82)


@st.composite
def _cip_reply(draw: st.DrawFn) -> tuple[bytes, int, list[Any]]:
    """Read Tag reply data (type, values) as the PLC sends it, with its count and values."""
    count = draw(st.integers(1, 4))
    kind = draw(st.sampled_from([*_ATOMIC_VALUES, "STRING", "SHORT_STRING", "LOGIX"]))
    if kind in _ATOMIC_VALUES:
        values = draw(st.lists(_ATOMIC_VALUES[kind], min_size=count, max_size=count))
        info = cip.TypeInfo(_CODE[kind])
    else:
        values = draw(st.lists(_text, min_size=count, max_size=count))
        code = {"STRING": cip.CIP_STRING, "SHORT_STRING": cip.SHORT_STRING}.get(kind, cip.STRUCT)
        info = cip.TypeInfo(code, cip.LOGIX_STRING_HANDLE if code == cip.STRUCT else None)
    data = cip.encode_values(info, values)
    # encode_values writes the element count after the type (Write Tag); a reply has none
    return data[: len(info.header())] + data[len(info.header()) + 2 :], count, values


def _checked_decode(data: bytes, count: int) -> list[Any] | None:
    try:
        kind, values = cip.decode_values(data, count)
    except _DECODE_ERRORS:
        return None
    if kind.code in cip.ATOMIC or kind.code in (cip.CIP_STRING, cip.SHORT_STRING):
        assert len(values) == count  # never a short (or long) array taken for the whole
    for v in values:
        if isinstance(v, str) and kind.code != cip.STRUCT:
            assert len(v) <= 65_535
        if isinstance(v, str) and kind.handle == cip.LOGIX_STRING_HANDLE:
            assert len(v) <= cip.LOGIX_STRING_LEN
    return values


@FAST
@given(reply=_cip_reply(), edits=_edits)
def test_cip_values_round_trip_and_mutations_decode_or_fail_clearly(
    reply: tuple[bytes, int, list[Any]], edits: list[tuple[int, int, int]]
) -> None:
    data, count, values = reply
    assert _checked_decode(data, count) == values
    _checked_decode(_mutated(data, edits), count)


@FAST
@given(data=st.binary(max_size=64), count=st.integers(1, 8))
def test_cip_random_reply_data_decode_or_fail_clearly(data: bytes, count: int) -> None:
    _checked_decode(data, count)


@FAST
@given(replies=st.lists(st.binary(min_size=4, max_size=20), min_size=1, max_size=6), edits=_edits)
def test_cip_multiple_service_reply_splits_or_fails_clearly(
    replies: list[bytes], edits: list[tuple[int, int, int]]
) -> None:
    at, offsets = 2 + 2 * len(replies), []
    for r in replies:
        offsets.append(at)
        at += len(r)
    packed = struct.pack(f"<{len(replies) + 1}H", len(replies), *offsets) + b"".join(replies)
    assert cip.split_multiple(packed) == replies
    try:
        for embedded in cip.split_multiple(_mutated(packed, edits)):
            cip.reply_status(embedded)
    except _DECODE_ERRORS:
        pass


def _fragments(data: bytes, cut: int, size: int) -> list[bytes]:
    """Read Tag Fragmented replies carrying `data` (its type header, `cut` bytes, on each):
    status 0x06 (more to come) on all but the last, at most `size` value bytes each."""
    head, body = data[:cut], data[cut:]
    parts = [body[i : i + size] for i in range(0, len(body), size)] or [b""]
    return [
        bytes([0xD2, 0, 0x06 if i < len(parts) - 1 else 0, 0]) + head + part
        for i, part in enumerate(parts)
    ]


@FAST
@given(reply=_cip_reply(), size=st.integers(1, 40), edits=_edits, which=st.integers(0, 20))
def test_cip_fragmented_read_reassembles_or_names_the_tag(
    reply: tuple[bytes, int, list[Any]], size: int, edits: list[tuple[int, int, int]], which: int
) -> None:
    data, count, values = reply
    cut = 4 if data[0] == cip.STRUCT else 2
    replies = _fragments(data, cut, size)
    if edits:
        replies[which % len(replies)] = _mutated(replies[which % len(replies)], edits)
    answers = iter(replies)

    def request(_service: bytes) -> bytes:
        return next(answers, b"")  # a PLC that goes quiet: an empty reply

    read = ReaderTag.of("tank", parse_tag("Tank", count))
    read.alone = True
    got: dict[str, Any] = {}
    errors: dict[str, str] = {}
    try:
        Reader(SimpleNamespace(request=request), [read]).read_one(read, got, errors)
    except _DECODE_ERRORS:
        return  # raised to the adapter: "a reply the gateway cannot read", reconnects
    if not edits:
        assert got == {"tank": values[0] if count == 1 else values} and not errors
    assert set(got) | set(errors) == {"tank"}
    assert all(e.startswith("Tank") for e in errors.values())


def test_cip_fragmented_read_from_a_plc_that_never_says_done_ends_with_the_tags_error() -> None:
    requests = 0

    def request(_service: bytes) -> bytes:
        nonlocal requests
        requests += 1
        assert requests < 10_000, "the reader keeps asking for fragments"
        return b"\xd2\x00\x06\x00\xc4\x00" + b"\x01" * 480  # DINTs, and more to come

    read = ReaderTag.of("tank", parse_tag("Tank", 1))
    read.alone = True
    got: dict[str, Any] = {}
    errors: dict[str, str] = {}
    Reader(SimpleNamespace(request=request), [read]).read_one(read, got, errors)
    assert not got and "more than 1 values" in errors["tank"]
    assert requests < 200


# ---- instructions -------------------------------------------------------------------------

AK, SK = "ak-fuzz", "sk-fuzz"
_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=12,
)


def _refused_or_verified(payload: bytes) -> dict[str, Any] | None:
    try:
        return verify_instruction(payload, AK, SK)
    except InstructionError as exc:
        assert exc.cause and str(exc)
        return None


@FAST
@given(instruction=st.dictionaries(st.text(max_size=8), _json, max_size=4), edits=_edits)
def test_signed_instruction_verifies_and_mutations_are_refused_clearly(
    instruction: dict[str, Any], edits: list[tuple[int, int, int]]
) -> None:
    payload = sign_instruction(AK, SK, "thing", "alert", instruction, 1_700_000_000_000)
    got = verify_instruction(payload, AK, SK)
    assert got["instruction"] == json.loads(json.dumps(instruction))
    # an altered instruction is refused; one that still verifies says exactly the same
    assert _refused_or_verified(_mutated(payload, edits)) in (None, got)


@FAST
@given(payload=st.binary(max_size=200))
def test_random_bytes_are_refused_as_instructions(payload: bytes) -> None:
    assert _refused_or_verified(payload) is None


_hostile = [
    b"[" * 100_000 + b"]" * 100_000,
    b'{"a":' * 50_000 + b"1" + b"}" * 50_000,
    b'{"n":' + b"9" * 5000 + b',"access_key":"ak-fuzz","hash":"' + b"a" * 64 + b'"}',
    b'{"n":1e999999,"access_key":"ak-fuzz","hash":"' + b"a" * 64 + b'"}',
    b'{"s":"\xff\xfe","access_key":"ak-fuzz","hash":"' + b"a" * 64 + b'"}',
    b'{"s":"\\ud800","access_key":"ak-fuzz","hash":"' + b"a" * 64 + b'"}',
    b'{"s":"\\ud800\\u00e9","access_key":"ak-fuzz","hash":"' + b"A" * 64 + b'"}',
]


@pytest.mark.parametrize("payload", _hostile, ids=range(len(_hostile)))
def test_hostile_instructions_are_refused_clearly(payload: bytes) -> None:
    assert _refused_or_verified(payload) is None


# ---- httpAck --------------------------------------------------------------------------------

_LOOP = asyncio.new_event_loop()
_codes = (
    st.integers(-(10**30), 10**30)
    | st.floats()
    | st.text(max_size=8)
    | st.none()
    | st.booleans()
    | st.lists(st.integers(), max_size=2)
)
_msgs = _json | st.lists(st.dictionaries(st.text(max_size=8), _json, max_size=3), max_size=3)


@FAST
@given(code=_codes, msg=_msgs, context=st.sampled_from(["ctx", wire.PARSE_ERROR, 7, None]))
def test_http_ack_of_any_shape_settles_or_is_ignored(code: Any, msg: Any, context: Any) -> None:
    ack = {"context": context, "http_code": code, "http_msg": msg}
    try:
        payload = json.dumps(ack, allow_nan=False).encode()
    except ValueError:  # NaN, infinities: not JSON (test_http_ack_garbage_is_ignored)
        return
    fut: asyncio.Future[Outcome] = _LOOP.create_future()
    fake = SimpleNamespace(_waiting={"ctx": [fut]})
    DatonisMqttUplink._settle(fake, payload)  # type: ignore[arg-type]
    settles = context in ("ctx", wire.PARSE_ERROR) and _as_int(code) is not None
    assert fut.done() == settles
    if settles:
        outcome = fut.result()
        assert isinstance(outcome, Outcome) and isinstance(outcome.status, int)
        if abs(_as_int(code) or 0) < 1 << 53:  # orjson reads a number past 64 bits as a float
            assert outcome.status == _as_int(code)
        assert isinstance(wire.ack_message(msg), str)


def _as_int(code: Any) -> int | None:
    try:
        return int(code)
    except (TypeError, ValueError, OverflowError):
        return None


@FAST
@given(payload=st.binary(max_size=120))
def test_http_ack_garbage_is_ignored(payload: bytes) -> None:
    fut: asyncio.Future[Outcome] = _LOOP.create_future()
    DatonisMqttUplink._settle(SimpleNamespace(_waiting={"ctx": [fut]}), payload)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "payload",
    [b'{"context":"ctx","http_code":1e999}', b'{"context":"ctx","http_code":-1e400}',
     b'{"context":"ctx","http_code":"1' + b"0" * 5000 + b'"}'],
)  # fmt: skip
def test_http_ack_with_an_infinite_or_huge_code_is_ignored(payload: bytes) -> None:
    fut: asyncio.Future[Outcome] = _LOOP.create_future()
    DatonisMqttUplink._settle(SimpleNamespace(_waiting={"ctx": [fut]}), payload)  # type: ignore[arg-type]
    assert not fut.done() or isinstance(fut.result(), Outcome)


# ---- MTConnect Streams ----------------------------------------------------------------------

_STREAMS = b"""<?xml version="1.0" encoding="UTF-8"?>
<MTConnectStreams xmlns="urn:mtconnect.org:MTConnectStreams:1.3">
<Header instanceId="17" firstSequence="1" lastSequence="9" nextSequence="10" bufferSize="64"/>
<Streams><DeviceStream name="m1" uuid="m1"><ComponentStream component="Axes" name="X">
<Samples><Position dataItemId="xp" sequence="3" timestamp="2026-11-26T06:07:48.893375Z">12.5</Position>
<PathPosition dataItemId="pp" sequence="4" timestamp="2026-11-26T06:07:49Z">1 2 3</PathPosition></Samples>
<Events><Execution dataItemId="ex" sequence="2" timestamp="2026-11-26T06:07:48Z">ACTIVE</Execution></Events>
<Condition><Warning dataItemId="tc" sequence="5" nativeCode="T1" timestamp="2026-11-26T06:07:50+01:00">hot</Warning></Condition>
</ComponentStream></DeviceStream></Streams></MTConnectStreams>"""


def _streams_or_refused(body: bytes) -> Streams | AgentError | None:
    try:
        return parse_streams(body)
    except BadDocument as exc:
        assert str(exc)
        return None


def test_the_valid_streams_document_reads_every_category() -> None:
    doc = parse_streams(_STREAMS)
    assert isinstance(doc, Streams)
    assert [(o.sequence, o.value) for o in doc.observations] == [
        (2, "ACTIVE"), (3, 12.5), (4, [1.0, 2.0, 3.0]), (5, "warning")
    ]  # fmt: skip


@FAST
@given(edits=_edits)
def test_mutated_streams_documents_read_or_are_refused_clearly(
    edits: list[tuple[int, int, int]],
) -> None:
    _streams_or_refused(_mutated(_STREAMS, edits))


_attr = st.text(st.characters(codec="utf-8", exclude_characters='"<&'), max_size=30)


@FAST
@given(sequence=_attr, timestamp=_attr, text=st.text(max_size=40).map(lambda t: t.replace("<", "")))
def test_streams_with_random_attributes_read_or_are_refused_clearly(
    sequence: str, timestamp: str, text: str
) -> None:
    body = _STREAMS.replace(b'sequence="3"', f'sequence="{sequence}"'.encode()).replace(
        b'"2026-11-26T06:07:48.893375Z">12.5', f'"{timestamp}">{text.replace("&", "")}'.encode()
    )
    _streams_or_refused(body)


_HOSTILE_DOCUMENTS = [  # (document, read: True / refused: False)
    (b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa">]><x>&a;</x>', False),
    (_STREAMS.replace(b"<Streams>", b"<Streams>" + b"<a>" * 300_000), False),
    (_STREAMS.replace(b"ACTIVE", b"&#xD800;"), False),
    (_STREAMS.replace(b"ACTIVE", b"&undefined;"), False),
    (_STREAMS.replace(b'sequence="2"', b'sequence="' + b"9" * 5000 + b'"'), False),
    (_STREAMS.replace(b"2026-11-26T06:07:48Z", b"9999-12-31T23:59:59-23:59"), True),
    (_STREAMS.replace(b"2026-11-26T06:07:48Z", b"0001-01-01T00:00:00+23:59"), True),
    (_STREAMS.replace(b"2026-11-26T06:07:48Z", b"2026-13-26T06:07:48Z"), False),
    (b"\xff\xfe<\x00x\x00", False),
    (b"", False),
]


@pytest.mark.parametrize(("body", "read"), _HOSTILE_DOCUMENTS, ids=range(len(_HOSTILE_DOCUMENTS)))
def test_hostile_streams_documents_are_refused_or_read(body: bytes, read: bool) -> None:
    doc = _streams_or_refused(body)
    assert (doc is not None) == read
    if read:
        assert isinstance(doc, Streams) and len(doc.observations) == 4


# ---- the platform simulator's MQTT side ------------------------------------------------------


def _sim_handle(payload: bytes, compressed: bool = False) -> list[int]:
    from datonis_edge.platform_sim.app import SimState
    from datonis_edge.platform_sim.mqtt_side import MqttSide

    side = MqttSide(SimState(keys={AK: SK}), "mqtt://127.0.0.1:1")
    codes: list[int] = []
    side._ack = lambda _cid, _ctx, code, *_a: codes.append(code)  # type: ignore[method-assign]
    side._handle("client", "event", payload, compressed)
    return codes


@settings(max_examples=100, deadline=None)
@given(body=_json, edits=_edits)
def test_sim_answers_every_envelope_with_one_ack(
    body: Any, edits: list[tuple[int, int, int]]
) -> None:
    try:
        raw = json.dumps({"events": [{"data": body}]}, separators=(",", ":")).encode()
    except ValueError:
        return
    _, payload = wire.envelope(raw, AK, SK)
    assert len(_sim_handle(payload)) == 1
    assert len(_sim_handle(_mutated(payload, edits))) == 1
    assert len(_sim_handle(_mutated(payload, edits), compressed=True)) == 1


def test_sim_answers_deeply_nested_garbage_with_a_parse_error() -> None:
    assert _sim_handle(b"[" * 100_000 + b"]" * 100_000) == [500]
