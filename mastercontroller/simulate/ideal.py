"""The battery-limited clairvoyant ideal of a simulated day: the yardstick for the metrics.

Given the whole day's load and PV in advance and one aggregated battery with the cluster's limits
(energy, charge/discharge caps, SOC bounds, efficiencies), what is the least grid exchange
(``ideal_grid_exchange``) or the least cost (``ideal_cost``) any controller could reach?
Both solve the LP of ``control/plan.py`` (its one formulation), with the day ending at least at
the SOC it started from (``soc_end_min``, default soc0: no credit for emptying the battery).

Resolution: the steps are averaged over slots of ``k`` steps, ``k = ceil(len / 1440)`` (for a
day of 1 s steps: 1-minute means, 1440 slots; the last slot may be shorter), and import/export
are the positive/negative parts of each slot's mean net power after the battery. Averaging can
only lower the exchange (a mean's magnitude is at most the mean magnitude, and any finer schedule
averages to a feasible coarse one), so the result is a lower bound for a controller measured at
the step resolution, up to the SOC bounds between slot boundaries.

The grid-exchange ideal does not burn surplus energy in battery losses (charging and discharging
only to lose energy that would otherwise be exported): its cycle penalty is set just above the
round-trip loss ratio ``(1 - eta) / (1 + eta)`` per kWh, which removes exactly those flows and no
useful shifting (a useful kWh saves about one kWh of exchange, far more than the penalty).
"""
from __future__ import annotations

import math

import numpy as np

from ..control.plan import CYCLE_PENALTY, plan

MAX_SLOTS = 1440


def _slots(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Start index and step count of each LP slot."""
    if n < 1:
        raise ValueError("load_w: needs at least one step")
    k = math.ceil(n / MAX_SLOTS)
    starts = np.arange(0, n, k)
    return starts, np.diff(np.append(starts, n))


def _solve(prices, export_prices, load_w, pv_w, dt_s: float, soc0: float, usable_wh: float, charge_w: float,
           discharge_w: float, soc_min: float, soc_max: float, charge_eff: float, discharge_eff: float,
           soc_end_min: float | None, cycle_penalty: float) -> dict:
    load = np.asarray(load_w, dtype=float)
    n = load.size
    if not (isinstance(dt_s, (int, float)) and math.isfinite(dt_s) and dt_s > 0):
        raise ValueError(f"dt_s must be a finite number > 0, got {dt_s!r}")
    starts, counts = _slots(n)

    def mean(name: str, values) -> np.ndarray:
        arr = np.asarray(values, dtype=float)
        arr = np.full(n, float(arr)) if arr.ndim == 0 else arr
        if arr.shape != (n,):
            raise ValueError(f"{name}: {arr.size} values but load_w has {n}")
        return np.add.reduceat(arr, starts) / counts

    durations = counts * float(dt_s)
    result = plan(mean("prices", prices), mean("load_w", load), mean("pv_w", pv_w), durations, soc0, usable_wh,
                  charge_w, discharge_w, soc_min, soc_max, charge_eff, discharge_eff,
                  export_prices=mean("export_prices", export_prices), soc_end_min=soc_end_min,
                  cycle_penalty=cycle_penalty)
    import_wh = float(np.sum(np.maximum(result.grid_w, 0.0) * durations) / 3600.0)
    export_wh = float(np.sum(np.maximum(-result.grid_w, 0.0) * durations) / 3600.0)
    return dict(import_wh=import_wh, export_wh=export_wh, grid_exchange_wh=import_wh + export_wh,
                battery_w=np.repeat(result.battery_w, counts),   # per input step
                soc=result.soc, slot_s=durations, cost=result.cost)


def ideal_grid_exchange(load_w, pv_w, dt_s: float, soc0: float, usable_wh: float, charge_w: float,
                        discharge_w: float, soc_min: float, soc_max: float, charge_eff: float,
                        discharge_eff: float, *, soc_end_min: float | None = None) -> dict:
    """The least import + export energy (Wh) of the day.

    Returns ``import_wh``, ``export_wh``, ``grid_exchange_wh``, ``battery_w`` (per input step,
    + = discharge), and ``soc`` (after each slot), ``slot_s`` (each slot's duration), ``cost``.
    """
    n = np.asarray(load_w).size
    round_trip = float(charge_eff) * float(discharge_eff)
    penalty = (1.0 - round_trip) / (1.0 + round_trip) + 1e-3 if 0 < round_trip <= 1 else CYCLE_PENALTY
    # "price" 1 per kWh imported, export "earns" -1: the objective is import + export
    return _solve(np.ones(n), -np.ones(n), load_w, pv_w, dt_s, soc0, usable_wh, charge_w, discharge_w,
                  soc_min, soc_max, charge_eff, discharge_eff, soc_end_min, penalty)


def ideal_cost(prices_per_step, load_w, pv_w, dt_s: float, soc0: float, usable_wh: float, charge_w: float,
               discharge_w: float, soc_min: float, soc_max: float, charge_eff: float, discharge_eff: float, *,
               export_prices_per_step=None, soc_end_min: float | None = None) -> dict:
    """The least energy cost of the day (currency; prices per kWh per step, export default 0).

    Same keys as ``ideal_grid_exchange``; ``cost`` is the optimum. Prices are averaged per slot
    like the powers (exact when they change only at slot boundaries).
    """
    export = 0.0 if export_prices_per_step is None else export_prices_per_step
    return _solve(prices_per_step, export, load_w, pv_w, dt_s, soc0, usable_wh, charge_w, discharge_w,
                  soc_min, soc_max, charge_eff, discharge_eff, soc_end_min, CYCLE_PENALTY)
