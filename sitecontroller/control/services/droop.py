"""Droop with four thresholds f1 < f2 < f3 < f4 (a grid operator's frequency-watt curve):
below f2 the node discharges in proportion to the deviation, full at f1 and below; above f3
it charges, full at f4 and above; between f2 and f3 (the deadband) nothing."""
from __future__ import annotations

from pydantic import Field, model_validator

from .base import FILTER_FIELD, Linear, ServiceParams, clip



class Params(ServiceParams):
    f1_hz: float = Field(49.5, ge=45, le=55, description="full discharge at and below")
    f2_hz: float = Field(49.8, ge=45, le=55, description="discharge begins below")
    f3_hz: float = Field(50.2, ge=45, le=55, description="charge begins above")
    f4_hz: float = Field(50.5, ge=45, le=55, description="full charge at and above")
    filter_s: float = FILTER_FIELD
    endurance_s: float = Field(900.0, ge=0, le=86400, description="full power this long, each way")

    @model_validator(mode="after")
    def _order(self):
        f = (self.f1_hz, self.f2_hz, self.f3_hz, self.f4_hz)
        if not f[0] < f[1] < f[2] < f[3]:
            raise ValueError(f"thresholds out of order: need f1 < f2 < f3 < f4 (got {', '.join(map(str, f))})")
        return self



class Controller(Linear):
    def __init__(self, params: Params):
        f1, f2, f3, f4 = params.f1_hz, params.f2_hz, params.f3_hz, params.f4_hz

        def fraction(f: float) -> float:
            if f < f2:
                return clip((f2 - f) / (f2 - f1))
            if f > f3:
                return -clip((f - f3) / (f4 - f3))
            return 0.0
        super().__init__(fraction, params.filter_s)
