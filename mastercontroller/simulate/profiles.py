"""The scenario's load and PV as plant objects: its profile, with seeded noise and clouds.

They replace the plant's built-in daily shapes (``sitecontroller.sim.plant.Load`` / ``Solar``) and
draw their randomness from the site plant's rng (``step(rng, dt_s)``), so a seed fixes the day.
"""
from __future__ import annotations

import math

from sitecontroller.sim.plant import Load, Solar

from .scenario import DAY_S, LoadProfile, PvProfile

LOAD_TAU_S = 30.0        # load noise: correlation time
CLOUD_CLEAR_S = 300.0    # passing clouds: mean clear spell
CLOUD_COVER_S = 120.0    # mean covered spell
CLOUD_EDGE_S = 10.0      # how fast PV follows a cloud edge


class _Profile:
    def __init__(self, values: list[float], start_wall: float):
        self.values, self.n = list(values), len(values)
        self.slot = DAY_S / self.n
        self.start = start_wall

    def at(self, wall_s: float) -> float:
        x = (wall_s - self.start) / self.slot
        i = math.floor(x)
        a, b = self.values[i % self.n], self.values[(i + 1) % self.n]
        return a + (b - a) * (x - i)


class ProfileLoad(Load):
    """The scenario's load: the profile x (1 + seeded correlated noise of relative size ``noise``)."""

    def __init__(self, profile: LoadProfile, start_wall: float):
        super().__init__(avg_w=sum(profile.w) / len(profile.w))
        self.profile, self.amplitude = _Profile(profile.w, start_wall), profile.noise

    def power_w(self, wall_s: float) -> float:
        return max(0.0, self.profile.at(wall_s) * (1.0 + self.noise))

    def step(self, rng, dt_s: float) -> None:
        a = min(1.0, dt_s / LOAD_TAU_S)
        self.noise += -self.noise * a + rng.gauss(0.0, self.amplitude * math.sqrt(2.0 * a))
        self.noise = max(-0.9, min(2.0, self.noise))


class ProfileSolar(Solar):
    """The scenario's PV: the profile x transmission; passing clouds (seeded, on and off with mean
    spells CLOUD_CLEAR_S / CLOUD_COVER_S) take ``cloud`` of it away, with soft edges."""

    def __init__(self, profile: PvProfile, start_wall: float):
        super().__init__(peak_w=max(profile.w), cloud=1.0)
        self.profile, self.depth, self.covered = _Profile(profile.w, start_wall), profile.cloud, False

    def power_w(self, wall_s: float) -> float:
        return self.profile.at(wall_s) * self.cloud

    def step(self, rng, dt_s: float) -> None:
        if self.depth <= 0.0:
            return
        if rng.random() < dt_s / (CLOUD_COVER_S if self.covered else CLOUD_CLEAR_S):
            self.covered = not self.covered
        goal = 1.0 - self.depth if self.covered else 1.0
        self.cloud += (goal - self.cloud) * min(1.0, dt_s / CLOUD_EDGE_S)
