"""Southbound adapters, one module per protocol; `adapter_class` maps a service type to its
class. Modules are imported on first use: a gateway without OPC UA never loads asyncua."""

from __future__ import annotations

from importlib import import_module

from .base import Adapter, ReadingSink, Rejected, reading

REGISTRY: dict[str, str] = {
    "simulator": "simulator:SimulatorAdapter",
    "http_listener": "http_listener:HttpListenerAdapter",
    "mqtt_listener": "mqtt_listener:MqttListenerAdapter",
    "modbus_tcp": "modbus_tcp:ModbusTcpAdapter",
    "opcua": "opcua:OpcUaAdapter",
}


def adapter_class(service_type: str) -> type[Adapter]:
    module, name = REGISTRY[service_type].split(":")
    return getattr(import_module(f"{__name__}.{module}"), name)


__all__ = ["REGISTRY", "Adapter", "ReadingSink", "Rejected", "adapter_class", "reading"]
