"""FCR-N (Nordic frequency containment reserve for normal operation): symmetric and linear,
full discharge at 49.9 Hz, full charge at 50.1 Hz, 0 at 50.0 Hz (an optional deadband around
it). Endurance: one hour at full power each way (limited energy reservoirs, Nordic FCR
technical requirements 2023)."""
from __future__ import annotations

from pydantic import Field

from .base import FILTER_FIELD, NOMINAL_HZ, Linear, ServiceParams, clip



class Params(ServiceParams):
    band_hz: float = Field(0.1, gt=0, le=1, description="full response this far from 50 Hz")
    deadband_hz: float = Field(0.0, ge=0, le=0.05, description="no response this close to 50 Hz")
    filter_s: float = FILTER_FIELD
    endurance_s: float = Field(3600.0, ge=0, le=86400, description="full power this long, each way")



def curve(params: Params):
    band, dead = params.band_hz, params.deadband_hz

    def fraction(f: float) -> float:
        dev = NOMINAL_HZ - f
        if abs(dev) <= dead:
            return 0.0
        return clip(dev / band, -1.0, 1.0)
    return fraction


class Controller(Linear):
    def __init__(self, params: Params):
        super().__init__(curve(params), params.filter_s)
