"""From an instruction to checked writes: the thing's first matching rule, each write's value,
its `min`/`max`, then the adapter's own check (type and range of the tag). Nothing here writes."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from ..adapters.base import Adapter, ValueRefused
from ..config.instructions import InstructionRule, InstructionWrite


class NoRule(Exception):
    """No rule of the thing answers this instruction; the message says so for the ack."""


@dataclass
class Write:
    adapter: Adapter
    tag: str
    value: Any  # as the instruction gave it
    checked: Any = None  # as the adapter will write it (check_write's answer)


@dataclass
class Plan:
    rule: InstructionRule
    writes: list[Write] = field(default_factory=list)

    def describe(self) -> str:
        return ", ".join(f"{w.tag}={json.dumps(w.value)}" for w in self.writes)


class Mapping:
    """The instruction rules of every thing, with the adapter that owns each thing's tags."""

    def __init__(self, adapters: list[Adapter]) -> None:
        self.rules: dict[str, list[tuple[Adapter, InstructionRule]]] = {}
        for adapter in adapters:
            for thing in getattr(adapter.config, "things", []):
                for rule in thing.instructions:
                    self.rules.setdefault(thing.thing_key, []).append((adapter, rule))

    def plan(self, thing_key: str, instruction: dict[str, Any]) -> Plan:
        rules = self.rules.get(thing_key, [])
        for adapter, rule in rules:
            if rule.matches(instruction):
                return Plan(rule, [_write(adapter, w, instruction) for w in rule.writes])
        shown = json.dumps(instruction)
        shown = shown if len(shown) <= 200 else shown[:200] + "..."
        if not rules:
            raise NoRule(
                f"unknown instruction {shown}: thing {thing_key} has no instructions configured"
            )
        names = ", ".join(r.name for _, r in rules)
        raise NoRule(f"unknown instruction {shown}: no rule of thing {thing_key} matches ({names})")

    @staticmethod
    async def check(plan: Plan) -> None:
        """Every value within its bounds and fit for its tag, or ValueRefused/WriteFailed
        (the device did not answer within the rule's wait) before anything is written."""
        wait_s = plan.rule.device_wait_ms / 1000
        for spec, write in zip(plan.rule.writes, plan.writes, strict=True):
            _bounds(spec, write.value)
            write.checked = await write.adapter.check_write(write.tag, write.value, wait_s)


def _write(adapter: Adapter, spec: InstructionWrite, instruction: dict[str, Any]) -> Write:
    return Write(adapter, spec.tag, spec.value_for(instruction))


def _bounds(spec: InstructionWrite, value: Any) -> None:
    if spec.min is None and spec.max is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueRefused(f"{spec.tag} takes a number here, not {json.dumps(value)}")
    if spec.min is not None and value < spec.min:
        raise ValueRefused(f"value out of range: {spec.tag}={value} is below its min {spec.min:g}")
    if spec.max is not None and value > spec.max:
        raise ValueRefused(f"value out of range: {spec.tag}={value} is above its max {spec.max:g}")
