"""The simulator's tag syntax: a waveform or a CSV column, parsed once, evaluated each scan.

    sine(mean, amplitude, period)    square(low, high, period)    ramp(low, high, period)
    random(low, high)                walk(start, step)            counter(start, step)
    const(value)                     csv(path, column)

A period is a number with a unit: 500ms, 60s, 5m, 1h. Imports nothing of the package.
"""

from __future__ import annotations

import csv
import math
import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

Value = float | int | str | bool | None


class TagError(ValueError):
    pass


_CALL = re.compile(r"^\s*([a-z_]+)\s*\((.*)\)\s*$")
_PERIOD = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*(ms|s|m|h)\s*$")
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}

USAGE = "use sine(mean, amplitude, 60s), square(lo, hi, 10s), ramp(lo, hi, 1m), random(lo, hi), walk(start, step), counter(start, step), const(v) or csv(file.csv, column)"


def _num(text: str, what: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise TagError(f"{what} '{text}' is not a number") from None


def _period(text: str) -> float:
    m = _PERIOD.match(text)
    if not m:
        raise TagError(f"period '{text.strip()}' needs a unit, like 500ms, 60s, 5m or 1h")
    value = float(m.group(1)) * _UNIT[m.group(2)]
    if value <= 0:
        raise TagError("period must be greater than zero")
    return value


@dataclass
class Waveform:
    """Evaluate with `value(t)` where t is seconds since the epoch."""

    kind: str
    fn: Callable[[float], Value]
    state: dict[str, float] = field(default_factory=dict)

    def value(self, t: float) -> Value:
        return self.fn(t)


def _csv_column(path: str, column: str) -> list[Value]:
    p = Path(path)
    try:
        with p.open(newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    except OSError as exc:
        raise TagError(f"cannot read CSV file '{path}' ({exc.strerror})") from None
    if not rows:
        raise TagError(f"CSV file '{path}' has no data rows")
    if column not in rows[0]:
        raise TagError(f"CSV file '{path}' has no column '{column}' (it has {', '.join(rows[0])})")
    out: list[Value] = []
    for r in rows:
        raw = r[column]
        try:
            out.append(float(raw))
        except (TypeError, ValueError):
            out.append(raw)
    return out


def parse_tag(tag: str) -> Waveform:
    m = _CALL.match(tag)
    if not m:
        raise TagError(f"'{tag}' is not a simulator tag; {USAGE}")
    kind, argtext = m.group(1), m.group(2)
    args = [a.strip() for a in argtext.split(",")] if argtext.strip() else []

    def need(n: int, form: str) -> None:
        if len(args) != n:
            raise TagError(f"{kind} takes {n} argument(s): {form}")

    if kind == "sine":
        need(3, "sine(mean, amplitude, period)")
        mean, amp, per = _num(args[0], "mean"), _num(args[1], "amplitude"), _period(args[2])
        return Waveform(kind, lambda t: round(mean + amp * math.sin(2 * math.pi * t / per), 4))
    if kind == "square":
        need(3, "square(low, high, period)")
        lo, hi, per = _num(args[0], "low"), _num(args[1], "high"), _period(args[2])
        return Waveform(kind, lambda t: hi if (t % per) < per / 2 else lo)
    if kind == "ramp":
        need(3, "ramp(low, high, period)")
        lo, hi, per = _num(args[0], "low"), _num(args[1], "high"), _period(args[2])
        return Waveform(kind, lambda t: round(lo + (hi - lo) * ((t % per) / per), 4))
    if kind == "random":
        need(2, "random(low, high)")
        lo, hi = _num(args[0], "low"), _num(args[1], "high")
        rng = random.Random()
        return Waveform(kind, lambda t: round(rng.uniform(lo, hi), 4))
    if kind == "walk":
        need(2, "walk(start, step)")
        start, step = _num(args[0], "start"), _num(args[1], "step")
        rng = random.Random()
        w = Waveform(kind, lambda t: 0.0, {"v": start})

        def walk(t: float) -> Value:
            w.state["v"] += rng.uniform(-step, step)
            return round(w.state["v"], 4)

        w.fn = walk
        return w
    if kind == "counter":
        need(2, "counter(start, step)")
        start, step = _num(args[0], "start"), _num(args[1], "step")
        c = Waveform(kind, lambda t: 0.0, {"v": start - step})

        def count(t: float) -> Value:
            c.state["v"] += step
            v = c.state["v"]
            return int(v) if v.is_integer() else v

        c.fn = count
        return c
    if kind == "const":
        need(1, "const(value)")
        raw = args[0].strip("'\"")
        const: Value
        try:
            const = float(raw)
        except ValueError:
            const = {"true": True, "false": False}.get(raw.lower(), raw)
        return Waveform(kind, lambda t: const)
    if kind == "csv":
        need(2, "csv(path, column)")
        values = _csv_column(args[0].strip("'\""), args[1].strip("'\""))
        w = Waveform(kind, lambda t: None, {"i": -1})

        def replay(t: float) -> Value:
            w.state["i"] = (w.state["i"] + 1) % len(values)
            return values[int(w.state["i"])]

        w.fn = replay
        return w
    raise TagError(f"unknown simulator function '{kind}'; {USAGE}")
