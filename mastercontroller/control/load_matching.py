"""``load_matching`` (peak shaving): keep grid import below ``import_limit_w`` and export below
``export_limit_w``; idle in between, or recharge between peaks.

- Grid outside the band ``[-export_limit_w, import_limit_w]``: a PI loop (``pid.py``, acting on
  new meter samples, gains as in ``self_consumption``) drives the battery until the grid sits
  on the violated limit (import above the limit ⇒ discharge, export beyond it ⇒ charge).
- Inside the band: the battery returns toward its rest value — 0 W, or ``-recharge_w`` while the
  cluster SOC is below ``recharge_soc`` — at most ``return_w_per_s``, and never by more than
  half the room left to the limit it moves toward, so recharging never makes a new peak.
- ``reserve_soc``: no node discharges at or below it. Meter samples, gains, the output window
  (nodes' caps and cluster limits) and the stale meter (hold, then ramp to 0 W): ``grid_loop.py``.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from pydantic import Field, model_validator

from .. import pid
from . import grid_loop
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
    stale_hold_s: float = Field(10.0, ge=0, le=grid_loop.STALE_HOLD_MAX_S)
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
    samples: grid_loop.Samples
    stale_since: float | None = None


def start(image: ClusterImage, params: Params) -> Memory:
    caps = reserve_limits(image, params.reserve_soc)
    return Memory(None, clamp(image.battery_w, *grid_loop.window(image, caps)), grid_loop.Samples())


def step(image: ClusterImage, params: Params, memory: Memory) -> ModeResult:
    caps = reserve_limits(image, params.reserve_soc)
    lo, hi = grid_loop.window(image, caps)
    if image.grid_w is None:
        out, since, note = grid_loop.stale_output(image, memory.output_w, memory.stale_since, params.stale_hold_s,
                                                  params.stale_ramp_w_per_s, lo, hi)
        return ModeResult(out, replace(memory, pid=None, output_w=out, stale_since=since), note, caps)
    if memory.stale_since is not None:
        memory = Memory(None, memory.output_w, memory.samples)
    new = grid_loop.next_sample(image, memory.samples)
    if new is None:  # no new sample: hold
        out = clamp(memory.output_w, lo, hi)
        return ModeResult(out, replace(memory, output_w=out), _note(image, params, out), caps)

    dt, samples = new
    g = image.grid_w
    bound = params.import_limit_w if g > params.import_limit_w else \
        -params.export_limit_w if g < -params.export_limit_w else None
    if bound is not None:  # shave: the loop holds the grid on the violated limit
        gains = grid_loop.gains(params.kp, params.ki, 0.0, params.response_s, samples.interval_s)
        state = memory.pid if memory.pid is not None else pid.start(gains, memory.output_w, bound, g)
        out, state = pid.step(gains, state, bound, g, dt, lo, hi)
        return ModeResult(out, Memory(state, out, samples), _note(image, params, out), caps)

    soc = image.soc
    rest = -params.recharge_w if params.recharge_w > 0 and soc is not None and soc < params.recharge_soc else 0.0
    out = memory.output_w
    if rest < out:   # less discharge / more charge raises the import: use half the room below the import limit
        out = max(rest, out - min(params.return_w_per_s * dt, 0.5 * (params.import_limit_w - g)))
    elif rest > out:  # less charge raises the export: half the room below the export limit
        out = min(rest, out + min(params.return_w_per_s * dt, 0.5 * (g + params.export_limit_w)))
    out = clamp(out, lo, hi)
    return ModeResult(out, Memory(None, out, samples), _note(image, params, out), caps)


def _note(image: ClusterImage, params: Params, out: float) -> str:
    return (f"peak shaving: grid {image.grid_w:.0f} W (band -{params.export_limit_w:.0f}..+{params.import_limit_w:.0f} W), "
            f"battery target {out:.0f} W")
