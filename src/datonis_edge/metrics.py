"""Process-wide Prometheus instruments that parts update as things happen (a request's
duration cannot be read from a status snapshot afterwards). Everything else on /metrics is
derived from the status snapshot when scraped (console/metrics.py). Imports nothing of the
package."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

UPLINK_REQUEST_SECONDS = Histogram(
    "datonis_edge_uplink_request_duration_seconds",
    "Time from sending a batch to the platform's (or broker's) answer",
    ["uplink"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
    registry=REGISTRY,
)
UPLINK_RETRIES = Counter(
    "datonis_edge_uplink_retries",
    "Batches sent again after a retryable answer, a timeout or a connection error",
    ["uplink"],
    registry=REGISTRY,
)
