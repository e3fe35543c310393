"""Adapter tags → thing metrics: scaling, offset, send-on-change (diff with deadband).

Things that are not configured pass through as they came (a Datonis agent posting events to
the http_listener already speaks in metrics). A configured thing keeps only its metrics.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .config import ThingConfig

_UNSET = object()


@dataclass(slots=True)
class _Metric:
    name: str
    tag: str
    scale: float | None
    offset: float | None
    diff: bool
    deadband: float


def _scaled(m: _Metric, value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return value
    if m.scale is None and m.offset is None:
        return value
    return round(value * (m.scale if m.scale is not None else 1) + (m.offset or 0), 9)


class ThingMap:
    def __init__(self, things: list[ThingConfig]) -> None:
        self._things = {
            t.thing_key: [
                _Metric(m.name, m.tag, m.scale, m.offset, m.diff, m.deadband) for m in t.metrics
            ]
            for t in things
            if t.metrics
        }
        self._last: dict[tuple[str, str], Any] = {}

    @property
    def passthrough(self) -> bool:
        return not self._things

    def _changed(self, key: tuple[str, str], m: _Metric, value: Any) -> bool:
        last = self._last.get(key, _UNSET)
        if last is _UNSET:
            return True
        if (
            m.deadband
            and isinstance(value, int | float)
            and isinstance(last, int | float)
            and not isinstance(value, bool)
        ):
            return abs(value - last) > m.deadband
        return value != last

    def apply(self, readings: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if not self._things:
            return readings
        out = []
        for r in readings:
            metrics = self._things.get(r["thing_key"])
            if metrics is None:
                out.append(r)
                continue
            values = r["data"]
            data: dict[str, Any] = {}
            for m in metrics:
                if m.tag not in values:
                    continue
                value = _scaled(m, values[m.tag])
                if m.diff:
                    key = (r["thing_key"], m.name)
                    if not self._changed(key, m, value):
                        continue
                    self._last[key] = value
                data[m.name] = value
            if data:
                out.append({"thing_key": r["thing_key"], "timestamp": r["timestamp"], "data": data})
        return out
