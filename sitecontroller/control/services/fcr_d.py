"""FCR-D (Nordic frequency containment reserve for disturbances), up and down.

Up: linear between `start_hz` 49.9 Hz (0) and `full_hz` 49.5 Hz (full discharge); down:
linear between 50.1 Hz (0) and 50.5 Hz (full charge). The market asks 50 % within 5 s and
100 % within 30 s of a step; a battery answers within a cycle, so the optional filter only
smooths. Endurance: 20 minutes at full power (limited energy reservoirs, Nordic FCR
technical requirements 2023).
"""
from __future__ import annotations

from typing import ClassVar

from pydantic import Field, model_validator

from .base import FILTER_FIELD, Linear, ServiceParams, clip


class UpParams(ServiceParams):
    UP: ClassVar[bool] = True
    start_hz: float = Field(49.9, ge=45, le=55, description="the response begins here")
    full_hz: float = Field(49.5, ge=45, le=55, description="the response is full here")
    filter_s: float = FILTER_FIELD
    endurance_s: float = Field(1200.0, ge=0, le=86400, description="full power this long: reserved energy")

    @model_validator(mode="after")
    def _order(self):
        if self.UP and not self.full_hz < self.start_hz:
            raise ValueError(f"thresholds out of order: need full_hz < start_hz (got {self.full_hz}, {self.start_hz})")
        if not self.UP and not self.start_hz < self.full_hz:
            raise ValueError(f"thresholds out of order: need start_hz < full_hz (got {self.start_hz}, {self.full_hz})")
        return self


class DownParams(UpParams):
    UP: ClassVar[bool] = False
    start_hz: float = Field(50.1, ge=45, le=55, description="the response begins here")
    full_hz: float = Field(50.5, ge=45, le=55, description="the response is full here")



class Controller(Linear):
    def __init__(self, params: UpParams):
        start, span = params.start_hz, abs(params.start_hz - params.full_hz)
        if params.UP:
            super().__init__(lambda f: clip((start - f) / span), params.filter_s)
        else:
            super().__init__(lambda f: -clip((f - start) / span), params.filter_s)
