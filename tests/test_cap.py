"""The outbox cap during an outage: drop_oldest evicts (counted, alerted); reject_new answers 503."""

from __future__ import annotations

import httpx
import pytest

from helpers import base_config, free_port, wait_until


@pytest.mark.parametrize("policy", ["drop_oldest", "reject_new"])
def test_outbox_cap_applies_its_policy_and_counts_every_point(policy, gateway_factory) -> None:
    port = free_port()
    config = base_config(None)  # the platform is unreachable: an outage
    config["outbox"] = {"max_bytes": 65_536, "policy": policy}
    config["services"] = [
        {"name": "push", "type": "http_listener", "host": "127.0.0.1", "port": port}
    ]
    gw = gateway_factory(config).start()
    url = f"http://127.0.0.1:{port}/api/v3/things/event.json"
    answers: dict[int, int] = {}
    for i in range(60):
        events = [
            {
                "thing_key": "m",
                "timestamp": i * 10 + j,
                "data": {"seq": i * 10 + j, "pad": "x" * 200},
            }
            for j in range(10)
        ]
        r = httpx.post(url, json={"events": events})
        answers[r.status_code] = answers.get(r.status_code, 0) + 1
        if r.status_code == 503:
            assert "reject_new" in r.json()["reason"] and r.headers["retry-after"]
    st = gw.status()
    c = st["counters"]
    assert st["outbox"]["bytes"] <= 65_536
    if policy == "drop_oldest":
        assert answers == {200: 60}
        assert c["evicted"] > 0 and c["rejected"] == 0
        assert c["accepted"] == 600 == c["evicted"] + st["outbox"]["pending"]
        wait_until(
            lambda: any("evicted" in a["message"] for a in gw.status()["alerts"]),
            what="eviction alert",
        )
    else:
        assert answers[503] > 0 and answers[200] > 0
        assert c["evicted"] == 0
        assert c["rejected"] == answers[503] * 10
        assert c["accepted"] == answers[200] * 10 == st["outbox"]["pending"]
    assert st["uplinks"][0]["state"] == "retrying"
    assert "connection error" in st["forwarder"]["last_error"]
