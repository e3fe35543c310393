"""Every bad config gives its own clear error line and exit status 2 (cases live as data)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from datonis_edge.cli import app
from helpers import EDGE

ROOT = Path(__file__).resolve().parent.parent
# shared cases here; each protocol's own in adapters/<protocol>/testcases, uplinks/<t>/testcases
CASES = sorted(
    [
        *(p for p in (ROOT / "tests" / "config_cases").iterdir() if p.is_dir()),
        *(p for p in (ROOT / "src" / "datonis_edge").glob("*/*/testcases/*") if p.is_dir()),
    ]
)
IDS = [str(c.relative_to(ROOT)).replace("/testcases/", ":").split("/")[-1] for c in CASES]


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_bad_config_gives_its_error_line_and_exit_2(case: Path) -> None:
    config = case / "edge.yaml"
    expected = (case / "expected.err").read_text().replace("{file}", str(config)).strip()
    result = CliRunner().invoke(
        app, ["config", "validate", str(config)], env={"DATONIS_TEST_UNSET_SECRET": None}
    )
    assert result.exit_code == 2
    assert result.stderr.strip() == expected
    assert "Traceback" not in result.output


def test_there_are_at_least_ten_distinct_cases() -> None:
    lines = {(c / "expected.err").read_text() for c in CASES}
    assert len(CASES) >= 10 and len(lines) == len(CASES)


def test_valid_config_passes_and_hyphenated_keys_are_aliases(tmp_path: Path) -> None:
    config = tmp_path / "edge.yaml"
    config.write_text(
        "cloud: {protocol: https, access_key: ak, secret_key: sk}\n"
        "services:\n  - {type: simulator, scan-interval-ms: 500, things: [{thing_key: k, metrics: [{name: m, tag: 'const(1)'}]}]}\n"
    )
    result = CliRunner().invoke(app, ["config", "validate", str(config)])
    assert result.exit_code == 0, result.output
    assert "valid" in result.stdout


def test_run_with_a_bad_config_exits_2_with_the_error_and_no_traceback(tmp_path: Path) -> None:
    bad = CASES[0] / "edge.yaml"
    proc = subprocess.run(
        [
            EDGE,
            "run",
            "--datadirpath",
            str(tmp_path / "d"),
            "--config",
            str(bad),
            "--http-port",
            "0",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert (CASES[0] / "expected.err").read_text().replace(
        "{file}", str(bad)
    ).strip() in proc.stderr
    assert "Traceback" not in proc.stderr


def test_run_without_any_config_says_how_to_import_one(tmp_path: Path) -> None:
    proc = subprocess.run(
        [EDGE, "run", "--datadirpath", str(tmp_path / "d")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "--config" in proc.stderr and "Traceback" not in proc.stderr
