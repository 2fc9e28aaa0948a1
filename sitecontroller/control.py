"""The node's decisions: pure functions of the process image (DESIGN §2.1).

`protection(...)` says which protection errors are present this cycle;
`decide(...)` turns the state, the request and the limits into the commands
for the inverter and the BMS. Neither does I/O or reads a clock.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from . import limits as limiter
from .process_image import ProcessImage


@dataclass(frozen=True, slots=True)
class Decision:
    setpoint_w: float  # what the inverter is told, positive = discharge
    inverter_run: bool
    contactor_closed: bool
    balancing: bool
    bms_sleep: bool
    limits: limiter.PowerLimits
    note: str  # why the setpoint is what it is (for status and logs)


def protection(image: ProcessImage, safety, *, grace_over: bool, uncontrolled_s: float = 0.0) -> dict[str, str]:
    """Protection errors present in this image (code -> text).

    `grace_over` is False during start-up, when no reading has arrived yet
    and a missing device is not (yet) an error. `uncontrolled_s` > 0: the
    inverter has been silent that long while the BMS still sees power flowing.
    """
    out: dict[str, str] = {}
    b = image.bms
    if b is None:
        if grace_over or "bms" in image.stale:
            out["BMS_STALE"] = "no fresh BMS data: battery state unknown"
    elif not all(math.isfinite(x) for x in (b.soc, b.pack_v, b.pack_a, b.cell_v_min_v, b.cell_v_max_v,
                                              b.cell_t_min_c, b.cell_t_max_c)):
        out["BMS_DATA_INVALID"] = "the BMS reports a non-numeric value (NaN/inf): battery state unknown"
    else:
        if b.cell_v_max_v > safety.cell_v_max_v:
            out["CELL_OVERVOLTAGE"] = f"cell #{b.cell_v_max_idx} at {b.cell_v_max_v:.3f} V > max {safety.cell_v_max_v} V"
        if b.cell_v_min_v < safety.cell_v_min_v:
            out["CELL_UNDERVOLTAGE"] = f"cell #{b.cell_v_min_idx} at {b.cell_v_min_v:.3f} V < min {safety.cell_v_min_v} V"
        if b.cell_t_max_c > safety.cell_t_max_c:
            out["CELL_OVERTEMP"] = f"cell temperature {b.cell_t_max_c:.1f} °C > max {safety.cell_t_max_c} °C"
        cold_c = safety.cell_t_min_c - limiter.COLD_DISCHARGE_MARGIN_C  # the limiter's own cold-discharge bound
        if b.cell_t_min_c < cold_c:
            out["CELL_UNDERTEMP"] = f"cell temperature {b.cell_t_min_c:.1f} °C < {cold_c} °C"
        if b.faults:
            out["BMS_FAULT"] = "BMS fault: " + ", ".join(sorted(b.faults))
        if b.alarms:
            out["BMS_ALARM"] = "BMS alarm: " + ", ".join(sorted(b.alarms))
    if image.inverter is None and (grace_over or "inverter" in image.stale):
        out["INV_STALE"] = "no fresh inverter data: holding 0 W"
    if uncontrolled_s > 0 and b is not None:
        out["UNCONTROLLED_POWER"] = (
            f"inverter silent for {uncontrolled_s:.0f} s while the battery still carries {b.pack_w:.0f} W: opening contactors"
        )
    if image.meter_configured and image.meter is None and (grace_over or "meter" in image.stale):
        out["METER_STALE"] = "no fresh grid meter data"
    return out


def limits_for(image: ProcessImage, params, rated_w: float) -> limiter.PowerLimits:
    """The charge limiter applied to this image with this node's parameters."""
    return limiter.compute_limits(image.bms, params.safety, params.battery, rated_w=rated_w,
                                  backup=params.features.BACKUP)


def decide(
    image: ProcessImage,
    state: str,
    request_w: float | None,
    prev_setpoint_w: float,
    dt_s: float,
    params,
    rated_w: float,
    ramp_w_per_s: float | None = None,
) -> Decision:
    """Commands for this cycle. Safety narrows at once; normal changes ramp
    (at `ramp_w_per_s`, default the safety parameter; an orderly stop ramps faster)."""
    lim = limits_for(image, params, rated_w)
    contactor = state != "error"  # an orderly stop opens them itself, after 0 W
    balancing = bool(
        params.features.CELL_BALANCE
        and image.bms is not None
        and state in ("run", "sleep")
        and image.bms.cell_v_max_v - image.bms.cell_v_min_v > 0.02
    )
    common = dict(contactor_closed=contactor, balancing=balancing, bms_sleep=state == "sleep", limits=lim)

    if state != "run":
        return Decision(0.0, False, note=f"state {state}: no power exchange", **common)
    if image.bms is None:
        return Decision(0.0, False, note="no fresh BMS data: 0 W", **common)
    if image.inverter is None:
        return Decision(0.0, False, note="no fresh inverter data: 0 W", **common)
    if image.inverter.faults:
        return Decision(0.0, False, note="inverter reports a fault: 0 W, inverter stopped", **common)

    target = 0.0 if request_w is None else request_w
    ramp = params.safety.ramp_w_per_s if ramp_w_per_s is None else ramp_w_per_s
    setpoint, reason = limiter.next_setpoint(prev_setpoint_w, target, lim, ramp, dt_s)
    if reason:
        note = reason
    elif request_w is None:
        note = "no request: idle at 0 W"
    else:
        note = "following the request"
    return Decision(setpoint, True, note=note, **common)
