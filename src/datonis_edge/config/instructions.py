"""How a thing turns a platform instruction into writes (the `instructions:` list of a thing).

An instruction is user-defined JSON (`{"setpoint": 42.5}`, `{"command": "start"}`). Each rule
names what it answers to and what it writes; the first rule that matches is executed:

    instructions:
      - name: set_speed
        match: {command: set_speed}          # the instruction's fields must equal these
        writes:
          - {tag: speed_sp, from: value, min: 0, max: 1500}   # the instruction's `value`
      - name: start
        match: {command: start}
        writes:
          - {tag: run_coil, value: true}     # a constant
      - name: setpoint
        writes:
          - {tag: setpoint_reg, from: setpoint, min: 0, max: 100}

A rule matches when every `match` field is equal and every `from` field is present (so the
last rule above answers `{"setpoint": 42.5}`). `from` may name a nested field (`recipe.speed`).
Every value is checked against its tag's type and against `min`/`max` before anything is
written. Imports no protocol; the tag cross-check runs where the service's tags are known.
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

Scalar = str | int | float | bool
_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")

# a tag kind no device accepts writes to (the service's tag says `register_kind`)
_READ_ONLY_KINDS = {"input": "an input register", "discrete": "a discrete input"}


class _Strict(BaseModel):  # as config.models.Base, which imports this module
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class InstructionWrite(_Strict):
    """One write: `tag` gets `value` (a constant) or the instruction's field `from`."""

    tag: str = Field(min_length=1)
    value: Scalar | None = None
    from_: str | None = Field(None, alias="from", min_length=1)
    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _source(self) -> InstructionWrite:
        if (self.value is None) == (self.from_ is None):
            raise ValueError(
                "give a write either `value` (a constant) or `from` (a field of the "
                "instruction, e.g. from: setpoint)"
            )
        for bound in (self.min, self.max):
            if bound is not None and not math.isfinite(bound):
                raise ValueError("min/max: give a finite number")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min}) is above max ({self.max}); swap them")
        return self

    def value_for(self, instruction: dict[str, Any]) -> Any:
        """The value this write sends for an instruction (KeyError: a field is missing)."""
        if self.from_ is None:
            return self.value
        return field_of(instruction, self.from_)


def field_of(instruction: dict[str, Any], path: str) -> Any:
    node: Any = instruction
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            raise KeyError(path)
        node = node[part]
    return node


class InstructionRule(_Strict):
    name: str = Field(min_length=1)
    match: dict[str, Scalar] = Field(default_factory=dict)
    writes: list[InstructionWrite] = Field(min_length=1)
    # how long the instruction may wait for its devices to answer before it fails
    device_wait_ms: int = Field(10_000, ge=0, le=600_000)

    @model_validator(mode="after")
    def _check(self) -> InstructionRule:
        if not _NAME.match(self.name):
            raise ValueError(
                f"name: '{self.name}' may hold letters, digits and _ . - only (it is shown in acks)"
            )
        if not self.match and not any(w.from_ for w in self.writes):
            raise ValueError(
                "match: this rule would answer every instruction; give `match` fields "
                "(e.g. match: {command: start}) or writes that take a field with `from`"
            )
        return self

    def matches(self, instruction: dict[str, Any]) -> bool:
        for path, want in self.match.items():
            try:
                got = field_of(instruction, path)
            except KeyError:
                return False
            if got != want or isinstance(got, bool) != isinstance(want, bool):
                return False
        for write in self.writes:
            if write.from_ is not None:
                try:
                    field_of(instruction, write.from_)
                except KeyError:
                    return False
        return True


def check_instruction_targets(service_type: str, tags: list[Any] | None, things: list[Any]) -> None:
    """Every write of every thing's instructions names a tag of the service that can be
    written; rule names are unique within a thing. Raises ValueError naming the field.
    `tags` None: the protocol has no tags to write (a listener, the simulator)."""
    if tags is None:
        check_no_instructions(service_type, things)
        return
    by_name = {t.name: t for t in tags}
    for ti, thing in enumerate(things):
        seen: set[str] = set()
        for ri, rule in enumerate(getattr(thing, "instructions", [])):
            where = f"things[{ti}].instructions[{ri}]"
            if rule.name in seen:
                raise ValueError(f"{where}.name: '{rule.name}' is used twice in this thing")
            seen.add(rule.name)
            for wi, write in enumerate(rule.writes):
                tag = by_name.get(write.tag)
                if tag is None:
                    raise ValueError(
                        f"{where}.writes[{wi}].tag: no tag named '{write.tag}' in this "
                        "service's tags; add it to tags or fix the name"
                    )
                kind = _READ_ONLY_KINDS.get(getattr(tag, "register_kind", ""))
                if kind:
                    raise ValueError(
                        f"{where}.writes[{wi}].tag: '{write.tag}' is {kind}, which is read "
                        "only; write a holding register or a coil"
                    )


def check_no_writes_to(things: list[Any], tags: Collection[str], why: str) -> None:
    """No instruction writes one of `tags` (inputs the device itself sets); the error says
    the tag "is `why`", which should name what to write instead."""
    for ti, thing in enumerate(things):
        for ri, rule in enumerate(getattr(thing, "instructions", [])):
            for wi, write in enumerate(rule.writes):
                if write.tag in tags:
                    raise ValueError(
                        f"things[{ti}].instructions[{ri}].writes[{wi}].tag: '{write.tag}' is {why}"
                    )


def check_no_instructions(service_type: str, things: list[Any]) -> None:
    """For a service whose protocol cannot write: any instruction rule is an error."""
    for ti, thing in enumerate(things):
        if getattr(thing, "instructions", None):
            raise ValueError(
                f"things[{ti}].instructions: a {service_type} service cannot write to "
                "machines; put the thing's instructions under a service whose protocol writes "
                "(its README says so: modbus_tcp, opcua, s7, ...)"
            )
