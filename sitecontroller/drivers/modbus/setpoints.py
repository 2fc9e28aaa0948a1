"""Command <-> control point values, from a profile's [[control.write]] list (pure).

`encode_command` turns (p_w, q_var, run) into the engineering values of the
control points, in write order; `decode_command` is the inverse, used by the
simulator (what did the client ask for?) and by the driver (which setpoint
does the inverter hold?). The sources are listed in PROFILES.md.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from .profile import Profile


@dataclass(frozen=True)
class Setpoint:
    p_w: float
    q_var: float
    run: bool
    grid_forming: bool = False


def _pct(x: float, ref_w: float) -> float:
    return 100.0 * x / ref_w if ref_w else 0.0


@dataclass(frozen=True)
class Failsafe:
    """What the device keeps when the node is gone: its revert time and SOC window (whole %)."""

    revert_s: float = 0.0
    soc_low_pct: int = 5
    soc_high_pct: int = 100


def source_value(source: str, p_w: float, q_var: float, run: bool, ref_w: float, heartbeat: int = 1,
                 failsafe: Failsafe = Failsafe(), grid_forming: bool = False) -> float:
    if source == "p_enable":
        return 1
    if source == "revert_s":
        return failsafe.revert_s
    if source == "soc_low_pct":
        return failsafe.soc_low_pct
    if source == "soc_high_pct":
        return failsafe.soc_high_pct
    if source == "discharge_limit_pct":  # a whole-percent cap that never binds below the setpoint
        return min(100.0, math.ceil(round(_pct(max(p_w, 0.0), ref_w), 6)))
    if source == "charge_limit_pct":
        return min(100.0, math.ceil(round(_pct(max(-p_w, 0.0), ref_w), 6)))
    if source == "p_w":
        return p_w
    if source == "p_pct":
        return _pct(p_w, ref_w)
    if source == "discharge_w":
        return max(p_w, 0.0)
    if source == "charge_w":
        return max(-p_w, 0.0)
    if source == "discharge_pct":
        return _pct(max(p_w, 0.0), ref_w)
    if source == "charge_pct":
        return _pct(max(-p_w, 0.0), ref_w)
    if source == "discharge_on":
        return 1 if p_w > 0 else 0
    if source == "charge_on":
        return 1 if p_w < 0 else 0
    if source == "window_out_pct":
        return _pct(p_w, ref_w)
    if source == "window_in_pct":
        return -_pct(p_w, ref_w)
    if source == "q_var":
        return q_var
    if source == "q_pct":
        return _pct(q_var, ref_w)
    if source == "run":
        return 1 if run else 0
    if source == "stop":
        return 0 if run else 1
    if source == "heartbeat":
        return heartbeat
    if source == "grid_forming":
        return 1 if run and grid_forming else 0
    raise ValueError(f"unknown control source {source!r}")


def encode_command(profile: Profile, p_w: float, q_var: float, run: bool, ref_w: float,
                   heartbeat: int = 1, failsafe: Failsafe | None = None, grid_forming: bool = False) -> dict[str, float]:
    """Engineering values of the control points, in the profile's write order.

    A stopped command writes 0 W / 0 var and never asks for grid forming. Values are clamped into each point's
    [min, max] (narrowing only: the limits layer already bounds the setpoint)."""
    if not run:
        p_w, q_var = 0.0, 0.0
    if failsafe is None:
        failsafe = Failsafe(revert_s=profile.failsafe_s)
    out: dict[str, float] = {}
    for w in profile.writes:
        v = w.value if w.source is None else source_value(w.source, p_w, q_var, run, ref_w, heartbeat, failsafe,
                                                          grid_forming)
        p = profile.point(w.point)
        if p.min is not None:
            v = max(p.min, v)
        if p.max is not None:
            v = min(p.max, v)
        out[w.point] = v
    return out


def decode_command(profile: Profile, values: dict, ref_w: float) -> Setpoint | None:
    """The setpoint that control point `values` express (None if they cannot say)."""
    by_source: dict[str, float] = {}
    for w in profile.writes:
        if w.source is not None and values.get(w.point) is not None:
            by_source.setdefault(w.source, float(values[w.point]))
    s = by_source.get
    run = True
    if "run" in by_source:
        run = s("run") != 0
    if "stop" in by_source:
        run = run and s("stop") == 0
    if "p_w" in by_source and s("p_enable", 1.0) != 0:  # a disabled p_w point does not count
        p = s("p_w")
    elif "p_pct" in by_source:
        p = s("p_pct") * ref_w / 100.0
    elif "window_out_pct" in by_source:
        p = s("window_out_pct") * ref_w / 100.0
    elif any(k in by_source for k in ("discharge_w", "charge_w", "discharge_pct", "charge_pct")):
        d = s("discharge_w", s("discharge_pct", 0.0) * ref_w / 100.0)
        c = s("charge_w", s("charge_pct", 0.0) * ref_w / 100.0)
        if "discharge_on" in by_source and not s("discharge_on"):
            d = 0.0
        if "charge_on" in by_source and not s("charge_on"):
            c = 0.0
        if "discharge_limit_pct" in by_source:  # the battery's own power caps bound both
            d = min(d, s("discharge_limit_pct") * ref_w / 100.0)
        if "charge_limit_pct" in by_source:
            c = min(c, s("charge_limit_pct") * ref_w / 100.0)
        p = d - c
    else:
        return None
    q = s("q_var", s("q_pct", 0.0) * ref_w / 100.0)
    return Setpoint(p_w=p, q_var=q, run=run, grid_forming=run and s("grid_forming", 0.0) != 0)
