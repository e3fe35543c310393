"""One identifier for a declined batch everywhere: the alert, `declined list`, the status and
`declined replay` all name it the same way, and each accepts what the others print."""

from __future__ import annotations

import re

import httpx

from datonis_edge.store.declined import DeclinedStore
from helpers import base_config, free_port, wait_until


def test_the_id_in_a_decline_alert_is_what_declined_replay_accepts(
    platform, gateway_factory
) -> None:
    port = free_port()
    config = base_config(platform, bulk_max_elements=10, bulk_transmit_interval_ms=0)
    config["services"] = [
        {"name": "push", "type": "http_listener", "host": "127.0.0.1", "port": port}
    ]
    gw = gateway_factory(config).start()
    platform.fault(status=422, count=1)
    events = [
        {"thing_key": "m1", "timestamp": 1_700_000_000_000 + i, "data": {"seq": i}}
        for i in range(10)
    ]
    r = httpx.post(f"http://127.0.0.1:{port}/api/v3/things/event.json", json={"events": events})
    assert r.status_code == 200, r.text

    alert = wait_until(
        lambda: next((a for a in gw.status()["alerts"] if "declined" in a["message"]), None),
        what="a decline alert",
    )
    named = re.search(r"declined/(\S+?)[;,)]", alert["message"])
    assert named, alert["message"]
    listed = gw.cli("declined", "list", "--datadirpath", str(gw.datadir))
    assert named.group(1) in listed.stdout, (alert["message"], listed.stdout)

    replay = gw.cli("declined", "replay", named.group(1), "--datadirpath", str(gw.datadir))
    assert replay.returncode == 0, replay.stdout + replay.stderr
    wait_until(
        lambda: sorted(e["data"]["seq"] for e in platform.events()) == list(range(10)),
        what="the replayed batch delivered",
    )


def test_ids_have_no_dots_and_old_dotted_files_keep_their_whole_name(tmp_path) -> None:
    store = DeclinedStore(tmp_path)
    item = store.decline(
        batch_id="49.0+25",
        epoch=1,
        events=[{"thing_key": "k", "timestamp": 1, "data": {"v": 1}}],
        status=422,
        reason="422 Unprocessable Entity",
        response_body="",
        declined_at_ms=1_700_000_000_000,
    )
    assert "." not in item.id and item.path.name == f"{item.id}.json"
    assert [d.id for d in store.find([item.id])] == [item.id]
    assert [d.id for d in store.find([f"declined/{item.path.name}"])] == [item.id]
    assert [d.id for d in store.find(["49.0+25"])] == [item.id]

    old = tmp_path / "1700000000001-49.0_1.json"  # written by an earlier version
    old.write_bytes(item.path.read_bytes())
    assert "1700000000001-49.0_1" in [d.id for d in store.list()]
    assert [d.path for d in store.find(["1700000000001-49.0_1"])] == [old]
