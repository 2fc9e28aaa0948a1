"""``self_consumption``: hold the grid exchange at the connection point at ``grid_target_w``.

A PI(D) loop (``mastercontroller/pid.py``) on the site meter: import above the target ⇒
discharge more, export ⇒ charge more. Made for slow meters (HomeWizard P1, CT clamps: a new
value every 1–5 s) and slow inverters (1–2 s to follow); ``grid_loop.py`` has the details:

- the loop acts only on a **new meter sample**, with the time since the previous one, so a
  held value is never integrated twice;
- unless ``ki`` is given, the integral gain follows the measured meter interval and
  ``response_s``: no oscillation, at the price of settling in ~3 loop delays;
- a ``deadband_w`` around the target (soft: the error shrinks by it) stops hunting on noise;
- ``reserve_soc``: a node at or below it does not discharge (kept for backup);
- the output stays within the running nodes' caps and the cluster limits (back-calculation
  anti-windup), so it never winds up against a full or empty battery or a cluster limit;
- **meter stale**: hold the last output for ``stale_hold_s``, then ramp to 0 W at
  ``stale_ramp_w_per_s``; when the meter returns, continue bumplessly from there.

Entering the mode (or a new leader) starts from the battery power measured now.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from pydantic import Field

from .. import pid
from . import grid_loop
from .base import MAX_W, ClusterImage, ModeParams, ModeResult, clamp, reserve_limits

NAME = "self_consumption"


class Params(ModeParams):
    grid_target_w: float = Field(0.0, ge=-MAX_W, le=MAX_W, description="grid exchange to hold, + = import")
    deadband_w: float = Field(25.0, ge=0, le=100_000, description="errors within this are not corrected")
    reserve_soc: float = Field(0.10, ge=0, le=1, description="no node discharges at or below this SOC")
    kp: float = Field(0.2, ge=0, le=5, description="proportional gain (W per W of grid error)")
    ki: float | None = Field(None, ge=0, le=10, description="integral gain per s; null: from the measured delay")
    kd: float = Field(0.0, ge=0, le=60, description="derivative gain, s (on the measurement)")
    response_s: float = Field(2.0, ge=0, le=60, description="how long the inverters take to follow")
    stale_hold_s: float = Field(10.0, ge=0, le=grid_loop.STALE_HOLD_MAX_S,
                                description="meter stale: hold the output this long")
    stale_ramp_w_per_s: float = Field(500.0, gt=0, le=MAX_W, description="then ramp to 0 W at this rate")


@dataclass(frozen=True, slots=True)
class Memory:
    pid: pid.State
    output_w: float
    samples: grid_loop.Samples
    stale_since: float | None = None


def _gains(params: Params, interval_s: float) -> pid.Gains:
    return grid_loop.gains(params.kp, params.ki, params.kd, params.response_s, interval_s)


def _measured(image: ClusterImage, params: Params) -> float:
    """The grid reading with the soft deadband applied around the target."""
    e = image.grid_w - params.grid_target_w
    e = max(0.0, e - params.deadband_w) if e > 0 else min(0.0, e + params.deadband_w)
    return params.grid_target_w + e


def _restart(image: ClusterImage, params: Params, output_w: float, samples: grid_loop.Samples) -> Memory:
    meas = None if image.grid_w is None else _measured(image, params)
    return Memory(pid.start(_gains(params, samples.interval_s), output_w, params.grid_target_w, meas), output_w, samples)


def start(image: ClusterImage, params: Params) -> Memory:
    caps = reserve_limits(image, params.reserve_soc)
    return _restart(image, params, clamp(image.battery_w, *grid_loop.window(image, caps)), grid_loop.Samples())


def step(image: ClusterImage, params: Params, memory: Memory) -> ModeResult:
    caps = reserve_limits(image, params.reserve_soc)
    lo, hi = grid_loop.window(image, caps)
    if image.grid_w is None:
        out, since, note = grid_loop.stale_output(image, memory.output_w, memory.stale_since, params.stale_hold_s,
                                                  params.stale_ramp_w_per_s, lo, hi)
        return ModeResult(out, replace(memory, output_w=out, stale_since=since), note, caps)
    if memory.stale_since is not None:  # the meter is back: continue from where the output is
        memory = _restart(image, params, memory.output_w, memory.samples)
    new = grid_loop.next_sample(image, memory.samples)
    if new is None:
        out = clamp(memory.output_w, lo, hi)
        return ModeResult(out, replace(memory, output_w=out), _note(image, params, out), caps)
    dt, samples = new
    out, state = pid.step(_gains(params, samples.interval_s), memory.pid, params.grid_target_w,
                          _measured(image, params), dt, lo, hi)
    return ModeResult(out, Memory(state, out, samples), _note(image, params, out), caps)


def _note(image: ClusterImage, params: Params, out: float) -> str:
    return (f"self consumption: grid {image.grid_w:.0f} W (target {params.grid_target_w:.0f} W), "
            f"battery target {out:.0f} W")
