"""Southbound adapters, one folder per protocol; `REGISTRY` in base.py lists them. Adapter
modules are imported on first use: a gateway without OPC UA never loads asyncua."""

from __future__ import annotations

from .base import REGISTRY, Adapter, ReadingSink, Rejected, adapter_class, reading

__all__ = ["REGISTRY", "Adapter", "ReadingSink", "Rejected", "adapter_class", "reading"]
