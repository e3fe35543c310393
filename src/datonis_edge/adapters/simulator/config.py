"""The simulator's configuration: waveforms and CSV replay as tags."""

from __future__ import annotations

from typing import Literal

from pydantic import model_validator

from ...config.models import ServiceBase
from .waveforms import TagError, parse_tag


class SimulatorService(ServiceBase):
    type: Literal["simulator"]

    @model_validator(mode="after")
    def _check_tags(self) -> SimulatorService:
        for ti, thing in enumerate(self.things):
            names = {m.name for m in thing.metrics}
            for mi, metric in enumerate(thing.metrics):
                if metric.tag:
                    try:
                        parse_tag(metric.tag)
                    except TagError as exc:
                        raise ValueError(f"things[{ti}].metrics[{mi}].tag: {exc}") from None
                for ii, name in enumerate(metric.inputs):
                    if name not in names:
                        raise ValueError(
                            f"things[{ti}].metrics[{mi}].inputs[{ii}]: '{name}' is not a metric of this thing"
                        )
        return self
