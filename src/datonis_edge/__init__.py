"""datonis-edge: industrial IoT edge gateway. The version comes from the package metadata
(pyproject.toml), its single source."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("datonis-edge")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+source"
