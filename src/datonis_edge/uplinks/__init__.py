"""Northbound uplinks, one module per transport."""

from __future__ import annotations

from ..config import CloudConfig
from .base import Uplink
from .datonis_http import DatonisHttpUplink
from .mqtt import MqttUplink


def make_uplink(cloud: CloudConfig) -> Uplink:
    if cloud.protocol == "mqtt":
        return MqttUplink(cloud)
    return DatonisHttpUplink(cloud)


__all__ = ["DatonisHttpUplink", "MqttUplink", "Uplink", "make_uplink"]
