"""Northbound uplinks, one folder per transport; `REGISTRY` in base.py lists them."""

from __future__ import annotations

from .base import REGISTRY, Uplink, make_uplink

__all__ = ["REGISTRY", "Uplink", "make_uplink"]
