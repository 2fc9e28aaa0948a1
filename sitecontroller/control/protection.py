"""Protection: which protection errors are present in this cycle's image (pure).

Besides the configured cell limits, a BMS value that is physically impossible
(not a number, an SOC or SOH outside 0..1, a negative current limit, a cell
voltage outside 0..10 V) is `BMS_DATA_INVALID`: the battery state is unknown,
and a bad number must never turn into a wide limit.
"""
from __future__ import annotations

import math

from .. import limits as limiter
from ..process_image import BmsReading, ProcessImage


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
    elif (bad := implausible(b)) is not None:
        out["BMS_DATA_INVALID"] = f"the BMS reports {bad}: battery state unknown"
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


def implausible(b: BmsReading) -> str | None:
    """What is physically impossible in a BMS reading (None if nothing is)."""
    values = {
        "soc": b.soc, "soh": b.soh, "pack_v": b.pack_v, "pack_a": b.pack_a, "cell_v_min_v": b.cell_v_min_v,
        "cell_v_max_v": b.cell_v_max_v, "cell_t_min_c": b.cell_t_min_c, "cell_t_max_c": b.cell_t_max_c,
        "charge_limit_a": b.charge_limit_a, "discharge_limit_a": b.discharge_limit_a,
    }
    optional = {"soc_min": b.soc_min, "soc_max": b.soc_max, "charge_v_max_v": b.charge_v_max_v,
                "discharge_v_min_v": b.discharge_v_min_v}  # sent by some BMS types only
    values.update({name: v for name, v in optional.items() if v is not None})
    for name, v in values.items():
        if not math.isfinite(v):
            return f"a non-numeric {name} ({v})"
    ranges = {"soc": (0.0, 1.0), "soh": (0.0, 1.0), "soc_min": (0.0, 1.0), "soc_max": (0.0, 1.0),
              "charge_limit_a": (0.0, math.inf), "discharge_limit_a": (0.0, math.inf), "pack_v": (0.0, math.inf)}
    for name, (lo, hi) in ranges.items():
        if name in values and not lo <= values[name] <= hi:
            return f"an impossible {name} ({values[name]:g}; possible {lo:g}..{hi:g})"
    for name in ("cell_v_min_v", "cell_v_max_v"):
        if not 0.0 < values[name] < 10.0:
            return f"an impossible {name} ({values[name]:g} V; possible 0..10 V)"
    if b.cell_v_min_v > b.cell_v_max_v:
        return f"cell_v_min_v above cell_v_max_v ({b.cell_v_min_v:g} V > {b.cell_v_max_v:g} V)"
    return None
