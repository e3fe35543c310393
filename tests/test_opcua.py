"""The opcua adapter against a real asyncua server: subscription and polling, several data
types, source timestamps, a server restart, Basic256Sha256 SignAndEncrypt with a user."""

from __future__ import annotations

import time

import pytest

from helpers import OpcUaServer, base_config, wait_until

NS = "ns=2"
TAGS = [
    {"name": "temperature", "node_id": f"{NS};s=Machine1.Temperature"},
    {"name": "count", "nodeId": f"{NS};i=1001"},
    {"name": "running", "node_id": f"{NS};s=Machine1.Running"},
    {"name": "label", "node_id": f"{NS};s=Machine1.Name"},
]


def _config(platform, server: OpcUaServer, **opts):
    config = base_config(platform)
    config["services"] = [
        {
            "name": "ua",
            "type": "opcua",
            "endpoint": server.endpoint,
            "scan_interval_ms": 100,
            "tags": TAGS,
            "timeout_ms": 2000,
            "retry_max_backoff_ms": 1000,
            "things": [
                {
                    "thing_key": "press-7",
                    "metrics": [{"name": t["name"], "tag": t["name"]} for t in TAGS],
                }
            ],
            **opts,
        }
    ]
    return config


def _latest(platform, metric: str) -> list:
    return [e for e in platform.events() if metric in e["data"]]


@pytest.mark.parametrize("mode", ["subscription", "polling"])
def test_opcua_values_of_several_types_reach_the_platform(
    mode, platform, gateway_factory, tmp_path
) -> None:
    server = OpcUaServer(tmp_path).start()
    try:
        gw = gateway_factory(_config(platform, server, mode=mode)).start()
        wait_until(
            lambda: gw.status()["services"][0]["details"].get("mode_in_use") == mode,
            what=f"{mode} in use",
        )
        counts = wait_until(
            lambda: (c := _latest(platform, "count")) and len(c) >= 5 and c,
            what="count changes delivered",
        )
        values = [e["data"]["count"] for e in counts]
        assert all(isinstance(v, int) for v in values) and values == sorted(values)
        merged: dict = {}
        for e in platform.events():
            merged.update(e["data"])
        assert isinstance(merged["temperature"], float) and 21.5 <= merged["temperature"] <= 22.5
        assert merged["running"] is True and merged["label"] == "Press 7"
        now = time.time() * 1000
        assert all(
            now - 60_000 < e["timestamp"] <= now + 1000 for e in counts
        )  # the source timestamp
    finally:
        server.stop()


def test_opcua_server_restart_resumes_delivery(platform, gateway_factory, tmp_path) -> None:
    server = OpcUaServer(tmp_path).start()
    try:
        gw = gateway_factory(_config(platform, server)).start()
        wait_until(lambda: len(_latest(platform, "count")) >= 3, what="first deliveries")
        server.stop()
        wait_until(
            lambda: gw.status()["services"][0]["state"] == "disconnected", what="loss reported"
        )
        assert gw.status()["services"][0]["last_error"]
        before = len(_latest(platform, "count"))
        server.start()
        wait_until(
            lambda: len(_latest(platform, "count")) >= before + 3,
            timeout=30,
            what="delivery after the restart",
        )
        st = gw.status()["services"][0]
        assert st["state"] == "connected" and st["details"]["mode_in_use"] == "subscription"
    finally:
        server.stop()


def test_opcua_basic256sha256_sign_and_encrypt_with_user(
    platform, gateway_factory, tmp_path
) -> None:
    server = OpcUaServer(
        tmp_path, "--secure", str(tmp_path / "server-pki"), "--user", "edge", "--password", "s3cret"
    ).start()
    try:
        config = _config(
            platform,
            server,
            security_policy="Basic256Sha256",
            security_mode="SignAndEncrypt",
            username="edge",
            password="s3cret",
        )
        gw = gateway_factory(config).start()
        wait_until(lambda: len(_latest(platform, "count")) >= 3, timeout=30, what="secure delivery")
        pki = gw.datadir / "pki" / "opcua" / "ua"
        assert (pki / "client-cert.der").stat().st_size > 0
        assert (pki / "client-key.pem").stat().st_mode & 0o077 == 0  # the key is private
        assert "password" not in str(gw.status())  # no secret in the status
    finally:
        server.stop()


def test_opcua_wrong_password_is_reported_not_fatal(platform, gateway_factory, tmp_path) -> None:
    server = OpcUaServer(tmp_path, "--user", "edge", "--password", "s3cret").start()
    try:
        gw = gateway_factory(_config(platform, server, username="edge", password="wrong")).start()
        st = wait_until(
            lambda: (s := gw.status()["services"][0])["last_error"] and s, what="error reported"
        )
        assert st["state"] == "disconnected"
        assert gw.status()["role"] == "master"  # the gateway keeps running
    finally:
        server.stop()
