"""/metrics has every name DESIGN.md lists ("Operating it"), with its type and its labels, on a
real gateway whose every part has something to count."""

from __future__ import annotations

from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from helpers import ModbusServer, base_config, free_port, wait_until

# family (counters without `_total`) → (type, the labels of its samples)
DESIGNED = {
    "datonis_edge_events_received": ("counter", {"service"}),
    "datonis_edge_events_sent": ("counter", {"uplink"}),
    "datonis_edge_events_declined": ("counter", {"uplink", "status"}),
    "datonis_edge_events_evicted": ("counter", set()),
    "datonis_edge_outbox_events": ("gauge", set()),
    "datonis_edge_outbox_bytes": ("gauge", set()),
    "datonis_edge_outbox_capacity_bytes": ("gauge", set()),
    "datonis_edge_outbox_oldest_age_seconds": ("gauge", set()),
    "datonis_edge_uplink_up": ("gauge", {"uplink"}),
    "datonis_edge_uplink_request_duration_seconds": ("histogram", {"uplink"}),
    "datonis_edge_uplink_retries": ("counter", {"uplink"}),
    "datonis_edge_device_up": ("gauge", {"service", "device"}),
    "datonis_edge_tag_read_errors": ("counter", {"service", "device"}),
    "datonis_edge_ha_master": ("gauge", set()),
    "datonis_edge_ha_epoch": ("gauge", set()),
    "datonis_edge_failovers": ("counter", set()),
}


def test_metrics_has_every_designed_name_with_its_type_and_labels(
    platform, gateway_factory, tmp_path: Path
) -> None:
    plc = ModbusServer(tmp_path, {"units": {"1": {"hr": {"0": [7]}}}}, "plc").start()
    try:
        port = free_port()
        config = base_config(platform, bulk_max_elements=5, bulk_transmit_interval_ms=0)
        config["services"] = [
            {"name": "push", "type": "http_listener", "host": "127.0.0.1", "port": port},
            {
                "name": "line",
                "type": "modbus_tcp",
                "scan_interval_ms": 100,
                "devices": [{"name": "plc-1", "port": plc.port}],
                "tags": [{"name": "t", "device": "plc-1", "register": "holding", "address": 0}],
                "things": [{"thing_key": "press-1", "metrics": [{"name": "t", "tag": "t"}]}],
            },
        ]
        gw = gateway_factory(config).start()
        uplink = gw.status()["uplinks"][0]["name"]
        platform.fault(status=422, count=1)  # one batch declined
        platform.fault(status=500, count=1)  # one retried
        events = [{"thing_key": "m1", "data": {"seq": i}} for i in range(5)]
        url = f"http://127.0.0.1:{port}/api/v3/things/event.json"
        assert httpx.post(url, json={"events": events}).status_code == 200
        wait_until(
            lambda: (
                gw.status()["counters"].get("declined", 0) >= 1
                and gw.status()["forwarder"]["counters"].get("retries", 0) >= 1
                and gw.status()["counters"].get("delivered", 0) >= 1
            ),
            what="a batch declined, one retried, some delivered",
        )
        text = gw.http.get("/metrics").text
        # the modbus readings flow too, so the declined batch may be theirs or the pushed one:
        # the metric must say what the status says (one fault, so the count no longer moves)
        declined_422 = gw.status()["forwarder"]["details"]["declined_by_status"]["422"]
    finally:
        plc.stop()

    families = {f.name: f for f in text_string_to_metric_families(text)}
    for name, (kind, labels) in DESIGNED.items():
        assert name in families, f"{name} missing from /metrics"
        family = families[name]
        assert family.type == kind, (name, family.type)
        assert family.documentation, f"{name} has no HELP"
        samples = [s for s in family.samples if not s.name.endswith("_created")]
        assert samples, f"{name} has no sample"
        for s in samples:
            extra = {"le"} if s.name.endswith("_bucket") else set()
            assert set(s.labels) == labels | extra, (s.name, s.labels)

    def value(name: str, **labels: str) -> float:
        return next(
            s.value
            for family in families.values()
            for s in family.samples
            if s.name == name and s.labels.items() >= labels.items()
        )

    assert value("datonis_edge_events_received_total", service="push") == 5
    assert declined_422 >= 1
    assert value("datonis_edge_events_declined_total", uplink=uplink, status="422") == declined_422
    assert value("datonis_edge_events_sent_total", uplink=uplink) >= 1
    assert value("datonis_edge_uplink_retries_total", uplink=uplink) >= 1
    assert value("datonis_edge_uplink_request_duration_seconds_count", uplink=uplink) >= 3
    assert value("datonis_edge_device_up", service="line", device="plc-1") == 1
    assert value("datonis_edge_ha_master") == 1 and value("datonis_edge_ha_epoch") == 1
    assert value("datonis_edge_failovers_total") == 0
    assert value("datonis_edge_outbox_capacity_bytes") > 0
