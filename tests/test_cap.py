"""The outbox cap during an outage: drop_oldest evicts (counted, alerted); reject_new answers
503; and the cap counts what the files really take, so that the cap decides, not the disk."""

from __future__ import annotations

import httpx
import pytest

from datonis_edge.store.diskspace import file_bytes
from datonis_edge.store.outbox import DiskFull, Outbox, OutboxFull
from helpers import base_config, free_port, wait_until
from small_disk import tmpfs


@pytest.mark.parametrize("policy", ["drop_oldest", "reject_new"])
def test_outbox_cap_applies_its_policy_and_counts_every_point(policy, gateway_factory) -> None:
    port = free_port()
    config = base_config(None)  # the platform is unreachable: an outage
    config["outbox"] = {"max_bytes": 262_144, "policy": policy}
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
                "data": {"seq": i * 10 + j, "pad": "x" * 1000},
            }
            for j in range(10)
        ]
        r = httpx.post(url, json={"events": events})
        answers[r.status_code] = answers.get(r.status_code, 0) + 1
        if r.status_code == 503:
            assert "reject_new" in r.json()["reason"] and r.headers["retry-after"]
    st = gw.status()
    c = st["counters"]
    assert st["outbox"]["bytes"] <= 262_144
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


@pytest.mark.parametrize("policy", ["drop_oldest", "reject_new"])
async def test_the_cap_bounds_what_the_files_take_so_the_cap_decides_not_the_disk(
    policy, tmp_path
) -> None:
    """A 4 MiB cap on an 8 MiB filesystem: outbox.db + WAL stay under the cap (SQLite's
    overhead and the WAL included), the reserve comes on top, and the disk never fills."""
    cap = 4 << 20
    with tmpfs(tmp_path / "disk", "8m") as disk:
        outbox = Outbox(disk / "outbox", max_bytes=cap, policy=policy)
        outbox.open()
        try:
            refusal = None
            for i in range(1500):  # ~15 MB offered, almost four times the cap
                events = [
                    {"thing_key": "m", "timestamp": j, "data": {"seq": j, "pad": "x" * 1000}}
                    for j in range(i * 10, i * 10 + 10)
                ]
                try:
                    await outbox.append(events)
                except OutboxFull as exc:
                    refusal = exc
                    break
                files = file_bytes(*(disk / "outbox").glob("outbox.db*"))
                assert files <= cap, f"{files} bytes on disk for a cap of {cap}"
            stats = outbox.stats()
            assert not stats.disk_full and stats.counters["rejected"] <= 10
            assert file_bytes(disk / "outbox" / "reserve") == stats.reserve_bytes > 0
            assert stats.bytes > 0.7 * cap  # most of it holds readings (was 1.2 MB of 4 MiB)
            if policy == "reject_new":
                assert not isinstance(refusal, DiskFull) and "reject_new" in str(refusal)
            else:
                assert refusal is None and stats.counters["evicted"] > 0
        finally:
            outbox.close()
