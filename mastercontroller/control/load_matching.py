"""``load_matching`` (peak shaving): keep grid import below ``import_limit_w`` and export below
``export_limit_w``; idle in between, or recharge between peaks.

- Grid outside the band ``[-export_limit_w, import_limit_w]``: a PI loop (``pid.py``, acting on
  new meter samples, gains as in ``self_consumption``) drives the battery until the grid sits
  on the violated limit (import above the limit ⇒ discharge, export beyond it ⇒ charge).
- Inside the band: the battery returns toward its rest value — 0 W, or ``-recharge_w`` while the
  cluster SOC is below ``recharge_soc`` — at most ``return_w_per_s``, and never by more than
  half the room left to the limit it moves toward, so recharging never makes a new peak.
- ``reserve_soc``: no node discharges at or below it. Meter stale: as in ``self_consumption``
  (hold, then ramp to 0 W).
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from pydantic import Field, model_validator

from .. import pid
from .base import MAX_W, ClusterImage, ModeParams, ModeResult, clamp, reserve_limits

NAME = "load_matching"


class Params(ModeParams):
    import_limit_w: float = Field(..., ge=0, le=MAX_W, description="grid import above this is shaved")
    export_limit_w: float = Field(MAX_W, ge=0, le=MAX_W, description="grid export above this is absorbed")
    recharge_w: float = Field(0.0, ge=0, le=MAX_W, description="recharge between peaks at most at this power")
    recharge_soc: float = Field(0.9, ge=0, le=1, description="recharge up to this cluster SOC")
    reserve_soc: float = Field(0.10, ge=0, le=1)
    return_w_per_s: float = Field(200.0, gt=0, le=MAX_W, description="inside the band, move back to rest this fast")
    kp: float = Field(0.2, ge=0, le=5)
    ki: float | None = Field(None, ge=0, le=10)
    response_s: float = Field(2.0, ge=0, le=60)
    stale_hold_s: float = Field(10.0, ge=0, le=600)
    stale_ramp_w_per_s: float = Field(500.0, gt=0, le=MAX_W)

    @model_validator(mode="after")
    def _band(self):
        if self.import_limit_w + self.export_limit_w <= 0:
            raise ValueError("import_limit_w and export_limit_w cannot both be 0 (the band would be empty)")
        return self


@dataclass(frozen=True, slots=True)
class Memory:
    pid: pid.State | None          # None: inside the band (no loop running)
    output_w: float
    grid_t: float | None
    interval_s: float
    stale_since: float | None = None


def _gains(params: Params, interval_s: float) -> pid.Gains:
    ki = params.ki if params.ki is not None else 0.4 / (params.response_s + 1.5 * interval_s + 1e-3)
    return pid.Gains(params.kp, ki, 0.0, reverse=True)


def start(image: ClusterImage, params: Params) -> Memory:
    caps = reserve_limits(image, params.reserve_soc)
    out = clamp(image.battery_w, -sum(c for c, _ in caps.values()), sum(d for _, d in caps.values()))
    return Memory(None, out, None, max(image.dt_s, 0.1))


def step(image: ClusterImage, params: Params, memory: Memory) -> ModeResult:
    caps = reserve_limits(image, params.reserve_soc)
    lo, hi = -sum(c for c, _ in caps.values()), sum(d for _, d in caps.values())
    if image.grid_w is None:
        since = memory.stale_since if memory.stale_since is not None else image.t
        out = clamp(memory.output_w, lo, hi)
        if image.t - since > params.stale_hold_s:
            ramp = params.stale_ramp_w_per_s * image.dt_s
            out = clamp(0.0, out - ramp, out + ramp)
        return ModeResult(out, replace(memory, pid=None, output_w=out, stale_since=since),
                          f"meter stale {image.t - since:.0f} s: {out:.0f} W", caps)
    if memory.stale_since is not None:
        memory = Memory(None, memory.output_w, None, memory.interval_s)
    if image.grid_t is not None and image.grid_t == memory.grid_t:  # no new sample: hold
        out = clamp(memory.output_w, lo, hi)
        return ModeResult(out, replace(memory, output_w=out), _note(image, params, out), caps)

    if image.grid_t is None or memory.grid_t is None:
        dt, interval = image.dt_s, memory.interval_s
    else:
        dt = image.grid_t - memory.grid_t
        interval = clamp(0.7 * memory.interval_s + 0.3 * dt, 0.05, 60.0)
    g = image.grid_w
    bound = params.import_limit_w if g > params.import_limit_w else \
        -params.export_limit_w if g < -params.export_limit_w else None
    if bound is not None:  # shave: the loop holds the grid on the violated limit
        gains = _gains(params, interval)
        state = memory.pid if memory.pid is not None else pid.start(gains, memory.output_w, bound, g)
        out, state = pid.step(gains, state, bound, g, dt, lo, hi)
        return ModeResult(out, Memory(state, out, image.grid_t, interval), _note(image, params, out), caps)

    soc = image.soc
    rest = -params.recharge_w if params.recharge_w > 0 and soc is not None and soc < params.recharge_soc else 0.0
    out = memory.output_w
    if rest < out:   # less discharge / more charge raises the import: use half the room below the import limit
        out = max(rest, out - min(params.return_w_per_s * dt, 0.5 * (params.import_limit_w - g)))
    elif rest > out:  # less charge raises the export: half the room below the export limit
        out = min(rest, out + min(params.return_w_per_s * dt, 0.5 * (g + params.export_limit_w)))
    out = clamp(out, lo, hi)
    return ModeResult(out, Memory(None, out, image.grid_t, interval), _note(image, params, out), caps)


def _note(image: ClusterImage, params: Params, out: float) -> str:
    return (f"peak shaving: grid {image.grid_w:.0f} W (band -{params.export_limit_w:.0f}..+{params.import_limit_w:.0f} W), "
            f"battery target {out:.0f} W")
