"""Edges of the pipeline that no single adapter owns: a standby that takes over runs the data
directory's configuration as it is then, and a polled reading beyond the limits every way in
shares is refused alone, counted and reported, while its neighbours are delivered."""

from __future__ import annotations

import yaml

from helpers import base_config, simulator_service, wait_until


def test_a_standby_takes_over_with_the_config_file_as_it_is_now(
    platform, gateway_factory, shared_dir
) -> None:
    config = base_config(platform)
    config["services"] = [simulator_service("press-1")]
    a = gateway_factory(config, datadir=shared_dir, name="node").start()
    b = gateway_factory(None, datadir=shared_dir, name="node").start(wait_master=False)
    b.wait_role("standby")
    wait_until(lambda: platform.events(), what="delivery by the first master")

    # the configuration is changed in the data directory while b waits (as the console would)
    changed = {**config, "services": [simulator_service("press-2")]}
    (shared_dir / "config" / "edge.yaml").write_text(yaml.safe_dump(changed))
    a.kill()
    st = b.wait_role("master", timeout=10)
    wait_until(
        lambda: any(
            e["thing_key"] == "press-2" and e["epoch"] == st["epoch"] for e in platform.events()
        ),
        what="the new master running the changed configuration",
    )
    # what a left in the outbox is delivered too (first); the new master reads press-2 only

    def count(key: str) -> int:
        return len([e for e in platform.events() if e["thing_key"] == key])

    wait_until(lambda: count("press-2") > 5, what="readings of the changed configuration")
    old, seen = count("press-1"), count("press-2")
    wait_until(lambda: count("press-2") > seen + 10, what="more of them")
    assert count("press-1") == old
    assert "changed since this instance started" in b.proc.log()


def test_a_polled_reading_beyond_the_limits_is_refused_alone_and_reported(
    platform, gateway_factory
) -> None:
    config = base_config(platform)
    huge = "x" * 70_000  # over readings.MAX_STRING_LENGTH (65,536)
    config["services"] = [
        {
            "name": "line",
            "type": "simulator",
            "scan_interval_ms": 50,
            "things": [
                {"thing_key": "big", "metrics": [{"name": "label", "tag": f"const({huge})"}]},
                {"thing_key": "ok", "metrics": [{"name": "n", "tag": "counter(0, 1)"}]},
            ],
        }
    ]
    gw = gateway_factory(config).start()
    svc = wait_until(
        lambda: (s := gw.status()["services"][0])["counters"].get("malformed", 0) >= 3 and s,
        what="refused readings counted",
    )
    assert "65536" in svc["last_error"] or "65,536" in svc["last_error"], svc["last_error"]
    wait_until(
        lambda: len([e for e in platform.events() if e["thing_key"] == "ok"]) >= 3,
        what="the neighbour's readings delivered",
    )
    assert not [e for e in platform.events() if e["thing_key"] == "big"]
    log = gw.proc.log()
    assert log.count("a reading was refused") == 1, log  # once, not once per scan
    assert gw.status()["services"][0]["counters"]["received"] >= 3


def test_the_latest_values_stay_bounded_whatever_keys_producers_invent() -> None:
    """A listener's producers choose thing keys and metric names: the console's table of
    latest values keeps what it tracks, updates it, and takes no new key past its bounds."""
    from datonis_edge.pipeline import LatestValues

    latest = LatestValues()
    latest.MAX_THINGS, latest.MAX_METRICS = 3, 2  # type: ignore[misc]
    events = [{"thing_key": f"t{i}", "timestamp": i, "data": {"a": i}} for i in range(5)]
    events.append({"thing_key": "t0", "timestamp": 9, "data": {"a": 90, "b": 91, "c": 92}})
    latest.update(events)
    assert set(latest.things) == {"t0", "t1", "t2"}
    assert latest.things["t0"] == {"a": (90, 9), "b": (91, 9)}  # tracked ones still update
    assert latest.untracked == 3  # t3, t4, and t0's third metric
