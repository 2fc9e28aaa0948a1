"""What the modes that steer the grid exchange share (``self_consumption``, ``load_matching``):
meter samples, the loop's gains, its output window and the stale-meter fallback.

- **Samples.** A loop acts only on a new meter sample (``image.grid_t`` changed), with the
  time since the previous one. That interval is measured and smoothed; a gap longer than
  three intervals (the meter was stale, the leader changed, the reporting node changed and
  with it the clock of ``grid_t``) is integrated as one interval, so a gap never counts as
  if the error had lasted all along, and moves the estimate at most to twice its value
  (a meter slower than assumed is learnt in a few samples, one long gap is not).
- **Gains.** Unless ``ki`` is given, the integral gain follows the loop's delay: ``0.4 /
  (response_s + 1.5 × meter interval)``, about 60° of phase margin for an integrator behind
  that delay: no oscillation with slow meters, at the price of settling in ~3 delays.
- **Window.** The running nodes' caps after the mode's reserve, and the cluster limits
  (``image.limit_*``): the PID's anti-windup works against the window the cluster really has.
- **Stale meter.** Hold the output ``stale_hold_s`` (at most 30 s), then ramp to 0 W.
"""
from __future__ import annotations

from dataclasses import dataclass

from .. import pid
from .base import ClusterImage, clamp

FIRST_INTERVAL_S = 1.0   # the meter interval assumed until samples have been seen
MAX_INTERVAL_S = 60.0
STALE_HOLD_MAX_S = 30.0


@dataclass(frozen=True, slots=True)
class Samples:
    grid_t: float | None = None        # the last sample acted on
    interval_s: float = FIRST_INTERVAL_S


def next_sample(image: ClusterImage, seen: Samples) -> tuple[float, Samples] | None:
    """(dt since the previous sample, the updated tracking) for a new sample, else None."""
    if image.grid_w is None or (image.grid_t is not None and image.grid_t == seen.grid_t):
        return None
    if image.grid_t is None or seen.grid_t is None:
        return image.dt_s, Samples(image.grid_t, seen.interval_s)
    dt = image.grid_t - seen.grid_t
    if dt <= 0:  # another clock (the reporting node changed): one interval
        return seen.interval_s, Samples(image.grid_t, seen.interval_s)
    interval = clamp(min(2 * seen.interval_s, 0.7 * seen.interval_s + 0.3 * dt), 0.05, MAX_INTERVAL_S)
    if dt > 3 * seen.interval_s:  # a gap or a slower meter than assumed: one interval, not the gap
        return seen.interval_s, Samples(image.grid_t, interval)
    return dt, Samples(image.grid_t, interval)


def gains(kp: float, ki: float | None, kd: float, response_s: float, interval_s: float) -> pid.Gains:
    auto = 0.4 / (response_s + 1.5 * interval_s + 1e-3)
    return pid.Gains(kp, auto if ki is None else ki, kd, reverse=True)


def window(image: ClusterImage, caps: dict) -> tuple[float, float]:
    """(lowest, highest) cluster target: the nodes' caps after the mode's own, and the cluster limits."""
    charge = sum(c for c, _ in caps.values())
    discharge = sum(d for _, d in caps.values())
    if image.limit_charge_w is not None:
        charge = min(charge, image.limit_charge_w)
    if image.limit_discharge_w is not None:
        discharge = min(discharge, image.limit_discharge_w)
    return -charge, discharge


def stale_output(image: ClusterImage, output_w: float, since: float | None, hold_s: float, ramp_w_per_s: float,
                 lo: float, hi: float) -> tuple[float, float, str]:
    """The meter is absent: (output, stale since, note). Hold, then ramp to 0 W."""
    since = image.t if since is None else since
    out = clamp(output_w, lo, hi)
    age = image.t - since
    if age > min(hold_s, STALE_HOLD_MAX_S):
        step = ramp_w_per_s * image.dt_s
        out = clamp(0.0, out - step, out + step)
        return out, since, f"meter stale {age:.0f} s: ramping to 0 W ({out:.0f} W)"
    return out, since, f"meter stale {age:.0f} s: holding {out:.0f} W"
