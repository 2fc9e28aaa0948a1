"""The node's decision for one cycle: a pure function of one `ControlInput` (DESIGN §2.1, §4).

Rules, first match wins, so safety is decided before anything else:

1. a critical error is listed (active, or not yet acknowledged): 0 W, inverter
   off, contactors open — in every state, orderly stops included;
2. state `error`: the same;
3. an orderly stop that began with the contactors open (from `error`): they stay
   open; past its ramp: inverter off ("off"), then contactors open ("open");
4. a state that may not exchange power: 0 W, inverter off;
5. no fresh BMS or inverter data, or an inverter fault: 0 W, inverter off;
6. power: the arbiter picks the source that owns the base setpoint; the base
   follower ramps toward it within the limiter's window; then each additive
   response (frequency response, …) adds its term, not ramp-limited, and the
   sum is clamped to the window again after every term. Only here may the
   inverter form the grid when the grid is lost (it switches over by itself,
   in milliseconds, faster than any cycle or leader), and only when this node's
   own parameters say its hardware can (`features.BACKUP`: a transfer switch
   that isolates the site first). So a critical error, a stop, stale data or a
   node without backup hardware never forms a grid, while a node that lost its
   leader (0 W, no dispatch) still carries the site through a blackout.
   Reactive power comes with the owning source's request (`meta["q_var"]`, the
   cluster's dispatch) and gets what the rating leaves beside the active power:
   |Q| <= sqrt(rated² - P²); every other rule above holds 0 var.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Protocol

from .. import limits as limiter
from ..process_image import ProcessImage
from .arbiter import arbitrate


class Response(Protocol):
    """An additive controller (e.g. frequency response): a term added after the ramp."""

    name: str

    def term_w(self, image: ProcessImage) -> float:
        """Power to add this cycle (positive = discharge); pure in the image and its own state."""


@dataclass(frozen=True, slots=True)
class ControlInput:
    image: ProcessImage
    state: str  # node state
    mode: str  # control mode: "local" | "cluster" (arbiter.PRIORITY)
    critical: str | None  # why a critical error forbids power (None: none listed)
    prev_base_w: float  # the base follower's value last cycle
    dt_s: float  # the cycle period (never wall time after a stall)
    params: object
    rated_w: float
    stop_phase: str | None = None  # orderly stop: "ramp" -> "off" -> "open"
    stop_ramp_w_per_s: float | None = None
    stop_keep_open: bool = False  # the stop began with the contactors open: they stay open
    responses: tuple[Response, ...] = ()


@dataclass(frozen=True, slots=True)
class Decision:
    setpoint_w: float  # what the inverter is told, positive = discharge
    inverter_run: bool
    contactor_closed: bool
    balancing: bool
    bms_sleep: bool
    limits: limiter.PowerLimits
    note: str  # why the setpoint is what it is (for status and logs)
    base_w: float = 0.0  # the base follower's ramped value (the next cycle ramps from it)
    source: str | None = None  # the setpoint source that owns the base (None: none)
    terms: tuple[tuple[str, float], ...] = field(default=())  # additive responses that acted
    grid_forming: bool = False  # the inverter may form the grid when the grid is lost (backup)
    q_var: float = 0.0  # reactive power setpoint, positive = delivered (over-excited)


def limits_for(image: ProcessImage, params, rated_w: float) -> limiter.PowerLimits:
    """The charge limiter applied to this image with this node's parameters."""
    return limiter.compute_limits(image.bms, params.safety, params.battery, rated_w=rated_w,
                                  backup=params.features.BACKUP)


def q_headroom_var(rated_w: float, p_w: float) -> float:
    """The reactive power an inverter of this rating has left beside `p_w` (apparent power = rating)."""
    return math.sqrt(max(0.0, rated_w * rated_w - p_w * p_w))


def decide(inp: ControlInput) -> Decision:
    image, state, params = inp.image, inp.state, inp.params
    lim = limits_for(image, params, inp.rated_w)
    stopping = inp.stop_phase is not None
    balancing = bool(
        params.features.CELL_BALANCE and not stopping and image.bms is not None and state in ("run", "sleep")
        and image.bms.cell_v_max_v - image.bms.cell_v_min_v > 0.02
    )
    flags = dict(balancing=balancing, bms_sleep=state == "sleep" and not stopping, limits=lim)

    def hold_zero(note: str, *, contactors: bool = True) -> Decision:
        return Decision(0.0, False, contactors, note=note, **flags)

    if inp.critical:
        return Decision(0.0, False, False, note=f"{inp.critical}: 0 W, inverter off, contactors open",
                        **{**flags, "balancing": False, "bms_sleep": False})
    if state == "error":
        return hold_zero("state error: 0 W, inverter off, contactors open", contactors=False)
    if stopping and inp.stop_keep_open:
        return hold_zero("stopping: 0 W, inverter off, contactors stay open", contactors=False)
    if inp.stop_phase == "open":
        return hold_zero("stopped: inverter off, contactors open", contactors=False)
    if inp.stop_phase == "off":
        return hold_zero("stopping: inverter off")
    ramping_down = inp.stop_phase == "ramp" and inp.prev_base_w != 0.0 and state in ("run", "restart", "reboot")
    if state != "run" and not ramping_down:
        return hold_zero(f"state {state}: no power exchange")
    if image.bms is None:
        return hold_zero("no fresh BMS data: 0 W")
    if image.inverter is None:
        return hold_zero("no fresh inverter data: 0 W")
    if image.inverter.faults:
        return hold_zero("inverter reports a fault: 0 W, inverter stopped")

    if stopping:
        source, target, why = None, 0.0, "orderly stop"
        ramp = inp.stop_ramp_w_per_s or params.safety.ramp_w_per_s
    else:
        choice = arbitrate(inp.mode, image.setpoints)
        source, target, why = choice.source, choice.p_w, choice.why
        ramp = params.safety.ramp_w_per_s
    base, reason = limiter.next_setpoint(inp.prev_base_w, target, lim, ramp, inp.dt_s)
    total, terms = base, []
    for response in () if stopping else inp.responses:
        term = response.term_w(image)
        if term:
            total, cut = limiter.clamp(total + term, lim)
            terms.append((response.name, term))
            reason = reason or (f"{response.name} {term:+.0f} W" + (f"; {cut}" if cut else ""))
    if reason:
        note = reason
    elif source is None:
        note = why
    else:
        note = f"following {source}"
    if stopping:
        note = f"stopping: {note}"
    q_var = 0.0
    if source is not None:
        asked, room = image.setpoints[source].meta.get("q_var") or 0.0, q_headroom_var(inp.rated_w, total)
        q_var = max(-room, min(room, asked)) if math.isfinite(asked) else 0.0
    forming = params.features.BACKUP and not stopping
    if forming and image.inverter.island:
        note = f"the grid is lost: the inverter forms it (backup); {note}"
    return Decision(total, True, True, note=note, base_w=base, source=source, terms=tuple(terms),
                    grid_forming=forming, q_var=q_var, **flags)
