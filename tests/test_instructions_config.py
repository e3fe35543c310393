"""A thing's `instructions:` at config load: what is refused (naming the field and the fix),
and how a rule matches an instruction."""

from __future__ import annotations

from typing import Any

import pytest

from datonis_edge.config.instructions import InstructionRule
from datonis_edge.root_config import ConfigError, parse_config

CLOUD = {
    "protocol": "mqtt",
    "endpoint": "mqtt://127.0.0.1:1883",
    "access_key": "a",
    "secret_key": "s",
}


def modbus(instructions: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "cloud": CLOUD,
        "services": [
            {
                "type": "modbus_tcp",
                "devices": [{"name": "plc"}],
                "tags": [
                    {"name": "sp", "register": "holding", "address": 0},
                    {"name": "level", "register": "input", "address": 0},
                    {"name": "alarm", "register": "discrete", "address": 0},
                ],
                "things": [{"thing_key": "m", "metrics": [], "instructions": instructions}],
            }
        ],
    }


def error_of(config: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as err:
        parse_config(config)
    assert len(err.value.problems) == 1
    return err.value.problems[0]


@pytest.mark.parametrize(
    ("rule", "line"),
    [
        (
            {"name": "a", "writes": [{"tag": "level", "from": "v"}]},
            "writes[0].tag: 'level' is an input register, which is read only; write a holding register or a coil",
        ),
        (
            {"name": "a", "writes": [{"tag": "alarm", "from": "v"}]},
            "writes[0].tag: 'alarm' is a discrete input, which is read only",
        ),
        (
            {"name": "a", "writes": [{"tag": "sp", "from": "v", "value": 3}]},
            "writes[0]: give a write either `value` (a constant) or `from`",
        ),
        (
            {"name": "a", "writes": [{"tag": "sp", "value": 3}]},
            "instructions[0].match: this rule would answer every instruction",
        ),
        ({"name": "a b", "match": {"c": 1}, "writes": [{"tag": "sp", "value": 3}]}, "name: 'a b'"),
        (
            {"name": "a", "match": {"c": 1}, "writes": []},
            "writes: List should have at least 1 item",
        ),
    ],
)
def test_a_bad_rule_is_refused_naming_the_field(rule: dict[str, Any], line: str) -> None:
    problem = error_of(modbus([rule]))
    assert problem.startswith("services[0].things[0].instructions[0]"), problem
    assert line in problem


def test_rule_names_are_unique_in_a_thing() -> None:
    rule = {"name": "go", "match": {"c": 1}, "writes": [{"tag": "sp", "value": 1}]}
    assert "instructions[1].name: 'go' is used twice" in error_of(modbus([rule, rule]))


def test_a_service_that_cannot_write_refuses_instructions() -> None:
    config = {
        "cloud": CLOUD,
        "services": [
            {
                "type": "http_listener",
                "port": 8081,
                "things": [
                    {
                        "thing_key": "m",
                        "instructions": [
                            {"name": "a", "match": {"c": 1}, "writes": [{"tag": "x", "value": 1}]}
                        ],
                    }
                ],
            }
        ],
    }
    assert error_of(config) == (
        "services[0].things[0].instructions: a http_listener service cannot write to "
        "machines; put the thing's instructions under a service whose protocol writes "
        "(its README says so: modbus_tcp, opcua, s7, ...)"
    )


def test_a_rule_matches_its_fields_and_needs_its_sources() -> None:
    rule = InstructionRule.model_validate(
        {
            "name": "speed",
            "match": {"command": "set", "mode.auto": False},
            "writes": [{"tag": "sp", "from": "args.value"}],
        }
    )
    good = {"command": "set", "mode": {"auto": False}, "args": {"value": 3}}
    assert rule.matches(good)
    assert not rule.matches({**good, "command": "Set"})
    assert not rule.matches({**good, "mode": {"auto": 0}})  # false is not 0
    assert not rule.matches({"command": "set", "mode": {"auto": False}})  # no args.value
    assert rule.writes[0].value_for(good) == 3
