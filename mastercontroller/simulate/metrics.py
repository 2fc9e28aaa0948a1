"""Figures of one simulated day, from the arrays the engine recorded (``engine.DayRun``).

Energies are the recorded powers times the step (each column holds the power over the step that
ends there), in Wh. Definitions:

- ``import_wh`` / ``export_wh``: grid power above / below 0; ``grid_exchange_wh`` = import + export;
- ``self_consumption_ratio``: the share of the PV energy used on site (load or battery),
  ``(pv - export - curtailed) / pv``; None on a day without PV;
- ``cost``: import at the scenario's import price minus export at its export price (0 unless the
  scenario gives one), in the scenario's currency; 0 without prices;
- ``soc_spread_end``: max - min SOC across the nodes after the last step (0..1);
- ``sign_changes_per_h``: how often the grid flips between import and export: each sample is
  import (> +50 W), export (< -50 W) or neither (inside the deadband, skipped); a change is an
  import sample followed by an export one or the reverse, counted per hour of the run; noise
  around a 0 W target flips too, so ``flipping_max_s`` tells oscillation apart: the longest
  stretch of flips at most 10 s apart (a loop that oscillates keeps flipping every half period);
- ``ideal_grid_exchange_wh``: the battery-limited clairvoyant ideal (``ideal.ideal_grid_exchange``)
  for the same load and PV, one battery with the nodes' summed energy and power, their SOC window
  (reserve..max) and round-trip efficiency (inverter x cell), starting at their energy-weighted
  SOC and ending at least where the run ended (no credit for emptying the battery); it assumes
  the grid is there all day (a grid loss is not modelled in it). ``ratio_to_ideal`` =
  grid_exchange_wh / ideal (1.0 is perfect);
- ``ideal_cost``: the same for cost (``ideal.ideal_cost``), when the scenario has prices;
- ``unserved_wh``: load nobody supplied (grid loss without grid forming, or beyond the nodes; the
  leader orders grid forming one step after it sees the loss, so that first step is unserved);
- ``import_max_w`` / ``export_max_w``, ``import_peak_15min_w``: the largest grid import / export,
  and the largest 15-minute mean import (what a demand charge bills), for peak shaving;
- ``wall_s``: real seconds the run took (the only figure that differs between equal runs).
"""
from __future__ import annotations

import json
import math

import numpy as np

from .engine import DayRun
from .scenario import price_at

DEADBAND_W = 50.0
FLIP_GAP_S = 10.0
REQUIRED = ("import_wh", "export_wh", "grid_exchange_wh", "self_consumption_ratio", "cost", "soc_spread_end",
            "sign_changes_per_h", "ideal_grid_exchange_wh", "ratio_to_ideal", "unserved_wh", "wall_s", "steps",
            "mode", "nodes")


def sign_changes(grid_w: np.ndarray, deadband_w: float = DEADBAND_W) -> int:
    """Import <-> export flips of the samples outside +-deadband_w (samples inside are skipped)."""
    signs = np.sign(grid_w)[np.abs(grid_w) > deadband_w]
    return int(np.count_nonzero(signs[1:] != signs[:-1]))


def flipping_max_s(grid_w: np.ndarray, dt_s: float, deadband_w: float = DEADBAND_W,
                   gap_s: float = FLIP_GAP_S) -> float:
    """The longest stretch (s) in which the grid keeps flipping between import and export with at
    most ``gap_s`` between two flips: a loop that oscillates flips every half period for as long
    as it oscillates; noise around the target flips at random and only briefly in a row."""
    idx = np.flatnonzero(np.abs(grid_w) > deadband_w)
    signs = np.sign(grid_w[idx])
    flips = idx[1:][signs[1:] != signs[:-1]]
    best = run = 0.0
    for gap in (np.diff(flips) * dt_s).tolist():
        run = run + gap if gap <= gap_s else 0.0
        best = max(best, run)
    return best


def _peak_mean(grid_w: np.ndarray, dt_s: float, window_s: float) -> float:
    """The highest mean grid import over consecutive windows of ``window_s`` (demand charges use 15 min)."""
    k = max(1, round(window_s / dt_s))
    n = grid_w.size // k * k
    means = grid_w[:n].reshape(-1, k).mean(axis=1) if n else grid_w
    return float(max(means.max(), 0.0))


def _wh(power_w: np.ndarray, dt_s: float) -> float:
    return float(np.sum(power_w) * dt_s / 3600.0)


def _r(x: float | None, digits: int = 3) -> float | None:
    return None if x is None or not math.isfinite(x) else round(float(x), digits)


def _ideal(run: DayRun, which: str) -> dict | None:
    from . import ideal  # the LP is only needed here

    a, usable = run.arrays, np.asarray(run.usable_wh)
    soc0 = float(np.dot([s.soc0 for s in run.specs], usable) / usable.sum())
    soc_end = float(np.dot(a["soc"][:, -1], usable) / usable.sum())
    common = dict(dt_s=run.step_s, soc0=soc0, usable_wh=float(usable.sum()),
                  charge_w=sum(c for c, _ in run.power_w), discharge_w=sum(d for _, d in run.power_w),
                  soc_min=run.soc_min, soc_max=run.soc_max, charge_eff=run.charge_eff,
                  discharge_eff=run.discharge_eff, soc_end_min=min(max(soc_end, 0.0), run.soc_max))
    try:
        if which == "exchange":
            return ideal.ideal_grid_exchange(a["load_w"], a["pv_w"], **common)
        export = _export_prices(run)
        return ideal.ideal_cost(a["price"], a["load_w"], a["pv_w"], export_prices_per_step=export, **common)
    except ValueError:
        return None


def _export_prices(run: DayRun) -> np.ndarray:
    prices = run.scenario.prices
    if prices is None or isinstance(prices.export_per_kwh, float):
        return np.full(run.arrays["t_s"].size, 0.0 if prices is None else prices.export_per_kwh)
    return np.array([price_at(prices, t, export=True) for t in run.arrays["t_s"]])


def compute(run: DayRun, *, ideal: bool = True) -> dict:
    """The day's metrics as a flat dict of JSON numbers (see the module docstring)."""
    a, dt = run.arrays, run.step_s
    grid = a["grid_w"]
    import_wh = _wh(np.maximum(grid, 0.0), dt)
    export_wh = _wh(np.maximum(-grid, 0.0), dt)
    pv_wh, curtailed_wh = _wh(a["pv_w"], dt), _wh(a["curtailed_w"], dt)
    hours = grid.size * dt / 3600.0
    cost = float(np.sum(np.maximum(grid, 0.0) * a["price"] - np.maximum(-grid, 0.0) * _export_prices(run))
                 * dt / 3.6e6)
    soc_end = a["soc"][:, -1]
    m = {
        "scenario": run.scenario.name, "seed": run.scenario.seed, "mode": run.scenario.mode,
        "modes_run": list(run.mode_names), "nodes": len(run.node_ids), "hours": _r(hours, 4),
        "step_s": run.step_s, "steps": int(grid.size),
        "import_wh": _r(import_wh), "export_wh": _r(export_wh), "grid_exchange_wh": _r(import_wh + export_wh),
        "load_wh": _r(_wh(a["load_w"], dt)), "pv_wh": _r(pv_wh), "curtailed_wh": _r(curtailed_wh),
        "unserved_wh": _r(_wh(a["unserved_w"], dt)),
        "self_consumption_ratio": _r((pv_wh - export_wh - curtailed_wh) / pv_wh, 5) if pv_wh > 0 else None,
        "cost": _r(cost, 5), "currency": run.scenario.prices.currency if run.scenario.prices else None,
        "soc_end": [_r(s, 5) for s in soc_end], "soc_spread_end": _r(float(soc_end.max() - soc_end.min()), 5),
        "sign_changes_per_h": _r(sign_changes(grid) / hours), "sign_deadband_w": DEADBAND_W,
        "flipping_max_s": _r(flipping_max_s(grid, dt)),
        "grid_w_abs_p99": _r(float(np.percentile(np.abs(grid), 99)), 1),
        "import_max_w": _r(float(max(grid.max(), 0.0)), 1), "export_max_w": _r(float(max(-grid.min(), 0.0)), 1),
        "import_peak_15min_w": _r(_peak_mean(grid, dt, 900.0), 1),
        "unplaced_wh": _r(_wh(np.abs(a["target_w"] - a["placed_w"]), dt)),
        "grid_forming_s": _r(float(np.count_nonzero(a["grid_forming"]) * dt)),
        "island_s": _r(float(np.count_nonzero(a["island"]) * dt)),
        "ideal_grid_exchange_wh": None, "ratio_to_ideal": None, "ideal_cost": None,
        "wall_s": _r(run.wall_s),
    }
    if ideal:
        best = _ideal(run, "exchange")
        if best is not None:
            m["ideal_grid_exchange_wh"] = _r(best["grid_exchange_wh"])
            if best["grid_exchange_wh"] > 0:
                m["ratio_to_ideal"] = _r((import_wh + export_wh) / best["grid_exchange_wh"], 4)
        if run.scenario.prices is not None:
            cheapest = _ideal(run, "cost")
            m["ideal_cost"] = None if cheapest is None else _r(cheapest["cost"], 5)
    return m


def write(metrics: dict, path) -> None:
    """metrics.json: sorted keys, so that equal runs give equal bytes (apart from wall_s)."""
    with open(path, "w", encoding="utf-8") as f:
        json.dump(metrics, f, indent=2, sort_keys=True)
        f.write("\n")


def summary_line(m: dict) -> str:
    """One line for terminals and the bench."""
    ratio = "-" if m["ratio_to_ideal"] is None else f"{m['ratio_to_ideal']:.3f}"
    ideal = "-" if m["ideal_grid_exchange_wh"] is None else f"{m['ideal_grid_exchange_wh'] / 1000:.2f}"
    scr = "-" if m["self_consumption_ratio"] is None else f"{m['self_consumption_ratio']:.3f}"
    cost = f"{m['cost']:.2f}" + ("" if m["ideal_cost"] is None else f" (ideal {m['ideal_cost']:.2f})")
    return (f"{m['scenario']}: exchange {m['grid_exchange_wh'] / 1000:.2f} kWh (import {m['import_wh'] / 1000:.2f}, "
            f"export {m['export_wh'] / 1000:.2f}), ideal {ideal} kWh, ratio {ratio}, self-consumption {scr}, "
            f"cost {cost}, sign changes {m['sign_changes_per_h']:.1f}/h, "
            f"SOC spread {m['soc_spread_end'] * 100:.2f} %, unserved {m['unserved_wh'] / 1000:.2f} kWh, "
            f"wall {m['wall_s']:.1f} s")
