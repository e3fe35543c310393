"""The plain MQTT broker uplink's configuration (`cloud.protocol: mqtt_broker`): any broker, QoS 1."""

from __future__ import annotations

from typing import Literal
from urllib.parse import urlparse

from pydantic import Field, SecretStr, model_validator

from ...config.models import CloudBase


class MqttBrokerCloud(CloudBase):
    protocol: Literal["mqtt_broker"]
    endpoint: str
    topic: str = "datonis-edge/{thing_key}/events"
    alerts_topic: str = Field("datonis-edge/alerts", min_length=1)
    heartbeat_topic: str = Field("datonis-edge/heartbeat", min_length=1)
    qos: Literal[0, 1] = 1
    client_id: str = ""
    username: str = ""
    password: SecretStr = SecretStr("")

    @model_validator(mode="after")
    def _check(self) -> MqttBrokerCloud:
        url = urlparse(self.endpoint)
        if url.scheme not in ("mqtt", "tcp") or not url.hostname:
            raise ValueError(
                f"endpoint: '{self.endpoint}' is not an MQTT URL; write it like "
                "mqtt://broker.example.com:1883"
            )
        if not self.topic:
            raise ValueError("topic: empty; use a template like plant/{thing_key}/events")
        return self
