"""The fixture agent is held to the standard: every kind of document it serves validates
against the official MTConnect 2.0 schemas (tests/schemas/mtconnect/, lxml XMLSchema), so the
adapter is tested against MTConnect rather than against itself."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from lxml import etree

from servers.mtconnect_fixture import MtconnectAgentProc

SCHEMAS = Path(__file__).parent / "schemas" / "mtconnect"


@pytest.fixture(scope="module")
def schemas() -> dict[str, etree.XMLSchema]:
    return {
        kind: etree.XMLSchema(etree.parse(str(SCHEMAS / f"MTConnect{kind}_2.0_1.0.xsd")))
        for kind in ("Devices", "Streams", "Error")
    }


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[MtconnectAgentProc]:
    a = MtconnectAgentProc(tmp_path, "--devices", "2", "--samples", "3", "--buffer", "64").start()
    yield a
    a.stop()


def _valid(schema: etree.XMLSchema, body: bytes) -> None:
    doc = etree.fromstring(body)
    assert schema.validate(doc), [str(e) for e in schema.error_log][:5]


def test_every_document_of_the_fixture_agent_validates(agent, schemas) -> None:
    agent.set({
        "d0_x0": 12.5, "d0_exec": "ACTIVE", "d0_mode": "MANUAL", "d0_program": "O42 <&>",
        "d0_parts": "17", "d1_avail": "UNAVAILABLE", "d1_x2": "UNAVAILABLE",
        "d0_system": {"level": "fault", "native_code": "E12", "text": "Spindle overtemp"},
        "d0_temp_cond": {"level": "warning", "text": "warm"},
        "d1_system": {"level": "unavailable"},
    })  # fmt: skip
    bodies = {
        "Devices": [agent.get("/probe"), agent.get("/VMC-2/probe")],
        "Streams": [
            agent.get("/current"),
            agent.get("/VMC-1/current"),
            agent.get("/sample", **{"from": 1, "count": 1000}),
            agent.get("/sample", **{"from": 5, "count": 3}),
        ],
        "Error": [agent.get("/sample", **{"from": 100_000})],
    }
    assert bodies["Error"][0].status_code == 400
    for kind, answers in bodies.items():
        for answer in answers:
            _valid(schemas[kind], answer.content)
    # a long-poll part is a Streams document too
    with agent.http.stream(
        "GET", "/sample", params={"from": 1, "interval": 100, "heartbeat": 500}
    ) as r:
        assert r.headers["content-type"].startswith("multipart/x-mixed-replace")
        raw = b""
        for chunk in r.iter_bytes():
            raw += chunk
            if raw.count(b"</MTConnectStreams>") >= 1:
                break
    part = raw[raw.index(b"<?xml") : raw.index(b"</MTConnectStreams>") + 19]
    _valid(schemas["Streams"], part)


def test_after_a_buffer_overrun_and_a_restart_documents_still_validate(agent, schemas) -> None:
    for i in range(100):  # the buffer holds 64
        agent.set({"d0_x0": float(i)})
    first = agent.stats()["first_sequence"]
    assert first > 1
    _valid(schemas["Streams"], agent.get("/sample", **{"from": first, "count": 10}).content)
    _valid(schemas["Error"], agent.get("/sample", **{"from": 1}).content)
    agent.restart()
    _valid(schemas["Streams"], agent.get("/current").content)
    _valid(schemas["Devices"], agent.get("/probe").content)


def test_the_schemas_are_strict_enough_to_catch_a_wrong_document(agent, schemas) -> None:
    """Not a vacuous check: a value outside the standard's vocabulary is refused."""
    agent.set({"d0_exec": "ACTIVE"})
    body = agent.get("/current").content.replace(b">ACTIVE<", b">SPINNING<")
    assert not schemas["Streams"].validate(etree.fromstring(body))
    body = agent.get("/probe").content.replace(b'category="SAMPLE"', b'category="READING"')
    assert not schemas["Devices"].validate(etree.fromstring(body))


def test_every_document_served_in_the_tests_is_checked(tmp_path: Path) -> None:
    """The fixture validates what it serves (MtconnectAgentProc's default) and its stop()
    fails a test that made it serve an invalid document: so every test of the adapter runs
    against schema-valid MTConnect, not just this file's samples."""
    agent = MtconnectAgentProc(tmp_path).start()
    agent.set({"d0_exec": "SPINNING"})  # not an Execution value of the standard
    agent.get("/current")
    assert agent.stats()["invalid"] == 1
    with pytest.raises(AssertionError, match="served 1 invalid documents"):
        agent.stop()
