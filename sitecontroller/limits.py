"""Charge limiter: how much this node may charge and discharge this cycle (DESIGN §2.3).

Pure code: no I/O, no clock. The node calls `compute_limits` once per cycle with
the frozen BMS reading and the site parameters, then squeezes every power
request through `clamp` (or `next_setpoint`, which also applies the ramp).

Layers, in the priority order of DESIGN §2.3. Each one can only *narrow* the
allowed range; `PowerLimits.narrow` is the only way to change a limit and it
takes the minimum, so no layer can widen what an earlier one allowed:

1. nameplate   the inverter rating and the configured battery maxima. This is
               the starting ceiling; it is not listed in `reasons` (it is always
               there) but it is the binding reason when nothing else narrows.
2. hardware    no (fresh) BMS reading, a BMS fault or open contactors -> 0 W;
               a direction the BMS disables (charge/discharge enable flags)
               -> 0 W that way; a force-charge request -> no discharge (it
               is reported, it never allows anything); otherwise the BMS
               current limits x pack voltage. Then the BMS voltage limits:
               no charge at/above its charge voltage limit, no discharge
               at/below its discharge voltage limit, tapered over
               `cell_v_taper_v` x the cells in series (pack_v / cell_v_avg_v).
3. protection  temperature (derate linearly to 0 over `cell_t_derate_c` below
               `cell_t_max_c`; charge derates the same way above `cell_t_min_c`
               and stops below it; discharge is allowed down to
               `cell_t_min_c - COLD_DISCHARGE_MARGIN_C`), cell voltage (charge
               tapers to 0 as the highest cell approaches `cell_v_max_v` within
               `cell_v_taper_v`; discharge likewise at `cell_v_min_v`), then the
               SOC window (no discharge at/below the floor: `soc_reserve`, or
               `soc_min` in backup; no charge at/above `soc_max`; an optional
               linear taper of width `soc_taper` before each bound). With
               several racks the discharge side looks at the emptiest rack
               (`bms.soc_min`) and the charge side at the fullest (`soc_max`),
               never at their mean.
4. grid code   the ramp rate: `ramp` / `next_setpoint` move the previous
               setpoint toward the target by at most `ramp_w_per_s * dt_s`.
               The ramp never holds power above a limit: a limit that drops
               cuts the setpoint at once (hardware and protection outrank it).
5. mode, external request: the node narrows further with `narrow` and
   finally `clamp`s the request; `clamp` says why a request was cut, and the
   command acknowledgement quotes that text.

Tapers and derates scale the nameplate ceiling ("charge tapered to 60%" means
60% of the rating); the smallest layer wins. Signs: positive = discharge.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass, replace
from typing import Callable

from .process_image import BmsReading

# LFP cells may usually discharge well below the temperature where charging must
# stop (typical data sheets: charge from 0 °C, discharge from -20 °C).
COLD_DISCHARGE_MARGIN_C = 20.0
_EPS_W = 1e-6


@dataclass(frozen=True, slots=True)
class PowerLimits:
    """What this node may do this cycle. Both limits are >= 0 W.

    `reasons` lists every narrowing below the nameplate, in layer order.
    `charge_reason` / `discharge_reason` name the binding (tightest) limit of
    each direction, for acknowledgements and status.
    """

    charge_w: float
    discharge_w: float
    reasons: tuple[str, ...] = ()
    charge_reason: str | None = None
    discharge_reason: str | None = None

    def narrow(self, why: str, *, charge_w: float | None = None, discharge_w: float | None = None) -> "PowerLimits":
        """A copy with each given limit lowered to it if lower; never raised.

        `why` is recorded once if at least one side actually narrowed. NaN or
        negative values count as 0 W (the safe reading of a bad number).
        """
        c, d = self.charge_w, self.discharge_w
        c_why, d_why = self.charge_reason, self.discharge_reason
        if charge_w is not None:
            w = _safe_w(charge_w)
            if w < c - _EPS_W:
                c, c_why = w, why
        if discharge_w is not None:
            w = _safe_w(discharge_w)
            if w < d - _EPS_W:
                d, d_why = w, why
        if (c, d) == (self.charge_w, self.discharge_w):
            return self
        return replace(self, charge_w=c, discharge_w=d, reasons=self.reasons + (why,),
                       charge_reason=c_why, discharge_reason=d_why)


@dataclass(frozen=True, slots=True)
class LimitInputs:
    """Everything `compute_limits` looks at, frozen (one row of a test table)."""

    bms: BmsReading | None
    safety: object  # params.SafetyParams
    battery: object  # params.BatteryParams (max_charge_w, max_discharge_w)
    rated_w: float
    backup: bool = False
    soc_taper: float = 0.0


def _safe_w(w: float) -> float:
    return 0.0 if (w is None or math.isnan(w) or w < 0) else float(w)


def _pct(f: float) -> str:
    return f"{f * 100:.0f}%"


def _fraction_above(value: float, bound: float, width: float) -> float:
    """0 at/below `bound`, rising linearly to 1 at `bound + width` (step if width is 0)."""
    if value <= bound:
        return 0.0
    if width <= 0:
        return 1.0
    return min(1.0, (value - bound) / width)


def nameplate(inp: LimitInputs) -> PowerLimits:
    """The starting ceiling: inverter rating and the configured battery maxima."""
    return _nameplate(_safe_w(inp.rated_w), _safe_w(inp.battery.max_charge_w), _safe_w(inp.battery.max_discharge_w))


@functools.lru_cache(maxsize=64)
def _nameplate(rated: float, max_c: float, max_d: float) -> PowerLimits:
    # cached: every layer asks for it every cycle, and the (immutable) answer changes only with the parameters
    c_why = f"inverter rating {rated:.0f} W" if rated <= max_c else f"configured max charge {max_c:.0f} W"
    d_why = f"inverter rating {rated:.0f} W" if rated <= max_d else f"configured max discharge {max_d:.0f} W"
    return PowerLimits(min(rated, max_c), min(rated, max_d), (), c_why, d_why)


def hardware_layer(inp: LimitInputs, lim: PowerLimits) -> PowerLimits:
    """BMS presence, faults, contactors and current limits x pack voltage."""
    bms = inp.bms
    if bms is None:
        return lim.narrow("no BMS data: no charge or discharge", charge_w=0, discharge_w=0)
    if bms.faults:
        return lim.narrow(f"BMS fault {', '.join(sorted(bms.faults))}: no power", charge_w=0, discharge_w=0)
    if not bms.contactor_closed:
        return lim.narrow("contactors open: no power", charge_w=0, discharge_w=0)
    if not bms.charge_enabled:
        lim = lim.narrow("BMS disables charging: no charge", charge_w=0)
    if not bms.discharge_enabled:
        lim = lim.narrow("BMS disables discharging: no discharge", discharge_w=0)
    if bms.force_charge:
        lim = lim.narrow("BMS requests a force charge: no discharge", discharge_w=0)
    v = bms.pack_v
    if not (v > 0) or math.isinf(v):
        return lim.narrow(f"pack voltage {v} V invalid: no power", charge_w=0, discharge_w=0)
    ca, da = _safe_w(bms.charge_limit_a), _safe_w(bms.discharge_limit_a)
    lim = lim.narrow(f"BMS charge limit {ca:.1f} A x {v:.1f} V = {ca * v:.0f} W", charge_w=ca * v)
    return lim.narrow(f"BMS discharge limit {da:.1f} A x {v:.1f} V = {da * v:.0f} W", discharge_w=da * v)


def _cells_in_series(bms: BmsReading) -> float:
    """Cells in series estimated from the pack and the average cell voltage (0 if unknown)."""
    n = bms.pack_v / bms.cell_v_avg_v if bms.cell_v_avg_v > 0 else 0.0
    return round(n) if math.isfinite(n) else 0.0


def bms_voltage_layer(inp: LimitInputs, lim: PowerLimits) -> PowerLimits:
    """No charge at/above the BMS charge voltage limit, no discharge at/below its discharge voltage limit
    (pack volts); tapered over `cell_v_taper_v` per cell in series before each."""
    bms, s = inp.bms, inp.safety
    if bms is None or (bms.charge_v_max_v is None and bms.discharge_v_min_v is None):
        return lim
    v = bms.pack_v
    if not math.isfinite(v):
        return lim.narrow(f"pack voltage {v} V invalid: no power", charge_w=0, discharge_w=0)
    ceil = nameplate(inp)
    width = max(0.0, s.cell_v_taper_v) * _cells_in_series(bms)
    v_max = bms.charge_v_max_v
    if v_max is not None and not math.isfinite(v_max):
        lim = lim.narrow(f"BMS charge voltage limit {v_max} V invalid: no charge", charge_w=0)
    elif v_max is not None:
        f_c = _fraction_above(v_max, v, width)
        if f_c <= 0:
            lim = lim.narrow(f"pack {v:.2f} V at BMS charge voltage limit {v_max:.2f} V: no charge", charge_w=0)
        elif f_c < 1:
            lim = lim.narrow(f"pack {v:.2f} V near BMS charge voltage limit {v_max:.2f} V: charge tapered to "
                             f"{_pct(f_c)}", charge_w=ceil.charge_w * f_c)
    v_min = bms.discharge_v_min_v
    if v_min is not None and not math.isfinite(v_min):
        lim = lim.narrow(f"BMS discharge voltage limit {v_min} V invalid: no discharge", discharge_w=0)
    elif v_min is not None:
        f_d = _fraction_above(v, v_min, width)
        if f_d <= 0:
            lim = lim.narrow(f"pack {v:.2f} V at BMS discharge voltage limit {v_min:.2f} V: no discharge",
                             discharge_w=0)
        elif f_d < 1:
            lim = lim.narrow(f"pack {v:.2f} V near BMS discharge voltage limit {v_min:.2f} V: discharge tapered "
                             f"to {_pct(f_d)}", discharge_w=ceil.discharge_w * f_d)
    return lim


def temperature_layer(inp: LimitInputs, lim: PowerLimits) -> PowerLimits:
    """Derate both directions near the hot limit; charge near/below the cold one."""
    bms, s = inp.bms, inp.safety
    if bms is None:
        return lim
    ceil = nameplate(inp)
    hot, cold, span = bms.cell_t_max_c, bms.cell_t_min_c, s.cell_t_derate_c
    if math.isnan(hot) or math.isnan(cold):
        return lim.narrow("cell temperature unknown: no power", charge_w=0, discharge_w=0)
    f_hot = _fraction_above(s.cell_t_max_c, hot, span)  # headroom below the hot limit
    if f_hot <= 0:
        lim = lim.narrow(f"cell {hot:.1f} °C at max {s.cell_t_max_c:.1f} °C: no power", charge_w=0, discharge_w=0)
    elif f_hot < 1:
        lim = lim.narrow(f"cell {hot:.1f} °C near max {s.cell_t_max_c:.1f} °C: power derated to {_pct(f_hot)}",
                         charge_w=ceil.charge_w * f_hot, discharge_w=ceil.discharge_w * f_hot)
    f_cc = _fraction_above(cold, s.cell_t_min_c, span)
    if f_cc <= 0:
        lim = lim.narrow(f"cell {cold:.1f} °C at/below min {s.cell_t_min_c:.1f} °C: no charge", charge_w=0)
    elif f_cc < 1:
        lim = lim.narrow(f"cell {cold:.1f} °C near min {s.cell_t_min_c:.1f} °C: charge derated to {_pct(f_cc)}",
                         charge_w=ceil.charge_w * f_cc)
    d_floor = s.cell_t_min_c - COLD_DISCHARGE_MARGIN_C
    f_cd = _fraction_above(cold, d_floor, span)
    if f_cd <= 0:
        lim = lim.narrow(f"cell {cold:.1f} °C at/below discharge min {d_floor:.1f} °C: no discharge", discharge_w=0)
    elif f_cd < 1:
        lim = lim.narrow(f"cell {cold:.1f} °C near discharge min {d_floor:.1f} °C: discharge derated to {_pct(f_cd)}",
                         discharge_w=ceil.discharge_w * f_cd)
    return lim


def cell_voltage_layer(inp: LimitInputs, lim: PowerLimits) -> PowerLimits:
    """Charge tapers to 0 as the highest cell nears cell_v_max_v; discharge at cell_v_min_v."""
    bms, s = inp.bms, inp.safety
    if bms is None:
        return lim
    ceil = nameplate(inp)
    v_hi, v_lo, taper = bms.cell_v_max_v, bms.cell_v_min_v, s.cell_v_taper_v
    if math.isnan(v_hi) or math.isnan(v_lo):
        return lim.narrow("cell voltage unknown: no power", charge_w=0, discharge_w=0)
    f_c = _fraction_above(s.cell_v_max_v, v_hi, taper)
    if f_c <= 0:
        lim = lim.narrow(f"cell {v_hi:.3f} V at max {s.cell_v_max_v:.2f} V: no charge", charge_w=0)
    elif f_c < 1:
        lim = lim.narrow(f"cell {v_hi:.3f} V near max {s.cell_v_max_v:.2f} V: charge tapered to {_pct(f_c)}",
                         charge_w=ceil.charge_w * f_c)
    f_d = _fraction_above(v_lo, s.cell_v_min_v, taper)
    if f_d <= 0:
        lim = lim.narrow(f"cell {v_lo:.3f} V at min {s.cell_v_min_v:.2f} V: no discharge", discharge_w=0)
    elif f_d < 1:
        lim = lim.narrow(f"cell {v_lo:.3f} V near min {s.cell_v_min_v:.2f} V: discharge tapered to {_pct(f_d)}",
                         discharge_w=ceil.discharge_w * f_d)
    return lim


def soc_layer(inp: LimitInputs, lim: PowerLimits) -> PowerLimits:
    """No discharge at/below the floor (reserve, or min in backup) for the emptiest rack; no charge
    at/above soc_max for the fullest rack (`soc_min` / `soc_max` of the reading, else its `soc`)."""
    bms, s = inp.bms, inp.safety
    if bms is None:
        return lim
    ceil = nameplate(inp)
    soc = bms.soc
    low = soc if bms.soc_min is None else bms.soc_min
    high = soc if bms.soc_max is None else bms.soc_max
    if math.isnan(soc) or math.isnan(low) or math.isnan(high):
        return lim.narrow("soc unknown: no power", charge_w=0, discharge_w=0)
    low_name = "soc" if low == soc else "emptiest rack soc"
    high_name = "soc" if high == soc else "fullest rack soc"
    floor, name = (s.soc_min, "min") if inp.backup else (s.soc_reserve, "reserve")
    taper = max(0.0, inp.soc_taper)
    f_d = _fraction_above(low, floor, taper)
    if f_d <= 0:
        lim = lim.narrow(f"{low_name} {low:.2f} at {name} {floor:.2f}: no discharge", discharge_w=0)
    elif f_d < 1:
        lim = lim.narrow(f"{low_name} {low:.2f} near {name} {floor:.2f}: discharge tapered to {_pct(f_d)}",
                         discharge_w=ceil.discharge_w * f_d)
    f_c = _fraction_above(s.soc_max, high, taper)
    if f_c <= 0:
        lim = lim.narrow(f"{high_name} {high:.2f} at max {s.soc_max:.2f}: no charge", charge_w=0)
    elif f_c < 1:
        lim = lim.narrow(f"{high_name} {high:.2f} near max {s.soc_max:.2f}: charge tapered to {_pct(f_c)}",
                         charge_w=ceil.charge_w * f_c)
    return lim


# Priority order of DESIGN §2.3 (hardware -> protection). Grid code, mode and
# external request come after, in the node (`ramp`, `narrow`, `clamp`).
LAYERS: tuple[tuple[str, Callable[[LimitInputs, PowerLimits], PowerLimits]], ...] = (
    ("hardware", hardware_layer),
    ("bms_voltage", bms_voltage_layer),
    ("temperature", temperature_layer),
    ("cell_voltage", cell_voltage_layer),
    ("soc", soc_layer),
)


def compute_limits(bms: BmsReading | None, safety, battery, rated_w: float, *,
                   backup: bool = False, soc_taper: float = 0.0) -> PowerLimits:
    """The allowed charge and discharge power for this cycle, with the reasons.

    `bms` is the frozen (fresh) reading or None; `safety` a `SafetyParams`,
    `battery` a `BatteryParams`, `rated_w` the inverter rating; `backup` moves
    the SOC floor from `soc_reserve` down to `soc_min`; `soc_taper` (fraction
    of SOC, default 0 = hard stop) tapers power linearly before a SOC bound.
    """
    inp = LimitInputs(bms, safety, battery, rated_w, backup, soc_taper)
    lim = nameplate(inp)
    for _name, layer in LAYERS:
        lim = layer(inp, lim)
    return lim


def clamp(request_w: float, limits: PowerLimits) -> tuple[float, str | None]:
    """The request squeezed into [-charge_w, +discharge_w], and why if it was cut."""
    if request_w is None or math.isnan(request_w):
        return 0.0, "request is not a number: 0 W"
    if request_w > limits.discharge_w:
        w = limits.discharge_w
        return w, f"discharge {request_w:.0f} W requested, {w:.0f} W allowed: {limits.discharge_reason}"
    if -request_w > limits.charge_w:
        w = limits.charge_w
        return -w + 0.0, f"charge {-request_w:.0f} W requested, {w:.0f} W allowed: {limits.charge_reason}"
    return float(request_w), None


def ramp(previous_w: float, target_w: float, ramp_w_per_s: float, dt_s: float) -> float:
    """`previous_w` moved toward `target_w` by at most `ramp_w_per_s * dt_s`."""
    step = max(0.0, ramp_w_per_s) * max(0.0, dt_s)
    return previous_w + max(-step, min(step, target_w - previous_w))


def next_setpoint(previous_w: float, request_w: float, limits: PowerLimits,
                  ramp_w_per_s: float, dt_s: float) -> tuple[float, str | None]:
    """Clamp the request, ramp toward it, and never leave the limits.

    Returns the setpoint to write this cycle and the reason it differs from the
    request (the clamp's reason first; else the ramp), or None.
    """
    target, why = clamp(request_w, limits)
    if previous_w is None or math.isnan(previous_w):
        previous_w = 0.0
    out = ramp(previous_w, target, ramp_w_per_s, dt_s)
    # A limit that dropped below the ramped value cuts at once: safety outranks the ramp.
    if out > limits.discharge_w:
        out = limits.discharge_w
        why = why or f"cut to {out:.0f} W discharge at once: {limits.discharge_reason}"
    elif -out > limits.charge_w:
        out = -limits.charge_w + 0.0
        why = why or f"cut to {limits.charge_w:.0f} W charge at once: {limits.charge_reason}"
    if why is None and abs(out - target) > _EPS_W:
        why = f"ramp {ramp_w_per_s:.0f} W/s: {out:.0f} W toward {target:.0f} W"
    return out, why
