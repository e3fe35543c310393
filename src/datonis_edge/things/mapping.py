"""Adapter tags → thing metrics, the same for every adapter: scale and offset, derived metrics
(expressions over latest and previous values), send-on-change (diff, deadband), and
send_interval_ms (a thing's readings within the interval go out as one event).

Things that are not configured pass through as they came (a Datonis agent posting events to
the http_listener already speaks in metrics). A configured thing keeps only its metrics.
"""

from __future__ import annotations

import time
from typing import Any

from ..config.models import MetricRecord, ThingConfig
from .expressions import Expression

_UNSET = object()


def _scaled(m: MetricRecord, value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return value
    if m.scale is None and m.offset is None:
        return value
    return round(value * (m.scale if m.scale is not None else 1) + (m.offset or 0), 9)


class ThingMap:
    def __init__(self, things: list[ThingConfig], send_interval_ms: int = 0) -> None:
        # the config's own metric records (config/models.py); expressions compiled once
        self._things: dict[str, list[MetricRecord]] = {
            t.thing_key: t.metrics for t in things if t.metrics
        }
        self._expressions = {
            (key, m.name): Expression(m.expression, len(m.inputs))
            for key, metrics in self._things.items()
            for m in metrics
            if m.expression
        }
        self._last_sent: dict[tuple[str, str], Any] = {}
        self._latest: dict[tuple[str, str], Any] = {}  # inputs of expressions
        self._previous: dict[tuple[str, str], Any] = {}
        self.send_interval = send_interval_ms / 1000
        self._held: dict[str, dict[str, Any]] = {}  # thing_key -> event being gathered
        self._held_since: dict[str, float] = {}

    @property
    def passthrough(self) -> bool:
        return not self._things and not self.send_interval

    def _changed(self, key: tuple[str, str], m: MetricRecord, value: Any) -> bool:
        last = self._last_sent.get(key, _UNSET)
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

    def _remember(self, thing_key: str, name: str, value: Any) -> None:
        key = (thing_key, name)
        self._previous[key] = self._latest.get(key, value)
        self._latest[key] = value

    def _derive(self, thing_key: str, m: MetricRecord, tags: dict[str, Any]) -> Any:
        keys = [(thing_key, name) for name in m.inputs]
        if any(k not in self._latest for k in keys):
            return _UNSET  # not every input has been seen yet
        try:
            return self._expressions[(thing_key, m.name)].evaluate(
                [self._latest[k] for k in keys], [self._previous[k] for k in keys]
            )
        except (ZeroDivisionError, TypeError, ValueError, ArithmeticError):
            return _UNSET  # e.g. a division by a zero difference: no value this time

    def _map(self, r: dict[str, Any], metrics: list[MetricRecord]) -> dict[str, Any]:
        thing_key, values = r["thing_key"], r["data"]
        data: dict[str, Any] = {}
        # raw tags that expressions read directly
        for m in metrics:
            for name in m.inputs:
                if name in values and not any(x.name == name for x in metrics):
                    self._remember(thing_key, name, values[name])
        for m in metrics:
            if not m.expression:
                if m.tag not in values:
                    continue
                value = _scaled(m, values[m.tag])
                self._remember(thing_key, m.name, value)
            else:
                value = self._derive(thing_key, m, values)
                if value is _UNSET:
                    continue
                value = _scaled(m, value)
            if m.diff:
                key = (thing_key, m.name)
                if not self._changed(key, m, value):
                    continue
                self._last_sent[key] = value
            data[m.name] = value
        return data

    def apply(
        self, readings: list[dict[str, Any]], now: float | None = None
    ) -> list[dict[str, Any]]:
        if self.passthrough:
            return readings
        out = []
        for r in readings:
            metrics = self._things.get(r["thing_key"])
            data = r["data"] if metrics is None else self._map(r, metrics)
            if not data:
                continue
            event = {"thing_key": r["thing_key"], "timestamp": r["timestamp"], "data": data}
            if self.send_interval:
                event = self._gather(event, time.monotonic() if now is None else now)
                if event is None:
                    continue
            out.append(event)
        return out

    def _gather(self, event: dict[str, Any], now: float) -> dict[str, Any] | None:
        """Hold a thing's readings for send_interval; then one event with the latest values."""
        key = event["thing_key"]
        held = self._held.get(key)
        if held is None:
            self._held[key] = event
            self._held_since[key] = now
            held = event
        else:
            held["data"].update(event["data"])
            held["timestamp"] = event["timestamp"]
        if now - self._held_since[key] >= self.send_interval:
            del self._held[key]
            return held
        return None
