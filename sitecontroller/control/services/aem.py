"""AEM: alert-state energy management for a battery holding frequency reserve (a limited energy
reservoir).

The grid is in *alert state* when the 5-minute moving average of the frequency has stayed
outside 50 Hz +/- `alert_band_hz` (the Nordic alert-state trigger: a deviation beyond half the
maximum steady-state deviation of 100 mHz, for 5 minutes). Entering and leaving it are alarm
events (the node raises and clears the warning GRID_ALERT). While alerted, a battery whose SOC
has left [`soc_low`, `soc_high`] manages its energy back toward that band with up to its AEM
capacity (charging below `soc_low`, discharging above `soc_high`), so that it can still deliver
its FCR-D and FFR for their endurance when the disturbance comes; in normal state it does nothing.

This is our reading of the energy-management rules for limited energy reservoirs in the Nordic
FCR technical requirements (2023); the thresholds are parameters so a TSO's values can be set.
"""
from __future__ import annotations

from collections import deque

from pydantic import Field, model_validator

from .base import NOMINAL_HZ, ServiceParams


class Params(ServiceParams):
    window_s: float = Field(300.0, ge=10, le=3600, description="the moving average's window")
    alert_band_hz: float = Field(0.05, gt=0, le=0.5, description="alert when the average is further from 50 Hz")
    soc_low: float = Field(0.3, ge=0, le=1, description="below this SOC, charge while alerted")
    soc_high: float = Field(0.7, ge=0, le=1, description="above this SOC, discharge while alerted")
    endurance_s: float = Field(0.0, ge=0, le=86400, description="energy reserved for AEM itself (none)")

    @model_validator(mode="after")
    def _order(self):
        if not self.soc_low < self.soc_high:
            raise ValueError(f"thresholds out of order: need soc_low < soc_high (got {self.soc_low}, {self.soc_high})")
        return self


class Controller:
    def __init__(self, params: Params):
        self.p = params
        self.samples: deque[tuple[float, float]] = deque()  # (t, hz) of the window
        self.total = 0.0
        self.alert = False
        self.average_hz: float | None = None

    def step(self, t: float, freq_hz: float | None, soc: float | None = None) -> float:
        p = self.p
        if freq_hz is not None:
            self.samples.append((t, freq_hz))
            self.total += freq_hz
        while self.samples and t - self.samples[0][0] > p.window_s:
            self.total -= self.samples.popleft()[1]
        full = bool(self.samples) and t - self.samples[0][0] >= 0.95 * p.window_s  # a whole window seen
        self.average_hz = self.total / len(self.samples) if self.samples else None
        self.alert = full and abs(self.average_hz - NOMINAL_HZ) > p.alert_band_hz
        if not self.alert or soc is None:
            return 0.0
        if soc < p.soc_low:
            return -1.0
        if soc > p.soc_high:
            return 1.0
        return 0.0
