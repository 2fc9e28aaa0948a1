"""The LP planner: the cheapest battery schedule for known prices and forecasts (pure, no I/O).

One aggregated battery, per slot ``t`` of duration ``h_t``:

- variables: charge ``c`` >= 0, discharge ``d`` >= 0, grid import ``g+`` >= 0, export ``g-`` >= 0
  (kW in the LP) and the stored energy ``e`` after the slot (kWh);
- balance: ``load - pv - d + c = g+ - g-``;
- SOC dynamics: ``e_t = e_{t-1} + h_t * (charge_eff * c - d / discharge_eff)``, ``e_{-1}`` = soc0;
- bounds: ``soc_min <= e_t / usable <= soc_max`` every slot (widened to include soc0 when the battery
  starts outside them: it may then not move further out), ``e_last >= soc_end_min``, the power caps,
  the optional grid caps; and ``c / charge_w + d / discharge_w <= 1`` (no full charge and discharge
  in the same slot);
- objective: ``sum((price * g+ - export_price * g-) * h) + penalty * sum((c + d) * h)``; the tiny
  penalty (default 1e-6 per kWh) stops pointless cycling and charge/discharge in the same slot.

Export prices: by default 0 (exported energy earns nothing — the conservative tariff; pass
``export_prices`` for a feed-in tariff). Where a slot's export price exceeds its import price
(possible with negative prices) the LP uses the import price for export too: one meter cannot
import and export at once, and the linear model would otherwise do both. ``Plan.cost`` is always
computed from the prices as given on the net grid power.

``plan`` is the single formulation of this LP: ``simulate/ideal.py`` reuses it.

scipy (its sparse matrices and HiGHS ``linprog``) is imported on first use: it costs ~60 MB of
memory, which only a node that plans should pay. ``ready()`` lets a caller that must not wait
(the leader's cycle) load it in the background and plan once it is there.
"""
from __future__ import annotations

import math
import threading
from dataclasses import dataclass

_solver: tuple | None = None          # (scipy.sparse, scipy.optimize.linprog) once imported
_loading: threading.Thread | None = None
_lock = threading.Lock()


def _load() -> tuple:
    global _solver
    if _solver is None:
        from scipy import sparse
        from scipy.optimize import linprog

        _solver = (sparse, linprog)
    return _solver


def ready() -> bool:
    """Whether the LP solver is loaded; if not, start loading it in the background (once)."""
    global _loading
    if _solver is not None:
        return True
    with _lock:
        if _loading is None:
            _loading = threading.Thread(target=_load, name="lp-solver-import", daemon=True)
            _loading.start()
    return False

CYCLE_PENALTY = 1e-6   # currency per kWh charged or discharged
IPM_FROM_SLOTS = 400   # HiGHS's interior point (with crossover to a vertex) is ~5-10x faster on long horizons


@dataclass(frozen=True)
class Plan:
    battery_w: np.ndarray   # per slot, + = discharge
    soc: np.ndarray         # 0..1 after each slot
    grid_w: np.ndarray      # per slot, + = import
    cost: float             # currency: import paid minus export earned (penalty excluded)
    status: str             # "optimal"
    slot_s: np.ndarray      # each slot's duration


def _series(name: str, value, n: int | None) -> np.ndarray:
    import numpy as np  # numpy on first use: a node that never plans does not load it

    arr = np.atleast_1d(np.asarray(value, dtype=float))
    if n is not None and arr.size == 1 and n > 1:
        arr = np.full(n, float(arr[0]))
    if arr.ndim != 1 or (n is not None and arr.size != n) or arr.size == 0:
        raise ValueError(f"{name}: needs {n or 'at least 1'} values, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name}: every value must be finite")
    return arr


def _check(name: str, value: float, low: float, high: float, low_open: bool = False) -> float:
    value = float(value)
    if not math.isfinite(value) or value < low or value > high or (low_open and value == low):
        raise ValueError(f"{name} must be in {'(' if low_open else '['}{low}, {high}], got {value!r}")
    return value


def plan(prices, load_w, pv_w, slot_s, soc0: float, usable_wh: float, charge_w: float, discharge_w: float,
         soc_min: float = 0.0, soc_max: float = 1.0, charge_eff: float = 1.0, discharge_eff: float = 1.0, *,
         export_prices=None, soc_end_min: float | None = None, grid_import_max_w: float | None = None,
         grid_export_max_w: float | None = None, cycle_penalty: float = CYCLE_PENALTY) -> Plan:
    """The optimal schedule, or ValueError saying why there is none.

    ``prices``/``export_prices``: currency per kWh per slot; ``load_w``/``pv_w``: per-slot forecasts
    (a scalar is constant); ``slot_s``: one duration or one per slot; powers in W, SOC 0..1.
    ``soc_end_min`` defaults to soc0, so the plan cannot profit from just emptying the battery.
    """
    import numpy as np

    price = _series("prices", prices, None)
    n = price.size
    export = np.zeros(n) if export_prices is None else _series("export_prices", export_prices, n)
    net_kw = (_series("load_w", load_w, n) - _series("pv_w", pv_w, n)) / 1000.0
    h = _series("slot_s", slot_s, n) / 3600.0
    if np.any(h <= 0):
        raise ValueError("slot_s: every slot must last > 0 s")
    soc0 = _check("soc0", soc0, 0.0, 1.0)
    cap = _check("usable_wh", usable_wh, 0.0, np.inf) / 1000.0
    ch = _check("charge_w", charge_w, 0.0, np.inf) / 1000.0
    dis = _check("discharge_w", discharge_w, 0.0, np.inf) / 1000.0
    soc_min = _check("soc_min", soc_min, 0.0, 1.0)
    soc_max = _check("soc_max", soc_max, soc_min, 1.0)
    eta_c = _check("charge_eff", charge_eff, 0.0, 1.0, low_open=True)
    eta_d = _check("discharge_eff", discharge_eff, 0.0, 1.0, low_open=True)
    end = soc0 if soc_end_min is None else _check("soc_end_min", soc_end_min, 0.0, 1.0)
    imp_max = np.inf if grid_import_max_w is None else _check("grid_import_max_w", grid_import_max_w, 0, np.inf) / 1e3
    exp_max = np.inf if grid_export_max_w is None else _check("grid_export_max_w", grid_export_max_w, 0, np.inf) / 1e3
    if cap == 0.0:
        ch = dis = 0.0   # no battery: nothing to schedule

    # clear reasons for the infeasibilities that can be seen before solving
    e0, lo, hi = soc0 * cap, min(soc_min, soc0) * cap, max(soc_max, soc0) * cap
    short = np.flatnonzero(net_kw - dis > imp_max + 1e-9)
    if short.size:
        t = int(short[0])
        raise ValueError(f"slot {t}: load - pv = {net_kw[t] * 1e3:.0f} W exceeds discharge cap {dis * 1e3:.0f} W "
                         f"+ grid import max {imp_max * 1e3:.0f} W")
    surplus = np.flatnonzero(-net_kw - ch > exp_max + 1e-9)
    if surplus.size:
        t = int(surplus[0])
        raise ValueError(f"slot {t}: pv - load = {-net_kw[t] * 1e3:.0f} W exceeds charge cap {ch * 1e3:.0f} W "
                         f"+ grid export max {exp_max * 1e3:.0f} W (no curtailment modelled)")
    reachable = min(hi, e0 + eta_c * ch * h.sum())
    if end * cap > reachable + 1e-9:
        raise ValueError(f"soc_end_min {end:.3f} unreachable: at most {reachable / cap if cap else soc0:.3f} "
                         f"(soc {soc0:.3f}, soc_max {soc_max:.3f}, charge cap {ch * 1e3:.0f} W over {h.sum():.2f} h)")

    sparse, linprog = _load()
    # variable blocks: c, d, g+, g-, e (n each)
    C, D, GP, GM, E = (np.arange(n) + k * n for k in range(5))
    w = h / h.mean()   # objective scaled to about one slot: keeps the tiny penalty above solver tolerances
    penalty = cycle_penalty * w
    cost = np.concatenate([penalty, penalty, price * w, -np.minimum(export, price) * w, np.zeros(n)])
    rows, cols, vals = [], [], []

    def put(r, c, v):
        rows.append(r), cols.append(c), vals.append(np.broadcast_to(v, np.shape(r)))

    t = np.arange(n)
    put(t, GP, 1.0), put(t, GM, -1.0), put(t, D, 1.0), put(t, C, -1.0)                  # balance
    put(n + t, E, 1.0), put(n + t, C, -eta_c * h), put(n + t, D, h / eta_d)              # dynamics
    put(n + t[1:], E[:-1], -1.0)
    a_eq = sparse.csr_array((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(2 * n, 5 * n))
    b_eq = np.concatenate([net_kw, [e0], np.zeros(n - 1)])
    a_ub = b_ub = None
    if ch > 0 and dis > 0:   # c / C + d / D <= 1
        a_ub = sparse.hstack([sparse.eye_array(n) / ch, sparse.eye_array(n) / dis,
                              sparse.csr_array((n, 3 * n))]).tocsr()
        b_ub = np.ones(n)
    lower = np.concatenate([np.zeros(4 * n), np.full(n, lo)])
    upper = np.concatenate([np.full(n, ch), np.full(n, dis), np.minimum(imp_max, np.maximum(net_kw, 0) + ch),
                            np.minimum(exp_max, np.maximum(-net_kw, 0) + dis), np.full(n, hi)])
    lower[E[-1]] = max(lo, min(end * cap, hi))
    res = linprog(cost, A_ub=a_ub, b_ub=b_ub, A_eq=a_eq, b_eq=b_eq, bounds=np.column_stack([lower, upper]),
                  method="highs" if n <= IPM_FROM_SLOTS else "highs-ipm")
    if res.status != 0 or res.x is None:
        kind = {1: "iteration limit reached", 2: "infeasible", 3: "unbounded"}.get(res.status, "failed")
        raise ValueError(f"LP {kind}: the SOC bounds, end SOC, power and grid caps cannot all be met ({res.message})")

    x = res.x
    battery_w = (x[D] - x[C]) * 1000.0
    grid_w = net_kw * 1000.0 - battery_w
    soc = np.clip(x[E] / cap, 0.0, 1.0) if cap > 0 else np.full(n, soc0)
    kwh = grid_w / 1000.0 * h
    money = float(np.sum(price * np.maximum(kwh, 0.0)) - np.sum(export * np.maximum(-kwh, 0.0)))
    return Plan(battery_w, soc, grid_w, money, "optimal", h * 3600.0)
