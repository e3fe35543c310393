"""The Datonis MQTT transport's configuration (`cloud.protocol: mqtt | mqtts`)."""

from __future__ import annotations

from typing import Any, Literal
from urllib.parse import urlparse

from pydantic import Field, SecretStr, model_validator

from ...protocol.datonis import MQTT_HOST, MQTT_PORT, MQTTS_PORT
from ..options import DatonisTransportOptions

# keys only the plain-broker uplink has: an old config that meant a broker by `mqtt`
BROKER_ONLY = ("topic", "alerts_topic", "heartbeat_topic", "qos", "username", "password")
PROXY_KEYS = ("proxy_host", "proxy_port", "proxy_username", "proxy_password")


class DatonisMqttCloud(DatonisTransportOptions):
    protocol: Literal["mqtt", "mqtts"]
    endpoint: str = ""  # default: (mqtt|mqtts)://telemetry.datonis.io:(1883|8883)
    access_key: SecretStr = SecretStr("")
    secret_key: SecretStr = SecretStr("")
    # how long a message waits for its httpAck before it is sent again (spec §6: 100 s)
    ack_timeout_ms: int = Field(100_000, ge=100, le=3_600_000)

    @model_validator(mode="before")
    @classmethod
    def _not_a_broker(cls, data: Any) -> Any:
        if isinstance(data, dict):
            old = [k for k in BROKER_ONLY if k in data]
            if old:
                raise ValueError(
                    f"{old[0]}: protocol: mqtt is the Datonis MQTT transport; for a plain "
                    "MQTT broker write protocol: mqtt_broker"
                )
        return data

    @model_validator(mode="after")
    def _check(self) -> DatonisMqttCloud:
        if not self.endpoint:
            port = MQTTS_PORT if self.protocol == "mqtts" else MQTT_PORT
            self.endpoint = f"{self.protocol}://{MQTT_HOST}:{port}"
        url = urlparse(self.endpoint)
        if url.scheme != self.protocol or not url.hostname:
            raise ValueError(
                f"endpoint: '{self.endpoint}' is not an {self.protocol}:// URL; write it like "
                f"{self.protocol}://{MQTT_HOST}:{MQTTS_PORT if self.protocol == 'mqtts' else MQTT_PORT}"
            )
        for key in ("access_key", "secret_key"):
            if not getattr(self, key).get_secret_value():
                raise ValueError(
                    f"{key}: required for the Datonis platform; copy it from the "
                    "Datonis console (Settings → Access keys) or write ${ENV_VAR}"
                )
        if self.protocol == "mqtt" and (self.ca_file or self.client_cert):
            key = "ca_file" if self.ca_file else "client_cert"
            raise ValueError(f"{key}: TLS needs protocol: mqtts (and an mqtts:// endpoint)")
        for key in PROXY_KEYS:
            if getattr(self, key) is not None:
                raise ValueError(
                    f"{key}: the Datonis MQTT transport goes direct (as the Datonis SDKs: "
                    "proxies are for HTTP); use protocol: https to go through a proxy"
                )
        return self

    @property
    def host(self) -> str:
        return urlparse(self.endpoint).hostname or MQTT_HOST

    @property
    def port(self) -> int:
        return urlparse(self.endpoint).port or (
            MQTTS_PORT if self.protocol == "mqtts" else MQTT_PORT
        )
