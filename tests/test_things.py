"""Tags → metrics, the same for every adapter: expressions, diff with deadband, send_interval.
End to end on a thing fed by the simulator, and unit cases on ThingMap."""

from __future__ import annotations

import itertools

import pytest

from datonis_edge.config import ThingConfig
from datonis_edge.things.expressions import Expression, ExpressionError
from datonis_edge.things.mapping import ThingMap
from helpers import base_config, simulator_service, wait_until


def _thing(*metrics: dict) -> ThingConfig:
    return ThingConfig.model_validate({"thing_key": "m", "metrics": list(metrics)})


def _r(ts: int, **data) -> dict:
    return {"thing_key": "m", "timestamp": ts, "data": data}


def test_expressions_see_latest_and_previous_values() -> None:
    things = ThingMap(
        [
            _thing(
                {"name": "count", "tag": "c"},
                {
                    "name": "rate",
                    "expression": "latestValue[0] - previousValue[0]",
                    "inputs": ["count"],
                },
                {
                    "name": "power_kw",
                    "expression": "latestValue[0] * latestValue[1] / 1000",
                    "inputs": ["v", "a"],
                },
            )
        ]
    )
    assert things.apply([_r(1, c=10, v=400, a=5)]) == [_r(1, count=10, rate=0, power_kw=2.0)]
    assert things.apply([_r(2, c=13, a=10)]) == [
        _r(2, count=13, rate=3, power_kw=4.0)
    ]  # v: its latest


def test_diff_sends_only_changes_beyond_the_deadband() -> None:
    things = ThingMap(
        [
            _thing(
                {"name": "t", "tag": "t", "diff": True, "deadband": 0.5},
                {"name": "on", "tag": "on", "diff": True},
            )
        ]
    )
    out = things.apply(
        [
            _r(i, t=t, on=on)
            for i, (t, on) in enumerate([(20.0, 1), (20.3, 1), (20.6, 1), (20.7, 0), (21.3, 0)])
        ]
    )
    assert [e["data"] for e in out] == [{"t": 20.0, "on": 1}, {"t": 20.6}, {"on": 0}, {"t": 21.3}]


def test_send_interval_gathers_a_things_readings_into_one_event() -> None:
    things = ThingMap(
        [_thing({"name": "a", "tag": "a"}, {"name": "b", "tag": "b"})], send_interval_ms=1000
    )
    assert things.apply([_r(1, a=1)], now=0.0) == []
    assert things.apply([_r(2, b=2)], now=0.5) == []
    assert things.apply([_r(3, a=3)], now=1.0) == [_r(3, a=3, b=2)]


@pytest.mark.parametrize(
    ("text", "inputs", "words"),
    [
        ("latestValue[0] +", 1, "not a valid expression"),
        ("latestValue[2]", 2, "out of range"),
        ("__import__('os').system('x')", 1, "__import__"),
        ("open('f')", 1, "open"),
        ("latestValue[0].__class__", 1, "__class__"),
        ("temperature * 2", 1, "temperature"),
    ],
)
def test_invalid_or_unsafe_expressions_are_refused(text: str, inputs: int, words: str) -> None:
    with pytest.raises(ExpressionError, match=None) as info:
        Expression(text, inputs)
    assert words in str(info.value)


def test_expressions_and_diff_on_a_simulator_thing_reach_the_platform(
    platform, gateway_factory
) -> None:
    config = base_config(platform)
    config["services"] = [
        simulator_service(
            "press-1",
            {"name": "strokes", "tag": "counter(0, 5)"},
            {
                "name": "strokes_per_scan",
                "expression": "latestValue[0] - previousValue[0]",
                "inputs": ["strokes"],
            },
            {"name": "mode", "tag": "const(auto)", "diff": True},
        )
    ]
    gateway_factory(config).start()
    events = wait_until(lambda: (e := platform.events()) and len(e) >= 6 and e, what="6 events")
    assert [e["data"]["strokes"] for e in events[:6]] == [0, 5, 10, 15, 20, 25]
    assert [e["data"]["strokes_per_scan"] for e in events[:6]] == [0, 5, 5, 5, 5, 5]
    assert [("mode" in e["data"]) for e in events[:6]] == [True, False, False, False, False, False]


def test_send_interval_on_a_polled_adapter_sends_one_event_per_interval(
    platform, gateway_factory
) -> None:
    config = base_config(platform)
    config["services"] = [simulator_service("press-1", send_interval_ms=500)]
    gateway_factory(config).start()
    events = wait_until(lambda: (e := platform.events()) and len(e) >= 3 and e, what="3 events")
    gaps = [b["timestamp"] - a["timestamp"] for a, b in itertools.pairwise(events)]
    assert all(gap >= 450 for gap in gaps[:2]), gaps  # not one per 50 ms scan
    ns = [e["data"]["n"] for e in events[:3]]
    assert ns[1] - ns[0] >= 3  # each carries the latest value of several scans (~10)
