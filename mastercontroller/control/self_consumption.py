"""``self_consumption``: hold the grid exchange at the connection point at ``grid_target_w``.

A PI(D) loop (``mastercontroller/pid.py``) on the site meter: import above the target ⇒
discharge more, export ⇒ charge more. Made for slow meters (HomeWizard P1, CT clamps: a new
value every 1–5 s) and slow inverters (1–2 s to follow):

- the loop acts only on a **new meter sample** (``image.grid_t`` changed), with the time since
  the previous one, so a held value is never integrated twice;
- unless ``ki`` is given, the integral gain follows the loop's delay: ``ki = 0.4 / (response_s
  + 1.5 × meter interval)``, the interval measured from the samples themselves. That keeps
  about 60° of phase margin for an integrator behind that delay: no oscillation, at the price
  of settling in ~3 delays;
- a ``deadband_w`` around the target (soft: the error shrinks by it) stops hunting on noise;
- ``reserve_soc``: a node at or below it does not discharge (kept for backup);
- the output is bounded by the running nodes' charge and discharge caps (back-calculation
  anti-windup), so it never winds up against a full or empty battery;
- **meter stale** (absent from the image): hold the last output for ``stale_hold_s``, then ramp
  to 0 W at ``stale_ramp_w_per_s``; when the meter returns, continue bumplessly from there.

Entering the mode (or a new leader) starts from the battery power measured now.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from pydantic import Field

from .. import pid
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
    stale_hold_s: float = Field(10.0, ge=0, le=600, description="meter stale: hold the output this long")
    stale_ramp_w_per_s: float = Field(500.0, gt=0, le=MAX_W, description="then ramp to 0 W at this rate")


@dataclass(frozen=True, slots=True)
class Memory:
    pid: pid.State
    output_w: float
    grid_t: float | None          # the last meter sample acted on
    interval_s: float             # the meter's sample interval, measured (smoothed)
    stale_since: float | None = None


def gains(params: Params, interval_s: float) -> pid.Gains:
    ki = params.ki if params.ki is not None else 0.4 / (params.response_s + 1.5 * interval_s + 1e-3)
    return pid.Gains(params.kp, ki, params.kd, reverse=True)


def _window(image: ClusterImage, params: Params) -> tuple[float, float, dict]:
    caps = reserve_limits(image, params.reserve_soc)
    return -sum(c for c, _ in caps.values()), sum(d for _, d in caps.values()), caps


def _measured(image: ClusterImage, params: Params) -> float:
    """The grid reading with the soft deadband applied around the target."""
    e = image.grid_w - params.grid_target_w
    e = max(0.0, e - params.deadband_w) if e > 0 else min(0.0, e + params.deadband_w)
    return params.grid_target_w + e


def start(image: ClusterImage, params: Params) -> Memory:
    lo, hi, _ = _window(image, params)
    out = clamp(image.battery_w, lo, hi)
    interval = max(image.dt_s, 0.1)
    meas = None if image.grid_w is None else _measured(image, params)
    state = pid.start(gains(params, interval), out, params.grid_target_w, meas)
    # the first step acts on the sample seen now
    return Memory(state, out, None, interval)


def step(image: ClusterImage, params: Params, memory: Memory) -> ModeResult:
    lo, hi, caps = _window(image, params)
    if image.grid_w is None:
        since = memory.stale_since if memory.stale_since is not None else image.t
        out = clamp(memory.output_w, lo, hi)
        if image.t - since > params.stale_hold_s:
            ramp = params.stale_ramp_w_per_s * image.dt_s
            out = clamp(0.0, out - ramp, out + ramp)
            note = f"meter stale {image.t - since:.0f} s: ramping to 0 W ({out:.0f} W)"
        else:
            note = f"meter stale {image.t - since:.0f} s: holding {out:.0f} W"
        return ModeResult(out, replace(memory, output_w=out, stale_since=since), note, caps)

    g = gains(params, memory.interval_s)
    if memory.stale_since is not None:  # the meter is back: continue from where the output is
        memory = Memory(pid.start(g, memory.output_w, params.grid_target_w, _measured(image, params)),
                        memory.output_w, None, memory.interval_s)
    new_sample = image.grid_t is None or image.grid_t != memory.grid_t
    if not new_sample:
        out = clamp(memory.output_w, lo, hi)
        return ModeResult(out, replace(memory, output_w=out), _note(image, params, out), caps)

    if image.grid_t is None or memory.grid_t is None:
        dt, interval = image.dt_s, memory.interval_s
    else:
        dt = image.grid_t - memory.grid_t
        interval = clamp(0.7 * memory.interval_s + 0.3 * dt, 0.05, 60.0)
    out, state = pid.step(g, memory.pid, params.grid_target_w, _measured(image, params), dt, lo, hi)
    return ModeResult(out, Memory(state, out, image.grid_t, interval), _note(image, params, out), caps)


def _note(image: ClusterImage, params: Params, out: float) -> str:
    return (f"self consumption: grid {image.grid_w:.0f} W (target {params.grid_target_w:.0f} W), "
            f"battery target {out:.0f} W")
