"""The console: JSON API under /api/v1, a status page, /metrics, /healthz, /readyz."""
