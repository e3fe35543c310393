"""ThingsBoard IoT Gateway 3.8 for the peer bench: its own venv, its config, its process.

The venv lives in `~/.cache/datonis-edge-bench/tb-venv` (or `$DATONIS_EDGE_BENCH_CACHE/tb-venv`)
and is reused when it holds the pinned version. The gateway is started through `tb_launch.py`,
which switches off its update check and any connection beyond loopback (see there).

Pipeline: its MQTT connector subscribes to `plant/+/data` on the southbound broker (QoS 1, JSON
converter, the device name from the topic, `ts` from the payload); sqlite storage; "the
ThingsBoard server" is the northbound broker, where it publishes `v1/gateway/telemetry` and asks
for its session limits over RPC (the sink answers, see sink.py).
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

VERSION = "3.8.5"
HERE = Path(__file__).resolve().parent
CACHE = Path(os.environ.get("DATONIS_EDGE_BENCH_CACHE", Path.home() / ".cache/datonis-edge-bench"))
VENV = CACHE / "tb-venv"
PYTHON = VENV / "bin" / "python"


def ensure_venv() -> Path:
    """The venv's python, with thingsboard-gateway VERSION installed (pip from the registry)."""
    if PYTHON.exists() and _installed() == VERSION:
        return PYTHON
    print(f"installing thingsboard-gateway {VERSION} into {VENV} ...", file=sys.stderr, flush=True)
    CACHE.mkdir(parents=True, exist_ok=True)
    if not PYTHON.exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    subprocess.run(
        [str(PYTHON), "-m", "pip", "install", "-q", f"thingsboard-gateway=={VERSION}"],
        check=True,
    )
    if _installed() != VERSION:
        raise SystemExit(f"thingsboard-gateway {VERSION} did not install into {VENV}")
    return PYTHON


def _installed() -> str | None:
    out = subprocess.run(
        [
            str(PYTHON),
            "-c",
            "from importlib.metadata import version; print(version('thingsboard-gateway'))",
        ],
        capture_output=True,
        text=True,
    )
    return out.stdout.strip() if out.returncode == 0 else None


def connector(south_port: int) -> dict[str, Any]:
    def series(key: str, kind: str) -> dict[str, str]:
        return {"type": kind, "key": key, "value": f"${{{key}}}"}

    return {
        "broker": {
            "name": "southbound",
            "host": "127.0.0.1",
            "port": south_port,
            "clientId": "tb-gateway-bench",
            "version": 4,
            "maxMessageNumberPerWorker": 10,
            "maxNumberOfWorkers": 100,
            "sendDataOnlyOnChange": False,
            "security": {"type": "anonymous"},
        },
        "dataMapping": [
            {
                "topicFilter": "plant/+/data",
                "subscriptionQos": 1,
                "converter": {
                    "type": "json",
                    "deviceInfo": {
                        "deviceNameExpressionSource": "topic",
                        "deviceNameExpression": "(?<=plant/)(.*?)(?=/data)",
                        "deviceProfileExpressionSource": "constant",
                        "deviceProfileExpression": "default",
                    },
                    "sendDataOnlyOnChange": False,
                    "timeout": 60000,
                    "attributes": [],
                    "timeseries": [
                        series("seq", "integer"),
                        series("temperature", "integer"),
                        series("running", "boolean"),
                    ],
                },
            }
        ],
        "requestsMapping": {},
    }


def write_config(folder: Path, south_port: int, north_port: int) -> Path:
    """tb_gateway.json, the connector's mqtt.json and logs.json in `folder`; data in folder/data."""
    folder.mkdir(parents=True, exist_ok=True)
    general = {
        "thingsboard": {
            "host": "127.0.0.1",
            "port": north_port,
            "remoteShell": False,
            "remoteConfiguration": False,  # nothing to configure it from
            "latencyDebugMode": False,
            "statistics": {
                "enable": True,  # its default; sent as telemetry to the local broker
                "statsSendPeriodInSeconds": 60,
                "customStatsSendPeriodInSeconds": 3600,
            },
            "deviceFiltering": {"enable": False},
            "maxPayloadSizeBytes": 65536,
            "minPackSendDelayMS": 50,
            "minPackSizeToSend": 500,
            "checkConnectorsConfigurationInSeconds": 60,
            "handleDeviceRenaming": True,
            "security": {"type": "accessToken", "accessToken": "bench"},
            "qos": 1,
            "reportStrategy": {"type": "ON_RECEIVED"},
            "checkingDeviceActivity": {"checkDeviceInactivity": False},
        },
        "storage": {
            "type": "sqlite",
            "data_file_path": f"{folder / 'data'}/",
            "messages_ttl_check_in_hours": 1,
            "messages_ttl_in_days": 7,
            "max_read_records_count": 1000,
        },
        "grpc": {"enabled": False},
        "connectors": [{"type": "mqtt", "name": "southbound", "configuration": "mqtt.json"}],
    }
    (folder / "tb_gateway.json").write_text(json.dumps(general, indent=2))
    (folder / "mqtt.json").write_text(json.dumps(connector(south_port), indent=2))
    (folder / "logs.json").write_text(json.dumps(_logging(), indent=2))
    return folder


def _logging() -> dict[str, Any]:
    """Everything to stdout (the bench's log file): INFO for the core, WARNING for the chatty."""
    levels = {
        "service": "INFO",
        "tb_connection": "INFO",
        "storage": "INFO",
        "database": "WARNING",
        "connector": "WARNING",
        "converter": "WARNING",
        "extension": "WARNING",
    }
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
        "handlers": {
            "console": {
                "class": "logging.StreamHandler",
                "formatter": "plain",
                "stream": "ext://sys.stdout",
            }
        },
        "loggers": {
            name: {"handlers": ["console"], "level": level, "propagate": False}
            for name, level in levels.items()
        },
        "root": {"level": "ERROR", "handlers": ["console"]},
    }


def command(python: Path, strace_to: Path | None = None) -> list[str]:
    """The gateway's command line; with `strace_to`, under strace recording every connect and
    sendto of every thread (see beyond_loopback)."""
    tb = [str(python), str(HERE / "tb_launch.py")]
    if strace_to is None:
        return tb
    return ["strace", "-f", "-qq", "-e", "trace=connect,sendto,sendmsg", "-o", str(strace_to), *tb]


_ADDRESS = re.compile(r'inet_addr\("([^"]+)"\)|inet_pton\(AF_INET6, "([^"]+)"')


def beyond_loopback(strace_log: Path) -> list[str]:
    """The strace lines that name an IPv4/IPv6 address outside loopback."""
    found = []
    for line in strace_log.read_text(errors="replace").splitlines():
        for v4, v6 in _ADDRESS.findall(line):
            if not ipaddress.ip_address(v4 or v6).is_loopback:
                found.append(line.strip())
    return found


def env(folder: Path) -> dict[str, str]:
    return {**os.environ, "TB_GW_CONFIG_DIR": f"{folder}/", "PYTHONUNBUFFERED": "1"}
