"""Reconnect: once the platform or broker is back, the first batch goes out within about a
second, however far the retry backoff had grown; a platform that answers "not now", or takes a
connection and drops it, is not hammered."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

from helpers import PlatformSim, base_config, simulator_service, wait_until

OUTAGE_S = 20  # long enough for the batch backoff (capped at 30 s below) to pass 5 s
BOUND_S = 5.0  # generous: the aim is ~1 s


def _delivered(gw) -> int:  # type: ignore[no-untyped-def]
    return gw.status()["counters"].get("delivered", 0)


def _config(endpoint: str, **cloud: object) -> dict:
    config = base_config(None, endpoint=endpoint, retry_max_backoff_ms=30_000, **cloud)
    config["services"] = [simulator_service("press-1", scan_interval_ms=200)]
    return config


def _outage_then_first_delivery(gw, stop, start) -> float:  # type: ignore[no-untyped-def]
    """Stop the far side while readings keep arriving, restart it: seconds to a delivery."""
    wait_until(lambda: _delivered(gw) > 0, what="a first delivery")
    stop()
    time.sleep(OUTAGE_S)
    before = _delivered(gw)
    start()
    back = time.monotonic()
    wait_until(lambda: _delivered(gw) > before, timeout=30, what="a delivery after the return")
    return time.monotonic() - back


def test_first_delivery_soon_after_the_platform_returns(
    platform, gateway_factory, tmp_path: Path
) -> None:
    config = _config(platform.url, access_key=platform.access_key, secret_key=platform.secret_key)
    gw = gateway_factory(config).start()
    sims = [platform]

    def restart() -> None:
        sims.append(PlatformSim(tmp_path, port=platform.port).start())

    try:
        took = _outage_then_first_delivery(gw, platform.stop, restart)
        assert took < BOUND_S, f"first delivery {took:.1f} s after the platform came back"
        log = gw.proc.log() if gw.proc else ""
        assert log.count("events stay in the outbox") == 1, log
        assert log.count("answers again") == 1, log
    finally:
        if len(sims) > 1:
            sims[-1].stop()


def test_first_delivery_soon_after_the_broker_returns(mosquitto, gateway_factory) -> None:
    config = _config(
        f"mqtt://127.0.0.1:{mosquitto.port}", protocol="mqtt_broker", topic="edge/events"
    )
    gw = gateway_factory(config).start()
    took = _outage_then_first_delivery(gw, mosquitto.stop, mosquitto.start)
    assert took < BOUND_S, f"first delivery {took:.1f} s after the broker came back"
    log = gw.proc.log() if gw.proc else ""
    assert log.count("events stay in the outbox") == 1, log
    assert log.count("answers again") == 1, log


def test_a_platform_answering_500_keeps_its_backoff(platform, gateway_factory) -> None:
    config = _config(
        platform.url,
        access_key=platform.access_key,
        secret_key=platform.secret_key,
        max_inflight_batches=1,
    )
    gw = gateway_factory(config).start()
    wait_until(lambda: _delivered(gw) > 0, what="a first delivery")
    platform.fault(status=500, count=-1)
    time.sleep(8)
    posts = [r for r in platform.requests() if r["status"] == 500]
    # backoff 0.5, 1, 2, 4 s (jittered down to half): at most about 7 tries in 8 s, not 16
    assert 1 <= len(posts) <= 8, posts


def test_a_platform_that_drops_every_connection_is_not_hammered(gateway_factory) -> None:
    """It takes TCP connections (so a probe would say "reachable") but never answers: the
    probe must not turn the backoff into a retry loop."""
    server = socket.create_server(("127.0.0.1", 0))
    accepted = 0
    stop = threading.Event()

    def serve() -> None:
        nonlocal accepted
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            accepted += 1
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        port = server.getsockname()[1]
        gw = gateway_factory(_config(f"http://127.0.0.1:{port}", max_inflight_batches=1)).start()
        wait_until(lambda: accepted > 0, what="a first attempt")
        time.sleep(8)
        assert accepted <= 10, f"{accepted} connections in 8 s"
        assert gw.status()["counters"].get("delivered", 0) == 0
    finally:
        stop.set()
        thread.join(5)
        server.close()
