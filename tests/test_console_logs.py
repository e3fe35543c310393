"""The in-memory log ring behind the console's Logs page: bounded in records and in bytes,
filtered by level and text, secrets masked; and `logs.setup` installs it."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from datonis_edge import logs


@pytest.fixture
def logger() -> Iterator[logging.Logger]:
    lg = logging.getLogger("datonis_edge.test_ring")
    lg.setLevel(logging.DEBUG)
    lg.propagate = False
    yield lg
    lg.handlers.clear()
    lg.propagate = True


def test_the_ring_keeps_the_newest_records_within_its_count(logger: logging.Logger) -> None:
    ring = logs.LogRing(max_records=5)
    logger.addHandler(ring)
    for i in range(12):
        logger.info("line %d", i)
    assert [ln.text.rsplit(" ", 1)[1] for ln in ring.recent()] == ["7", "8", "9", "10", "11"]
    assert ring.dropped == 7
    assert ring.bytes == sum(len(ln.text) for ln in ring.lines)


def test_the_ring_keeps_within_its_bytes_and_cuts_long_lines(logger: logging.Logger) -> None:
    ring = logs.LogRing(max_records=2000, max_bytes=2000, max_line=300)
    logger.addHandler(ring)
    for i in range(100):
        logger.warning("%d %s", i, "x" * 1000)
    assert ring.bytes <= 2000
    assert all(len(ln.text) == 300 for ln in ring.lines)
    assert len(ring.lines) == 2000 // 300
    assert ring.recent()[-1].text.split(": ", 1)[1].startswith("99 ")


def test_level_and_text_filters(logger: logging.Logger) -> None:
    ring = logs.LogRing()
    logger.addHandler(ring)
    logger.debug("polling plc-1")
    logger.info("master: epoch 3")
    logger.warning("device plc-1 does not answer")
    logger.error("uplink refused the keys")
    assert [ln.level for ln in ring.recent(logging.WARNING)] == ["WARNING", "ERROR"]
    assert [ln.level for ln in ring.recent(text="PLC-1")] == ["DEBUG", "WARNING"]
    assert [ln.level for ln in ring.recent(logging.INFO, "plc-1")] == ["WARNING"]
    assert ring.recent(text="nothing like it") == []


def test_secrets_that_slip_into_a_line_are_masked(logger: logging.Logger) -> None:
    ring = logs.LogRing()
    logger.addHandler(ring)
    logger.warning("cannot reach mqtts://edge:hunter22@broker:8883/x")
    logger.warning("bad config: secret_key=abc123 access_key: 'k-9' password=\"pw 1\"")
    text = "\n".join(ln.text for ln in ring.recent())
    for secret in ("hunter22", "abc123", "k-9", "pw 1"):
        assert secret not in text, text
    assert "mqtts://***@broker:8883/x" in text and "secret_key=***" in text


def test_a_traceback_is_kept_with_its_line(logger: logging.Logger) -> None:
    ring = logs.LogRing()
    logger.addHandler(ring)
    try:
        raise ValueError("boom")
    except ValueError:
        logger.exception("a part failed")
    (line,) = ring.recent()
    assert "a part failed" in line.text and "ValueError: boom" in line.text


def test_setup_installs_the_ring_once() -> None:
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    try:
        logs.setup("info")
        logs.setup("debug")
        assert root.handlers.count(logs.RING) == 1
        logging.getLogger("datonis_edge.somewhere").info("seen on the Logs page")
        assert logs.RING.recent(text="seen on the Logs page")
    finally:
        logging.captureWarnings(False)  # setup turned it on: later tests start without it
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
