"""A clean stop (SIGTERM) is prompt even when the platform is down or hangs (docs/failover.md:
the batches on the wire get 2 s at most): retries are abandoned, requests on the wire are
cancelled, and nothing is lost — after a restart every accepted reading is delivered."""

from __future__ import annotations

import signal
import socket
import threading
import time
from pathlib import Path

import httpx

from helpers import PlatformSim, base_config, free_port, wait_until

BOUND_S = 5.0  # generous: about 2 s is expected (docs/failover.md)


class HangingPlatform:
    """Accepts connections and reads the requests, never answers: a platform that hangs."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_server(("127.0.0.1", port))
        self.requests = 0
        self._conns: list[socket.socket] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self._conns.append(conn)
            threading.Thread(target=self._read, args=(conn,), daemon=True).start()

    def _read(self, conn: socket.socket) -> None:
        try:
            while data := conn.recv(65536):
                if b"POST /api/v3/things/event.json" in data:
                    self.requests += 1
        except OSError:
            pass

    def close(self) -> None:
        self.sock.close()
        for conn in self._conns:
            conn.close()


def _config(port: int, listener: int, **cloud):
    config = base_config(None, endpoint=f"http://127.0.0.1:{port}", **cloud)
    config["services"] = [
        {"name": "push", "type": "http_listener", "host": "127.0.0.1", "port": listener}
    ]
    return config


def _post_readings(listener: int, count: int) -> set[int]:
    url = f"http://127.0.0.1:{listener}/api/v3/things/event.json"
    for i in range(count):
        r = httpx.post(url, json={"thing_key": "m1", "data": {"seq": i}})
        assert r.status_code == 200, r.text
    return set(range(count))


def _sigterm_and_time(gw) -> tuple[int, float]:
    assert gw.proc and gw.proc.p
    started = time.monotonic()
    gw.proc.signal(signal.SIGTERM)
    code = gw.proc.p.wait(30)
    return code, time.monotonic() - started


def _restart_and_check_delivery(gw, tmp_path: Path, port: int, accepted: set[int]) -> None:
    sim = PlatformSim(tmp_path, access_key="ak", secret_key="sk", port=port).start()
    try:
        gw.start()
        wait_until(
            lambda: accepted <= {e["data"]["seq"] for e in sim.events()},
            what="every accepted reading delivered after the restart",
        )
    finally:
        gw.stop()
        sim.stop()


def test_sigterm_while_the_platform_hangs_exits_promptly_and_loses_nothing(
    gateway_factory, tmp_path
) -> None:
    port, listener = free_port(), free_port()
    platform = HangingPlatform(port)
    # a request waits up to 30 s for its answer: only the stop's own bound can end it
    gw = gateway_factory(
        _config(port, listener, request_timeout_ms=30_000, heartbeat_interval_ms=200)
    ).start()
    try:
        accepted = _post_readings(listener, 30)
        wait_until(lambda: platform.requests >= 1, what="a batch on the wire")
        code, took = _sigterm_and_time(gw)
    finally:
        platform.close()
    print(f"\nclean stop with the platform hanging: {took:.2f} s")
    assert code == 0, gw.proc.log()[-2000:]
    assert took < BOUND_S
    log = gw.proc.log()
    assert "Traceback" not in log
    _restart_and_check_delivery(gw, tmp_path, port, accepted)


def test_sigterm_while_the_platform_is_down_exits_promptly_and_loses_nothing(
    gateway_factory, tmp_path
) -> None:
    port, listener = free_port(), free_port()  # nothing listens on `port`: refused
    gw = gateway_factory(_config(port, listener, retry_max_backoff_ms=60_000)).start()
    accepted = _post_readings(listener, 30)
    # by the fourth retry the forwarder waits seconds between tries
    wait_until(
        lambda: gw.status()["forwarder"]["counters"].get("retries", 0) >= 4,
        what="the forwarder retrying with a growing backoff",
    )
    code, took = _sigterm_and_time(gw)
    print(f"\nclean stop with the platform down: {took:.2f} s")
    assert code == 0, gw.proc.log()[-2000:]
    assert took < BOUND_S
    assert "Traceback" not in gw.proc.log()
    _restart_and_check_delivery(gw, tmp_path, port, accepted)
