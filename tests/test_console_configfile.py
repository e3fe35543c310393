"""The console's configuration file handling (masking, problem lines, enabling a service,
saved versions) and its alert log, as units."""

from __future__ import annotations

from pathlib import Path

import pytest

from datonis_edge.config import ConfigError
from datonis_edge.console import configfile
from datonis_edge.console.alertlog import AlertLog
from datonis_edge.status import Alert

TEXT = """\
cloud:
  protocol: http
  endpoint: http://127.0.0.1:9
  access_key: ak-1
  secret_key: "s3cr#t: x"
services:
  - name: line
    type: simulator
    scan_interval_ms: 200
    things:
      - thing_key: press-1
        metrics:
          - {name: n, tag: "counter(0, 1)"}
  - name: other
    type: simulator
    enabled: true
    things: []
"""


def test_secrets_are_masked_and_a_mask_left_keeps_the_stored_value() -> None:
    masked = configfile.mask_secrets(TEXT)
    assert "ak-1" not in masked and "s3cr#t" not in masked
    assert masked.count(configfile.MASK) == 2
    assert configfile.unmask(masked, TEXT) == TEXT
    changed = masked.replace("scan_interval_ms: 200", "scan_interval_ms: 500")
    assert configfile.validate(configfile.unmask(changed, TEXT)).cloud.secret_key.get_secret_value() == "s3cr#t: x"  # fmt: skip
    # a secret typed anew is kept as typed
    typed = masked.replace(f'access_key: "{configfile.MASK}"', "access_key: ak-2", 1)
    assert "access_key: ak-2" in configfile.unmask(typed, TEXT)


def test_a_problem_is_found_at_its_line() -> None:
    broken = TEXT.replace("scan_interval_ms: 200", "scan_interval_ms: 200\n    bogus: 1")
    with pytest.raises(ConfigError) as err:
        configfile.validate(broken)
    problem = err.value.problems[0]
    assert problem.startswith("services[0].bogus")
    assert configfile.line_of(broken, problem) == 10
    with pytest.raises(ConfigError) as err:
        configfile.validate("cloud:\n  protocol: [http\n")
    assert configfile.line_of("", err.value.problems[0]) == 3  # YAML's own line


def test_enabling_and_disabling_a_service_edits_one_line() -> None:
    off = configfile.set_enabled(TEXT, "line", False)
    assert off.replace("    enabled: false\n", "", 1) == TEXT
    assert [s.enabled for s in configfile.validate(off).services] == [False, True]
    other = configfile.set_enabled(TEXT, "other", False)
    assert "    enabled: false\n    things: []" in other
    with pytest.raises(KeyError):
        configfile.set_enabled(TEXT, "nope", True)


def test_saving_keeps_the_previous_version(tmp_path: Path) -> None:
    path = tmp_path / "config" / "edge.yaml"
    path.parent.mkdir()
    assert configfile.save_version(path, "one\n") is None  # nothing before it
    kept = configfile.save_version(path, "two\n")
    assert kept is not None and kept.read_text() == "one\n"
    assert path.read_text() == "two\n"
    assert "+two" in configfile.diff("one\n", "two\n")


def test_the_alert_log_rotates_and_reads_newest_first(tmp_path: Path) -> None:
    log = AlertLog(tmp_path, max_bytes=400)
    for i in range(12):
        log.write(Alert("warning" if i % 2 else "info", f"alert {i}", thing_key="press-1"))
    assert (tmp_path / "log" / "alerts.log.1").exists()
    read = log.read(5)
    assert [a["message"] for a in read] == [f"alert {i}" for i in range(11, 6, -1)]
    assert read[0]["level"] == "warning" and read[0]["thing_key"] == "press-1"
