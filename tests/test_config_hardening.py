"""A config cannot be turned against the gateway: alias bombs, huge or endless files, deep
nesting and self-containing aliases are refused with one line; secrets are never echoed."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from datonis_edge.config import MAX_FILE_BYTES
from datonis_edge.root_config import ConfigError, load_config, parse_config
from helpers import EDGE

CASES = Path(__file__).parent / "config_cases"
CLOUD = "cloud: {protocol: https, access_key: ak, secret_key: sk}\n"


def problems_of(text: str, tmp_path: Path) -> list[str]:
    path = tmp_path / "edge.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    return exc.value.problems


def test_validate_refuses_the_alias_bomb_at_once_with_one_line() -> None:
    bomb = CASES / "alias_bomb" / "edge.yaml"
    assert bomb.stat().st_size < 1024
    started = time.monotonic()
    proc = subprocess.run(
        [EDGE, "config", "validate", str(bomb)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"{bomb}: its YAML aliases (*name) expand it to more than 1,000,000 values; "
        "a config is far smaller, so check the anchors (&name) and aliases"
    ]
    assert time.monotonic() - started < 20  # generous: the bomb took minutes and GBs before


def test_merge_keys_and_anchors_under_x_keys_are_ordinary_config(tmp_path: Path) -> None:
    path = tmp_path / "edge.yaml"
    path.write_text(
        CLOUD + "x-line: &line {type: simulator, scan_interval_ms: 500}\n"
        "x-metrics: &metrics [{name: m, tag: 'const(1)'}]\n"
        "services:\n"
        + "".join(
            f"  - <<: *line\n    name: s{i}\n    things: [{{thing_key: k{i}, metrics: *metrics}}]\n"
            for i in range(200)
        )
    )
    config = load_config(path)
    assert [s.name for s in config.services][:2] == ["s0", "s1"]
    assert all(s.scan_interval_ms == 500 for s in config.services)


def test_aliases_that_expand_to_a_plant_sized_config_pass() -> None:
    metric = {"name": "m", "tag": "const(1)"}
    metrics = [dict(metric, name=f"m{i}") for i in range(100)]
    things = [{"thing_key": f"k{i}", "metrics": metrics} for i in range(100)]  # shared list
    config = parse_config(
        {
            "cloud": {"access_key": "ak", "secret_key": "sk"},
            "services": [{"type": "simulator", "things": things}],
        }
    )
    assert sum(len(t.metrics) for t in config.services[0].things) == 10_000


def test_depth_through_chained_anchors_is_measured_not_just_the_written_depth() -> None:
    # each anchor is written 40 levels deep; the second one holds the first: 80 levels
    def nest(levels: int, leaf: object) -> object:
        for _ in range(levels):
            leaf = [leaf]
        return leaf

    inner = nest(40, "x")
    outer = nest(40, inner)
    with pytest.raises(ConfigError) as exc:
        parse_config({"cloud": {}, "x-a": inner, "x-b": outer}, "edge.yaml")
    assert exc.value.problems == [
        "edge.yaml: values nest more than 64 levels deep; a config needs far fewer"
    ]


def test_a_file_over_the_size_limit_is_refused_unread(tmp_path: Path) -> None:
    path = tmp_path / "edge.yaml"
    with path.open("wb") as f:
        f.truncate(MAX_FILE_BYTES + 1)
    assert problems_of_path(path) == [f"{path}: larger than 64 MiB; a config file is far smaller"]


def test_an_endless_file_is_refused_not_read_forever() -> None:
    assert problems_of_path(Path("/dev/zero")) == [
        "/dev/zero: larger than 64 MiB; a config file is far smaller"
    ]


def test_a_directory_is_not_a_config(tmp_path: Path) -> None:
    assert problems_of_path(tmp_path) == [
        f"{tmp_path}: a directory; pass the path of your edge.yaml"
    ]


def problems_of_path(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    return exc.value.problems


@pytest.mark.parametrize(
    "service",
    [
        "{type: mqtt_listener, password: 31337}",
        "{type: http_listener, keys: [{access_key: a, secret_key: 31337}]}",
        "{type: opcua, endpoint: 'opc.tcp://127.0.0.1:4840', password: 31337.5}",
    ],
)
def test_no_secret_of_any_adapter_is_echoed(tmp_path: Path, service: str) -> None:
    problems = problems_of(CLOUD + f"services: [{service}]\n", tmp_path)
    assert len(problems) == 1 and problems[0].endswith("(got ***)")
    assert "31337" not in problems[0] and "put it in quotes" in problems[0]


def test_a_secret_of_the_wrong_shape_is_not_echoed_either(tmp_path: Path) -> None:
    problems = problems_of(
        CLOUD + "services: [{type: mqtt_listener, password: [s3cr3t]}]\n", tmp_path
    )
    assert problems and not any("s3cr3t" in p for p in problems)


def test_a_quoted_numeric_secret_is_kept_exactly(tmp_path: Path) -> None:
    path = tmp_path / "edge.yaml"
    path.write_text('cloud: {access_key: ak, secret_key: "0123"}\n')
    assert load_config(path).cloud.secret_key.get_secret_value() == "0123"


def test_other_values_are_still_echoed_to_help(tmp_path: Path) -> None:
    problems = problems_of(CLOUD + "console: {limits: {max_connections: 0}}\n", tmp_path)
    assert problems == [
        "console.limits.max_connections: Input should be greater than or equal to 1 (got 0)"
    ]
