"""FFR (Fingrid's fast frequency reserve): full power at once when the frequency falls to the
activation level, held for the support duration, then released at most 20 % of the capacity
per second; after an activation no new one for the blocking time, and only once the frequency
is back above the activation level. After the release the energy delivered is recovered by
charging at most `recovery_fraction` of the capacity (25 %), only while the frequency is in the
normal band (>= 49.9 Hz): a recovery never deepens a disturbance.

The market's full-activation times (from the frequency crossing the level to full power at
the inverter): 1.3 s at 49.7 Hz, 1.0 s at 49.6 Hz, 0.7 s at 49.5 Hz (`FULL_ACTIVATION_S`).
The controller asks for full power in the cycle that sees the crossing; the rest of the time
is measurement, the cycle and the inverter.
"""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from .base import ServiceParams

FULL_ACTIVATION_S = {49.7: 1.3, 49.6: 1.0, 49.5: 0.7}
RECOVERY_MIN_HZ = 49.9  # the normal band's lower edge


class Params(ServiceParams):
    activation_hz: Literal[49.7, 49.6, 49.5] = Field(49.7, description="the activation level")
    support_s: Literal[5, 30] = Field(5, description="full power this long after an activation (short or long)")
    deactivation_per_s: float = Field(0.2, gt=0, le=0.2, description="release at most this fraction of the capacity per s")
    blocking_s: float = Field(900.0, ge=0, le=3600, description="no new activation this long after one began")
    recovery_fraction: float = Field(0.25, ge=0, le=1, description="recharge the energy delivered at most this "
                                     "fraction of the capacity (0: no recovery)")

    @property
    def endurance_s(self) -> float:
        return self.support_s + 1.0 / self.deactivation_per_s / 2  # the support, then the ramp down


class Controller:
    """idle -> support (1.0 for support_s) -> release (ramp to 0) -> blocked -> idle."""

    def __init__(self, params: Params):
        self.p = params
        self.phase = "idle"
        self.out = 0.0
        self.since: float | None = None  # when this phase began
        self.activated_at: float | None = None
        self.debt_s = 0.0  # energy delivered and not yet recovered, in seconds at full capacity
        self._t: float | None = None

    def step(self, t: float, freq_hz: float | None, soc: float | None = None) -> float:
        p, dt = self.p, 0.0 if self._t is None else max(0.0, t - self._t)
        self._t = t
        if self.out > 0:
            self.debt_s += self.out * dt  # what the last step delivered
        if self.phase == "idle" and freq_hz is not None and freq_hz <= p.activation_hz:
            self.phase, self.since, self.activated_at, self.out = "support", t, t, 1.0
        elif self.phase == "support" and t - self.since >= p.support_s:
            self.phase, self.since = "release", t  # full power until this moment: the ramp starts here
        elif self.phase == "release":
            self.out = max(0.0, self.out - p.deactivation_per_s * dt)
            if self.out == 0.0:
                self.phase, self.since = "blocked", t
        elif self.phase == "blocked" and t - self.activated_at >= p.blocking_s \
                and freq_hz is not None and freq_hz > p.activation_hz:
            self.phase, self.since = "idle", t
        if self.phase in ("blocked", "idle"):  # recovery: after the release, in the normal band only
            if self.out < 0:
                self.debt_s = max(0.0, self.debt_s + self.out * dt)  # what the last step recovered
            normal = freq_hz is not None and freq_hz >= RECOVERY_MIN_HZ
            self.out = -min(p.recovery_fraction, self.debt_s / dt if dt > 0 else p.recovery_fraction) \
                if normal and self.debt_s > 0 and p.recovery_fraction > 0 else 0.0
        return self.out
