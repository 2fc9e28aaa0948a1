"""What every grid-service controller shares (DESIGN §2.8: fast reactions at the node).

A service controller is pure in its inputs and its own small state: `step(t, freq_hz, soc)` takes
the node's monotonic time, its frequency measurement (None: no fresh measurement) and its SOC
(None: unknown; only energy management uses it) and returns the *fraction* of the node's allocated capacity to deliver now, + = discharge
(-1..1). The node multiplies it by its allocation and adds it to the setpoint after the base
ramp, within the limiter's window (`control/decide.py`): a response is never ramp-limited
and never leaves the battery's limits.

A module per service has `Params` (strict, ranged, thresholds checked in order; `endurance_s`:
how long the service must be able to deliver full power, what the allocation reserves in
energy) and `Controller(params)`; `SERVICES` in `__init__.py` names each with its direction.
"""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

NOMINAL_HZ = 50.0


class ServiceParams(BaseModel):
    """Base of every service's parameters: strict keys, finite numbers, immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


def clip(x: float, lo: float = 0.0, hi: float = 1.0) -> float:
    return lo if x < lo else hi if x > hi else x


class Linear:
    """A static frequency -> fraction curve with an optional first-order filter on its output
    (`filter_s`; 0: none). No measurement: the output decays to 0 at once (no response on
    unknown frequency)."""

    def __init__(self, curve, filter_s: float = 0.0):
        self.curve, self.filter_s = curve, filter_s
        self.out, self._t = 0.0, None

    def step(self, t: float, freq_hz: float | None, soc: float | None = None) -> float:
        if freq_hz is None:
            self.out, self._t = 0.0, None
            return 0.0
        target = self.curve(freq_hz)
        if self.filter_s <= 0 or self._t is None:
            self.out = target
        else:
            dt = max(0.0, t - self._t)
            self.out += (target - self.out) * min(1.0, dt / self.filter_s)
        self._t = t
        return self.out


FILTER_FIELD = Field(0.0, ge=0, le=10, description="first-order filter on the response, s (0: none)")
