"""sd_notify: READY once serving, WATCHDOG pings from the event loop, on a real unix socket."""

from __future__ import annotations

import socket
from pathlib import Path

from helpers import EDGE, Proc, base_config, free_port, wait_until


def test_the_gateway_tells_systemd_it_is_ready_and_pings_the_watchdog(
    platform, tmp_path: Path
) -> None:
    import yaml

    address = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(address))
    sock.settimeout(10)
    config = tmp_path / "edge.yaml"
    config.write_text(yaml.safe_dump(base_config(platform)))
    proc = Proc(
        [
            EDGE,
            "run",
            "--datadirpath",
            str(tmp_path / "d"),
            "--http-port",
            str(free_port()),
            "--http-host",
            "127.0.0.1",
        ],
        tmp_path / "gw.log",
        env={
            "NOTIFY_SOCKET": str(address),
            "WATCHDOG_USEC": "400000",
            "DATONIS_EDGE_CONFIG": str(config),
        },
    ).start()
    try:
        messages: list[str] = []
        wait_until(
            lambda: (
                messages.append(sock.recv(1024).decode())
                or sum("WATCHDOG=1" in m for m in messages) >= 3
            ),
            what="READY and three watchdog pings",
        )
        assert any(m.startswith("READY=1") for m in messages)
        assert messages.index(next(m for m in messages if m.startswith("READY=1"))) <= 1
    finally:
        proc.stop()
        sock.close()
