"""``cost_saving``: follow the cheapest battery schedule for a known price list (an LP, ``plan.py``).

Parameters: a price list (``start`` ISO 8601 with a timezone, ``price`` per kWh of imported energy,
each valid until the next start; ``slot_s`` apart, sorted, no gaps), forecasts of load and PV
(per slot, aligned with the prices, or constant), SOC bounds and the round-trip efficiency (split
evenly between charging and discharging). Exported energy earns ``export_price_factor`` times the
slot's import price (default 0: export earns nothing, so the plan never discharges into the grid
for profit; 1 = full net metering).

``start`` plans from now to the end of the price list, starting from the measured SOC and the
running nodes' energy and power caps (the current slot counts only for its remaining time). Every
plan must end, at the last price slot, at least at the SOC the mode started from (within
``soc_min..soc_max``, and as far as the charge cap can reach): the battery's energy is not sold off
for free at the horizon's end, and a re-plan keeps that anchor rather than the SOC of the moment,
so a battery charged for the evening peak may still discharge it. ``step`` follows the plan's power for the current
slot and re-plans when the slot changes and the SOC has drifted from the plan by more than
``replan_soc_delta`` (or the running nodes' usable energy changed by more than 10 %: a node joined
or left), when there is no plan for now, and, after a failed plan, at the next slot or one minute
later. No prices left, no SOC or no plan: 0 W, and the note says why. Every node keeps
``soc_min``: at or below it, it may not discharge.

The LP solver (scipy) is loaded on first use, in the background: until it is there the mode gives
0 W ("loading the LP solver") and plans on the first cycle after. ``prepare()`` runs on every
member while the cluster is in this mode, so a new leader finds it loaded.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Annotated, Literal

from pydantic import AwareDatetime, Field, ValidationInfo, field_validator, model_validator

from .base import ClusterImage, ModeParams, ModeResult, reserve_limits
from .plan import Plan, plan, ready

NAME = "cost_saving"
RETRY_S = 60.0               # after a failed plan, try again at the next slot or after this long
USABLE_CHANGE = 0.10         # re-plan at a slot change when the running energy changed by this fraction

Watts = Annotated[float, Field(ge=0.0, le=10_000_000.0)]


class PriceSlot(ModeParams):
    start: AwareDatetime                           # when this price begins (timezone required)
    price: float = Field(ge=-10.0, le=100.0)       # currency per kWh imported


class Params(ModeParams):
    slot_s: Literal[3600, 900] = 3600              # declared before prices: their spacing is checked against it
    prices: tuple[PriceSlot, ...] = Field(min_length=1, max_length=192)
    export_price_factor: float = Field(0.0, ge=0.0, le=1.0)
    load_w: Watts | tuple[Watts, ...] = 800.0      # per price slot, or constant
    pv_w: Watts | tuple[Watts, ...] = 0.0
    soc_min: float = Field(0.1, ge=0.0, le=1.0)
    soc_max: float = Field(0.95, ge=0.0, le=1.0)
    efficiency: float = Field(0.95, ge=0.5, le=1.0)        # round trip
    replan_soc_delta: float = Field(0.05, gt=0.0, le=0.5)

    @field_validator("prices")
    @classmethod
    def _contiguous(cls, prices: tuple[PriceSlot, ...], info: ValidationInfo) -> tuple[PriceSlot, ...]:
        slot = info.data.get("slot_s")
        if slot is None:   # slot_s itself is invalid and reported
            return prices
        for i in range(1, len(prices)):
            gap = (prices[i].start - prices[i - 1].start).total_seconds()
            if gap <= 0:
                raise ValueError(f"prices[{i}].start {prices[i].start.isoformat()} is not after prices[{i - 1}].start: "
                                 "entries must be sorted")
            if gap != slot:
                raise ValueError(f"prices[{i}].start must be slot_s = {slot} s after prices[{i - 1}].start, "
                                 f"got {gap:.0f} s: no gaps or overlaps")
        return prices

    @model_validator(mode="after")
    def _consistent(self) -> "Params":
        if self.soc_min >= self.soc_max:
            raise ValueError(f"soc_min ({self.soc_min}) must be below soc_max ({self.soc_max})")
        for name in ("load_w", "pv_w"):
            value = getattr(self, name)
            if isinstance(value, tuple) and len(value) != len(self.prices):
                raise ValueError(f"{name}: {len(value)} values but {len(self.prices)} price slots: give one per slot "
                                 "or a constant")
        return self


@dataclass(frozen=True)
class Memory:
    plan: Plan | None          # None: no plan (``reason`` says why)
    first: int                 # the price slot of ``plan``'s first slot
    made_wall: float           # when it was made (UTC epoch s)
    made_soc: float | None     # the SOC it was made from
    made_usable_wh: float      # the running nodes' energy it was made for
    slot: int                  # the price slot of the last step
    end_soc: float | None      # the anchor: each plan ends at least here (None: taken at the first plan)
    reason: str = ""


def _t0(params: Params) -> float:
    return params.prices[0].start.timestamp()


LOADING = "loading the LP solver"


def _slot(params: Params, wall: float) -> int:
    return math.floor((wall - _t0(params)) / params.slot_s)


def _hhmm(params: Params, index: int) -> str:
    start = params.prices[0].start + timedelta(seconds=index * params.slot_s)
    return start.strftime("%H:%M")


def _forecast(value, first: int, n: int) -> np.ndarray:
    import numpy as np  # numpy on first use (as scipy): a node that never plans does not load it

    return np.asarray(value[first:], dtype=float) if isinstance(value, tuple) else np.full(n - first, float(value))


def _replan(image: ClusterImage, params: Params, index: int, end_soc: float | None) -> Memory:
    """A fresh plan from slot ``index`` (its remaining part) to the end of the price list."""
    import numpy as np

    n, first, soc = len(params.prices), max(index, 0), image.soc
    usable = image.usable_wh
    if end_soc is None and soc is not None:
        end_soc = min(params.soc_max, max(params.soc_min, soc))

    def failed(reason: str) -> Memory:
        return Memory(None, first, image.wall, soc, usable, index, end_soc, reason)

    if first >= n:
        return failed("no price slot left")
    if soc is None:
        return failed("no running node")
    if not ready():  # the first plan on this node: the solver loads in the background, the cycle goes on
        return failed(LOADING)
    durations = np.full(n - first, float(params.slot_s))
    if index >= 0:
        durations[0] = max(1e-3, _t0(params) + (index + 1) * params.slot_s - image.wall)
    prices = np.array([p.price for p in params.prices[first:]])
    eta = math.sqrt(params.efficiency)
    soc0 = min(1.0, max(0.0, soc))
    reachable = min(max(params.soc_max, soc0), soc0 + eta * image.charge_cap_w * durations.sum() / 3600.0 / usable)
    try:
        result = plan(prices, _forecast(params.load_w, first, n), _forecast(params.pv_w, first, n), durations,
                      soc0=soc0, usable_wh=usable, charge_w=image.charge_cap_w,
                      discharge_w=image.discharge_cap_w, soc_min=params.soc_min, soc_max=params.soc_max,
                      charge_eff=eta, discharge_eff=eta, export_prices=prices * params.export_price_factor,
                      soc_end_min=max(0.0, min(end_soc, reachable - 1e-6)))
    except Exception as exc:   # noqa: BLE001 - a mode never raises: 0 W with the reason
        return failed(f"LP failed: {exc}")
    return Memory(result, first, image.wall, soc, usable, index, end_soc)


def _why_replan(image: ClusterImage, params: Params, memory, index: int) -> str:
    """Why to re-plan now ('' = keep the plan)."""
    if not isinstance(memory, Memory):
        return "no plan"
    if memory.plan is None:
        return "retry" if memory.reason == LOADING or index != memory.slot or \
            image.wall - memory.made_wall >= RETRY_S else ""
    if not memory.first <= index < memory.first + len(memory.plan.battery_w):
        return "no plan for now"
    soc = image.soc
    if index == memory.slot or soc is None:
        return ""
    planned = memory.made_soc if index == memory.first else float(memory.plan.soc[index - memory.first - 1])
    if abs(soc - planned) > params.replan_soc_delta:
        return f"SOC {soc:.3f} vs planned {planned:.3f}"
    if abs(image.usable_wh - memory.made_usable_wh) > USABLE_CHANGE * max(memory.made_usable_wh, 1.0):
        return f"usable energy {image.usable_wh:.0f} Wh vs {memory.made_usable_wh:.0f} Wh planned"
    return ""


def prepare() -> None:
    """Every member, while the cluster runs this mode: load the LP solver in the background."""
    ready()


def start(image: ClusterImage, params: Params) -> Memory:
    return _replan(image, params, _slot(params, image.wall), None)


def step(image: ClusterImage, params: Params, memory: Memory | None) -> ModeResult:
    limits = reserve_limits(image, params.soc_min)
    index, n = _slot(params, image.wall), len(params.prices)
    if index >= n:
        memory = replace(memory, slot=index) if isinstance(memory, Memory) else memory
        return ModeResult(0.0, memory, f"cost saving: after the last price slot (ended {_hhmm(params, n)}): "
                          "0 W until new prices are set", limits)
    if index < 0:
        return ModeResult(0.0, memory, f"cost saving: before the first price slot ({_hhmm(params, 0)}): 0 W", limits)
    why = _why_replan(image, params, memory, index)
    if why:
        memory = _replan(image, params, index, memory.end_soc if isinstance(memory, Memory) else None)
    else:
        memory = replace(memory, slot=index)
    if memory.plan is None:
        return ModeResult(0.0, memory, f"cost saving: no plan ({memory.reason}): 0 W", limits)
    target = float(memory.plan.battery_w[index - memory.first])
    target = 0.0 if abs(target) < 1e-3 else target
    action = "idle" if target == 0.0 else ("discharge" if target > 0 else "charge")
    note = (f"cost saving: slot {_hhmm(params, index)} price {params.prices[index].price:g}: "
            f"{action} {abs(target):.0f} W")
    if why and why != "no plan":
        note += f" (re-planned: {why})"
    return ModeResult(target, memory, note, limits)
