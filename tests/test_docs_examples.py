"""Every YAML example in the docs and in each protocol's README is a valid configuration, so the
docs cannot drift from the code. A full example (with `cloud:`) is validated as it is; an
example of one service (a list item with `type:`) is validated inside a minimal config."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from datonis_edge.root_config import ConfigError, parse_config

ROOT = Path(__file__).resolve().parent.parent
DOCS = sorted(
    [ROOT / "README.md", *(ROOT / "docs").glob("*.md"), *(ROOT / "src").rglob("README.md")]
)
FENCE = re.compile(r"^```ya?ml\n(.*?)^```", re.M | re.S)
CLOUD = {"protocol": "https", "access_key": "ak", "secret_key": "sk"}


def _examples() -> list[tuple[str, str]]:
    found = []
    for doc in DOCS:
        for i, m in enumerate(FENCE.finditer(doc.read_text(encoding="utf-8"))):
            found.append((f"{doc.relative_to(ROOT)}#{i + 1}", m.group(1)))
    return found


def _as_config(data: Any) -> dict[str, Any] | None:
    """The example as a whole config, or None when it is not a config (a compose file...)."""
    if isinstance(data, dict) and "cloud" in data:
        return data
    if isinstance(data, list) and data and all(isinstance(s, dict) and "type" in s for s in data):
        return {"cloud": CLOUD, "services": data}
    if isinstance(data, dict) and "type" in data and "things" in data:
        return {"cloud": CLOUD, "services": [data]}
    return None


# only the examples that are gateway configurations (not compose files or other YAML)
EXAMPLES = [(n, t) for n, t in _examples() if _as_config(yaml.safe_load(t)) is not None]


def test_the_docs_have_config_examples() -> None:
    assert len(EXAMPLES) >= 8, [n for n, _ in EXAMPLES]


@pytest.mark.parametrize(("name", "text"), EXAMPLES, ids=[n for n, _ in EXAMPLES])
def test_every_yaml_example_in_the_docs_is_valid(
    name: str, text: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for var in set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)", text)):
        monkeypatch.setenv(var, "from-the-environment")
    try:
        parse_config(_as_config(yaml.safe_load(text)), name)
    except ConfigError as exc:
        pytest.fail(f"{name} does not validate:\n" + "\n".join(exc.problems))
