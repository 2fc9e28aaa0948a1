"""A PID controller as a pure function: gains and state in, output and new state out.

- **Derivative on measurement**: a setpoint step gives no derivative kick.
- **Output limits per call** (the cluster's limits change every cycle), with **anti-windup by
  back-calculation**: when the output saturates, the integral is set so that the unclamped
  output sits exactly on the limit, so the controller leaves the limit as soon as the
  error turns, however long it was saturated.
- **Bumpless start** (``start``): the integral is chosen so that the first output equals a
  given value (e.g. the power the cluster measures now), not zero.
- **Direction**: ``reverse=True`` means a measurement above the setpoint raises the output
  (grid import above target ⇒ discharge more).

No clock: ``dt_s`` is passed in; a ``dt_s <= 0`` step changes nothing but the output clamp.
"""
from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Gains:
    kp: float
    ki: float           # per second
    kd: float = 0.0     # seconds
    reverse: bool = False

    def __post_init__(self) -> None:
        for name in ("kp", "ki", "kd"):
            v = getattr(self, name)
            if not math.isfinite(v) or v < 0:
                raise ValueError(f"PID {name} must be a finite number >= 0, got {v!r}")


@dataclass(frozen=True, slots=True)
class State:
    integral: float = 0.0            # the I term, in output units
    last_measurement: float | None = None


def _error(gains: Gains, setpoint: float, measurement: float) -> float:
    return measurement - setpoint if gains.reverse else setpoint - measurement


def start(gains: Gains, output: float, setpoint: float, measurement: float | None) -> State:
    """The state whose next ``step`` (same setpoint and measurement) returns ``output``."""
    if measurement is None:
        return State(output, None)
    return State(output - gains.kp * _error(gains, setpoint, measurement), measurement)


def step(gains: Gains, state: State, setpoint: float, measurement: float, dt_s: float,
         out_min: float, out_max: float) -> tuple[float, State]:
    """(output clamped to [out_min, out_max], the new state)."""
    if out_min > out_max:
        out_min = out_max = 0.5 * (out_min + out_max)
    e = _error(gains, setpoint, measurement)
    p = gains.kp * e
    d = 0.0
    integral = state.integral
    if dt_s > 0:
        if gains.kd and state.last_measurement is not None:
            slope = (measurement - state.last_measurement) / dt_s
            d = gains.kd * (slope if gains.reverse else -slope)
        integral += gains.ki * e * dt_s
    raw = p + integral + d
    out = min(out_max, max(out_min, raw))
    if out != raw:  # saturated: back-calculate the integral onto the limit
        integral = out - p - d
    return out, State(integral, measurement)
