"""A protocol's entry in a registry: where its config model and its implementation live.

Both are named as `module:Class` relative to the package that keeps the registry, so that
listing a protocol imports nothing: the config model (light) is imported when the root config
is assembled, the implementation (pymodbus, asyncua, ...) only when a configured service
needs it. Imports nothing of the package.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import import_module
from typing import Any


@dataclass(frozen=True, slots=True)
class Plugin:
    name: str  # the `type` (services) or `protocol` (cloud) value that selects it
    config: str  # "folder.config:Model"
    implementation: str  # "folder.adapter:Class"
    package: str  # the package the two paths are relative to

    def config_model(self) -> type[Any]:
        return _load(self.package, self.config)

    def load(self) -> type[Any]:
        return _load(self.package, self.implementation)


def _load(package: str, ref: str) -> type[Any]:
    module, name = ref.split(":")
    return getattr(import_module(f"{package}.{module}"), name)
