"""DESIGN.md's outcome table, end to end: 401/400/422 decline, 429/503 honour Retry-After,
500 and dropped connections retry; every accepted point ends delivered or declined."""

from __future__ import annotations

import httpx

from helpers import base_config, free_port, wait_until


def _listener_config(platform, **cloud):
    config = base_config(platform, **cloud)
    port = free_port()
    config["services"] = [
        {"name": "push", "type": "http_listener", "host": "127.0.0.1", "port": port}
    ]
    return config, f"http://127.0.0.1:{port}/api/v3/things/event.json"


def _post(url: str, start: int, count: int, thing: str = "m1") -> None:
    events = [
        {"thing_key": thing, "timestamp": 1_700_000_000_000 + i, "data": {"seq": i}}
        for i in range(start, start + count)
    ]
    r = httpx.post(url, json={"events": events}, timeout=10)
    assert r.status_code == 200, r.text


def _seqs(platform) -> list[int]:
    return [e["data"]["seq"] for e in platform.events()]


def test_401_declines_batch_and_later_batches_flow_and_replay_delivers(
    platform, gateway_factory
) -> None:
    config, url = _listener_config(platform, bulk_max_elements=10)
    gw = gateway_factory(config).start()
    _post(url, 0, 10)
    wait_until(lambda: _seqs(platform) == list(range(10)), what="first batch delivered")

    platform.set_keys("rotated-ak", "rotated-sk")  # the platform no longer knows our key
    _post(url, 10, 10)
    st = wait_until(
        lambda: (s := gw.status())["counters"]["declined"] == 10 and s, what="batch declined"
    )
    assert st["declined_batches"] == 1
    assert any("401" in a["message"] and "declined" in a["message"] for a in st["alerts"])
    assert st["uplinks"][0]["state"] == "declining"
    listed = gw.cli("declined", "list", "--datadirpath", str(gw.datadir), "--json")
    assert listed.returncode == 0
    assert '"status": 401' in listed.stdout and "unknown access key" in listed.stdout

    platform.set_keys(platform.access_key, platform.secret_key)  # keys fixed
    _post(url, 20, 10)  # later batches flow once the platform accepts again
    wait_until(
        lambda: sorted(_seqs(platform)) == list(range(10)) + list(range(20, 30)),
        timeout=30,
        what="later batch delivered",
    )

    replay = gw.cli("declined", "replay", "--datadirpath", str(gw.datadir))
    assert replay.returncode == 0, replay.stderr
    wait_until(
        lambda: sorted(_seqs(platform)) == list(range(30)),
        what="declined points delivered by replay",
    )
    st = gw.status()
    assert st["declined_batches"] == 0
    assert st["counters"]["accepted"] == 40  # 30 posted + 10 replayed
    assert st["counters"]["delivered"] == 30 and st["counters"]["declined"] == 10
    assert st["outbox"]["pending"] == 0


def test_422_declines_only_the_bad_batch(platform, gateway_factory) -> None:
    config, url = _listener_config(platform, bulk_max_elements=5, bulk_transmit_interval_ms=0)
    gw = gateway_factory(config).start()
    platform.fault(status=422, count=1)
    _post(url, 0, 5)
    _post(url, 5, 5)
    wait_until(lambda: _seqs(platform) == list(range(5, 10)), what="second batch delivered")
    st = wait_until(
        lambda: (s := gw.status())["counters"]["declined"] == 5 and s, what="first declined"
    )
    assert st["declined_batches"] == 1
    assert st["uplinks"][0]["state"] != "declining"  # a bad batch is not a bad key: no backoff

    datadir = str(gw.datadir)
    kept = gw.cli("declined", "purge", "--datadirpath", datadir, input="n\n")
    assert kept.returncode == 1 and "nothing deleted" in kept.stderr
    assert "422" in gw.cli("declined", "list", "--datadirpath", datadir).stdout
    purged = gw.cli("declined", "purge", "--datadirpath", datadir, input="y\n")
    assert purged.returncode == 0 and "deleted 1 declined batches (5 events)" in purged.stdout
    assert (
        gw.cli("declined", "list", "--datadirpath", datadir).stdout.strip() == "no declined batches"
    )


def test_429_honours_retry_after(platform, gateway_factory) -> None:
    config, url = _listener_config(platform, bulk_max_elements=5)
    gw = gateway_factory(config).start()
    platform.fault(status=429, retry_after=2, count=1)
    _post(url, 0, 5)
    wait_until(lambda: _seqs(platform) == list(range(5)), timeout=30, what="delivery after 429")
    log = platform.requests()
    refused = next(r for r in log if r["status"] == 429)
    accepted = next(r for r in log if r["status"] == 200)
    assert accepted["batch_id"] == refused["batch_id"]  # the same batch, retried
    assert accepted["ms"] - refused["ms"] >= 1900  # not before Retry-After said
    assert gw.status()["counters"]["declined"] == 0


def test_500_slow_answers_and_dropped_connections_retry_until_delivered(
    platform, gateway_factory
) -> None:
    config, url = _listener_config(platform, bulk_max_elements=10, request_timeout_ms=500)
    gw = gateway_factory(config).start()
    platform.fault(status=500, count=2)
    platform.fault(drop=True, count=2)
    platform.fault(status=503, retry_after=0, count=1)
    platform.fault(delay_ms=1500, count=1)  # longer than request_timeout_ms: a timeout
    for start in range(0, 50, 10):
        _post(url, start, 10)
    wait_until(
        lambda: set(_seqs(platform)) == set(range(50)), timeout=60, what="every point delivered"
    )
    st = wait_until(
        lambda: (s := gw.status())["outbox"]["pending"] == 0 and s, what="outbox drained"
    )
    assert st["counters"]["declined"] == 0
    assert st["forwarder"]["counters"]["retries"] >= 6
    seqs = _seqs(platform)
    duplicates = len(seqs) - len(set(seqs))
    assert duplicates <= 10  # only the batch whose answer timed out may arrive twice
    assert platform.stats()["by_status"]["500"] == 2


def test_malformed_posts_get_a_4xx_naming_the_fault(platform, gateway_factory) -> None:
    config, url = _listener_config(platform)
    gateway_factory(config).start()
    cases = [
        (b"{not json", 400, "not valid JSON"),
        (b'{"events": []}', 422, "empty"),
        (b'{"events": [{"data": {"v": 1}}]}', 422, "events[0].thing_key"),
        (b'{"thing_key": "m", "data": 5}', 422, "event.data"),
        (
            b'{"events": [{"thing_key": "m", "data": {}, "timestamp": "yesterday"}]}',
            422,
            "events[0].timestamp",
        ),
    ]
    for body, status, words in cases:
        r = httpx.post(url, content=body)
        assert r.status_code == status, (body, r.text)
        assert words in r.json()["reason"]
    assert httpx.get(url.replace("event.json", "nothing")).status_code == 404


def test_http_listener_checks_signatures_when_keys_are_configured(
    platform, gateway_factory
) -> None:
    import hashlib
    import hmac

    config, url = _listener_config(platform)
    config["services"][0]["keys"] = [{"access_key": "agent-1", "secret_key": "agent-secret"}]
    gateway_factory(config).start()
    body = b'{"thing_key": "m", "data": {"v": 1}}'
    sig = hmac.new(b"agent-secret", body, hashlib.sha256).hexdigest()
    assert (
        httpx.post(
            url, content=body, headers={"X-Access-Key": "agent-1", "X-Dtn-Signature": sig}
        ).status_code
        == 200
    )
    bad = httpx.post(
        url, content=body, headers={"X-Access-Key": "agent-1", "X-Dtn-Signature": "0" * 64}
    )
    assert bad.status_code == 401 and "X-Dtn-Signature" in bad.json()["reason"]
    assert httpx.post(url, content=body).status_code == 401
    wait_until(lambda: len(platform.events()) == 1, what="the signed event delivered")


def test_bodies_in_every_shape_arrive_exactly_as_sent(platform, gateway_factory) -> None:
    """Whatever the body's shape (pretty-printed, unicode, a single event, extra keys beside
    "events", missing timestamps), the checked events come out at the platform as sent."""
    import json

    config, url = _listener_config(platform, bulk_max_elements=100)
    gateway_factory(config).start()
    e1 = {
        "thing_key": "presse-ü",
        "timestamp": 1_700_000_000_001,
        "data": {"name": "Kühlung ❄", "v": 1.5},
    }
    e2 = {"thing_key": "m2", "timestamp": 1_700_000_000_002, "data": {"ok": True, "n": None}}
    e3 = {"thing_key": "m3", "data": {"v": 3}}  # no timestamp: the edge stamps it
    bodies = [
        json.dumps({"events": [e1, e2]}, indent=2, ensure_ascii=False).encode(),
        b"\n  " + json.dumps(e1).encode() + b"  \n",  # a single event
        json.dumps({"events": [e2], "note": "extra key"}).encode(),  # the extra key is ignored
        json.dumps({"events": [e3]}).encode(),  # the edge stamps the time
    ]
    for body in bodies:
        r = httpx.post(url, content=body)
        assert r.status_code == 200, r.text
    got = wait_until(lambda: (e := platform.events()) and len(e) == 5 and e, what="5 events")
    sent = [e1, e2, e1, e2]
    for want, have in zip(sent, got[:4], strict=True):
        assert {k: have[k] for k in ("thing_key", "timestamp", "data")} == want
    assert (
        got[4]["thing_key"] == "m3"
        and got[4]["data"] == {"v": 3}
        and got[4]["timestamp"] > 1_700_000_000_000
    )


def test_endpoint_credentials_never_show(platform, gateway_factory) -> None:
    """A `user:password@host` endpoint is shown as `***@host` in the status, alerts and logs."""
    endpoint = platform.url.replace("http://", "http://edge:pw-s3cret@")
    config, url = _listener_config(platform, endpoint=endpoint)
    gw = gateway_factory(config).start()
    _post(url, 0, 3)
    wait_until(lambda: _seqs(platform) == [0, 1, 2], what="delivered with credentials in the URL")
    uplink = gw.status()["uplinks"][0]
    shown = platform.url.replace("http://", "http://***@")
    assert uplink["name"] == f"datonis {shown}" and uplink["details"]["endpoint"] == shown
    platform.fault(drop=True, count=1)  # a connection error names the URL it failed on
    _post(url, 3, 1)
    wait_until(lambda: 3 in _seqs(platform), what="delivered after a dropped connection")
    assert "pw-s3cret" not in str(gw.status())
    assert gw.stop() == 0
    assert "pw-s3cret" not in gw.proc.log()
