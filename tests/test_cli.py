"""The faults a new user meets in the CLI: log options, `status` on a dead master, commands on a
path that is no data directory, and a second instance that brings a different config."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
import yaml
from typer.testing import CliRunner

from datonis_edge.cli import app
from datonis_edge.logs import JsonFormatter, OnceLogger
from helpers import EDGE, Proc, base_config, free_port, simulator_service, wait_until


def edge(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [EDGE, *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


def _config(**cloud) -> dict:
    config = base_config(None, **cloud)
    config["services"] = [simulator_service("press-1", scan_interval_ms=200)]
    return config


# ---------------------------------------------------------------- log options


@pytest.mark.parametrize(
    ("args", "env", "expected"),
    [
        (["--log-level", "verbose"], {}, "--log-level 'verbose' is not a log level"),
        ([], {"DATONIS_EDGE_LOG_LEVEL": "trace"}, "--log-level 'trace' is not a log level"),
        (["--log-format", "xml"], {}, "--log-format 'xml' is not a log format; use one of text"),
    ],
    ids=["flag", "env", "format"],
)
def test_an_unknown_log_level_or_format_exits_2_with_the_allowed_ones(
    tmp_path: Path, args: list[str], env: dict[str, str], expected: str
) -> None:
    result = CliRunner().invoke(app, ["run", "--datadirpath", str(tmp_path / "d"), *args], env=env)
    assert result.exit_code == 2
    assert result.stderr.startswith(f"error: {expected}")
    if "level" in expected:
        assert "debug, info, warning, error, critical" in result.stderr
    assert not (tmp_path / "d").exists()  # refused before touching anything


def test_log_format_json_writes_one_object_per_line(tmp_path: Path) -> None:
    config = tmp_path / "edge.yaml"
    config.write_text(yaml.safe_dump(_config()))
    port = free_port()
    gw = Proc(
        [EDGE, "run", "--datadirpath", str(tmp_path / "d"), "--http-port", str(port)],
        tmp_path / "gw.log",
        env={
            "DATONIS_EDGE_CONFIG": str(config),
            "DATONIS_EDGE_LOG_FORMAT": "json",
            "DATONIS_EDGE_HTTP_HOST": "127.0.0.1",
        },
    ).start()
    try:
        wait_until(lambda: "master: epoch 1" in gw.log(), what="the master's log line")
    finally:
        assert gw.stop() == 0
    lines = [orjson.loads(line) for line in gw.log().splitlines() if line.strip()]
    assert len(lines) >= 3
    for line in lines:
        assert {"time", "level", "logger", "message"} <= line.keys()
        assert line["time"].endswith("+00:00") and "T" in line["time"]
    started = next(x for x in lines if x["message"].startswith("master: epoch 1"))
    assert started["level"] == "info" and started["logger"] == "datonis_edge.supervisor"


def test_with_json_logs_a_start_error_is_a_json_record_too(tmp_path: Path) -> None:
    config = tmp_path / "edge.yaml"
    config.write_text(yaml.safe_dump(_config()))
    with socket_taken() as port:
        out = subprocess.run(
            [EDGE, "run", "--datadirpath", str(tmp_path / "d"), "--http-port", str(port)],
            env={
                **os.environ,
                "DATONIS_EDGE_CONFIG": str(config),
                "DATONIS_EDGE_LOG_FORMAT": "json",
                "DATONIS_EDGE_HTTP_HOST": "127.0.0.1",
            },
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert out.returncode == 2
    records = [orjson.loads(line) for line in out.stderr.splitlines() if line.strip()]
    error = records[-1]
    assert error["level"] == "error" and "already in use" in error["message"], records


@contextlib.contextmanager
def socket_taken() -> Iterator[int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        yield s.getsockname()[1]


def test_a_json_log_line_stays_one_line_whatever_the_message_holds() -> None:
    record = logging.makeLogRecord({"msg": "topic a\u2028b\u0085c\u2029d", "levelname": "WARNING"})
    line = JsonFormatter().format(record)
    assert len(line.splitlines()) == 1
    assert orjson.loads(line)["message"] == "topic a\u2028b\u0085c\u2029d"


def test_json_lines_carry_the_extra_fields() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("test.json")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("batch %s declined", "b-1", extra={"batch_id": "b-1", "status": 401})
    finally:
        logger.removeHandler(handler)
    line = orjson.loads(stream.getvalue())
    assert line["message"] == "batch b-1 declined" and line["level"] == "warning"
    assert line["batch_id"] == "b-1" and line["status"] == 401 and line["logger"] == "test.json"


def test_once_logger_logs_a_change_once_then_once_per_interval_with_the_count(caplog) -> None:
    now = [0.0]
    once = OnceLogger(logging.getLogger("test.once"), interval_s=60, clock=lambda: now[0])
    caplog.set_level(logging.INFO, "test.once")
    assert once.log("device:plc", "device %s does not answer", "plc")
    for _ in range(5):
        now[0] += 10
        assert not once.log("device:plc", "device %s does not answer", "plc")
    now[0] += 15  # 65 s after the first line
    assert once.log("device:plc", "device %s does not answer", "plc")
    assert once.resolve("device:plc", "device %s answers again", "plc")
    assert not once.resolve("device:plc", "device %s answers again", "plc")  # once only
    assert once.log("device:plc", "device %s does not answer", "plc")  # a new change: at once
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("WARNING", "device plc does not answer"),
        ("WARNING", "device plc does not answer (5 more times in the last 65 s)"),
        ("INFO", "device plc answers again"),
        ("WARNING", "device plc does not answer"),
    ]


# ---------------------------------------------------------------- status


def test_status_exits_0_on_a_live_master_and_1_once_it_is_killed(gateway_factory, tmp_path) -> None:
    gw = gateway_factory(_config(), name="status").start()
    live = edge("status", "--datadirpath", str(gw.datadir))
    assert live.returncode == 0, live.stdout + live.stderr
    assert f"master:         {gw.name} on " in live.stdout

    gw.kill()
    dead = edge("status", "--datadirpath", str(gw.datadir))
    assert dead.returncode == 1
    assert f"no live master: the last one, {gw.name} on " in dead.stdout
    assert "stopped (last heartbeat" in dead.stdout and "the lock is free" in dead.stdout


def test_status_of_a_hung_master_that_still_holds_the_lock_is_no_live_master(
    gateway_factory,
) -> None:
    gw = gateway_factory(_config(), name="hung").start()
    assert gw.proc and gw.proc.p
    gw.proc.signal(signal.SIGSTOP)
    try:
        out = wait_until(
            lambda: (r := edge("status", "--datadirpath", str(gw.datadir))).returncode == 1 and r,
            15,
            "the heartbeat to go stale",
        )
    finally:
        gw.proc.signal(signal.SIGCONT)
    assert "holds the lock but its last heartbeat" in out.stdout and "hung" in out.stdout


def test_status_of_a_data_directory_where_no_master_ran_exits_1(tmp_path: Path) -> None:
    (tmp_path / "d" / "config").mkdir(parents=True)
    out = edge("status", "--datadirpath", str(tmp_path / "d"))
    assert out.returncode == 1
    assert "no live master: none has run yet" in out.stdout
    assert not (tmp_path / "d" / "ha").exists()  # status only looks


@pytest.mark.parametrize(
    "command",
    [["status"], ["declined", "list"], ["declined", "replay"], ["declined", "purge", "--yes"]],
    ids=["status", "list", "replay", "purge"],
)
@pytest.mark.parametrize("what", ["missing", "empty", "file"])
def test_commands_on_a_path_that_is_no_data_directory_exit_2(
    tmp_path: Path, command: list[str], what: str
) -> None:
    path = tmp_path / "not-data"
    if what == "empty":
        path.mkdir()
    elif what == "file":
        path.write_text("x")
    out = edge(*command, "--datadirpath", str(path))
    assert out.returncode == 2, out.stdout + out.stderr
    assert out.stderr.startswith(f"error: {path} is not a datonis-edge data directory (")
    assert "Traceback" not in out.stderr and out.stdout == ""
    assert what != "missing" or not path.exists()


# ---------------------------------------------------------------- a second, different config


def test_a_second_instance_with_a_different_config_is_refused_while_the_master_runs(
    gateway_factory, tmp_path: Path
) -> None:
    first = gateway_factory(_config(), datadir=tmp_path / "shared", name="first").start()
    stored = (tmp_path / "shared" / "config" / "edge.yaml").read_bytes()
    other = _config(bulk_max_elements=7)
    second = gateway_factory(other, datadir=tmp_path / "shared", name="second")
    second.start(wait_master=False)
    assert second.proc and second.proc.p
    assert second.proc.p.wait(30) == 2
    log = second.proc.log()
    assert (
        f"error: {tmp_path / 'shared'} already has a configuration that differs from "
        f"{second.config_path}, and {first.name} on " in log
    )
    assert "is master running it; to change the configuration stop every instance" in log
    assert "Traceback" not in log
    assert (tmp_path / "shared" / "config" / "edge.yaml").read_bytes() == stored

    # the same config is no conflict: it joins as standby
    same = gateway_factory(None, datadir=tmp_path / "shared", name="same")
    same.config_path = first.config_path
    same.start(wait_master=False).wait_role("standby")

    # with no master running, a different config replaces the stored one (kept as .bak)
    same.stop()
    first.stop()
    second.starts = 0
    second.start()
    assert (tmp_path / "shared" / "config" / "edge.yaml").read_bytes() == (
        second.config_path.read_bytes()
    )
    assert (tmp_path / "shared" / "config" / "edge.yaml.bak").read_bytes() == stored
    assert "replacing a different configuration (kept as edge.yaml.bak)" in second.proc.log()


def test_running_as_root_warns_once_that_new_files_will_be_root_owned(
    gateway_factory, tmp_path: Path
) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    gw = gateway_factory(_config(), name="root").start()
    gw.stop()
    assert gw.proc
    assert gw.proc.log().count("running as root: files created in") == 1
