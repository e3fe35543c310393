"""Southbound adapters, one module per protocol; `REGISTRY` maps a service type to its class."""

from __future__ import annotations

from .base import Adapter, ReadingSink, Rejected, reading
from .http_listener import HttpListenerAdapter
from .modbus_tcp import ModbusTcpAdapter
from .mqtt_listener import MqttListenerAdapter
from .opcua import OpcUaAdapter
from .simulator import SimulatorAdapter

REGISTRY: dict[str, type[Adapter]] = {
    "simulator": SimulatorAdapter,
    "http_listener": HttpListenerAdapter,
    "mqtt_listener": MqttListenerAdapter,
    "modbus_tcp": ModbusTcpAdapter,
    "opcua": OpcUaAdapter,
}

__all__ = ["REGISTRY", "Adapter", "ReadingSink", "Rejected", "reading"]
