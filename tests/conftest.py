from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from helpers import Gateway, Mosquitto, PlatformSim

# console_helpers holds asserts and fixtures; rewrite it before a test module imports it
pytest.register_assert_rewrite("console_helpers")


@pytest.fixture
def platform(tmp_path: Path) -> Iterator[PlatformSim]:
    sim = PlatformSim(tmp_path).start()
    yield sim
    sim.stop()


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    broker = Mosquitto(tmp_path).start()
    yield broker
    broker.stop()


@pytest.fixture
def shared_dir(tmp_path: Path, request: pytest.FixtureRequest) -> Path:
    """The data directory of a failover test: under DATONIS_EDGE_TEST_SHARED_DIR (an NFS
    mount, say) when set, else a temp directory."""
    root = os.environ.get("DATONIS_EDGE_TEST_SHARED_DIR")
    if not root:
        return tmp_path / "shared"
    path = Path(root) / f"{request.node.name}-{uuid.uuid4().hex[:8]}"
    path.mkdir(parents=True)
    return path


@pytest.fixture
def gateway_factory(tmp_path: Path) -> Iterator[Callable[..., Gateway]]:
    made: list[Gateway] = []

    def make(
        config: dict[str, Any] | None, datadir: Path | None = None, name: str = "gw"
    ) -> Gateway:
        gw = Gateway(tmp_path, datadir or tmp_path / "data", config, name=f"{name}{len(made)}")
        made.append(gw)
        return gw

    yield make
    for gw in made:
        gw.close()
