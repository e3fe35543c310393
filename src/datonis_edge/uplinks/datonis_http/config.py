"""The Datonis HTTP API uplink's configuration (`cloud.protocol: https | http`)."""

from __future__ import annotations

from typing import Literal
from urllib.parse import urlparse

from pydantic import SecretStr, model_validator

from ..options import DatonisTransportOptions


class DatonisHttpCloud(DatonisTransportOptions):
    protocol: Literal["https", "http"] = "https"
    endpoint: str = "https://api.datonis.io"
    access_key: SecretStr = SecretStr("")
    secret_key: SecretStr = SecretStr("")

    @model_validator(mode="after")
    def _check(self) -> DatonisHttpCloud:
        url = urlparse(self.endpoint)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError(
                f"endpoint: '{self.endpoint}' is not an http(s) URL; "
                "write it like https://api.datonis.io"
            )
        for key in ("access_key", "secret_key"):
            if not getattr(self, key).get_secret_value():
                raise ValueError(
                    f"{key}: required for the Datonis platform; copy it from the "
                    "Datonis console (Settings → Access keys) or write ${ENV_VAR}"
                )
        return self
