"""The mqtt_listener's configuration: the broker, the topics, where the thing_key comes from."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, field_validator

from ...config.models import ListenerBase


class MqttListenerService(ListenerBase):
    type: Literal["mqtt_listener"]
    host: str = "127.0.0.1"
    port: int = Field(1883, ge=1, le=65_535)
    client_id: str = ""
    username: str = ""
    password: SecretStr = SecretStr("")
    topics: list[str] = Field(default_factory=lambda: ["datonis-edge/+/data"], min_length=1)
    # Which topic level (0-based) holds the thing_key; None: the payload's "thing_key".
    thing_key_topic_level: int | None = Field(None, ge=0)
    qos: Literal[0, 1] = 1
    # The payload's key of the event time and its unit (ThingsBoard: "ts", ms): never a datapoint.
    timestamp_key: str = Field("timestamp", min_length=1)
    timestamp_unit: Literal["s", "ms", "us", "ns"] = "ms"
    # The payload's key of the values (ThingsBoard: "values"); without it, the other keys are.
    data_key: str = Field("data", min_length=1)

    @field_validator("topics")
    @classmethod
    def _topics_valid(cls, topics: list[str]) -> list[str]:
        for t in topics:
            if not t or ("#" in t and not t.endswith("#")):
                raise ValueError(f"'{t}' is not a valid MQTT topic filter ('#' only at the end)")
        return topics
