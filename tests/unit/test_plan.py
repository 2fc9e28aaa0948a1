"""The LP planner (control/plan.py): economics, limits, infeasibility and speed."""
import time

import numpy as np
import pytest

from mastercontroller.control.plan import plan

BATTERY = dict(soc0=0.5, usable_wh=10_000.0, charge_w=3000.0, discharge_w=2500.0, soc_min=0.1, soc_max=0.95)
ETA = dict(charge_eff=0.95, discharge_eff=0.95)
TWO_PRICES = np.r_[np.full(12, 0.10), np.full(12, 0.40)]


def energy_wh(p):
    """Stored energy change per slot implied by the battery powers (the efficiencies applied)."""
    h = p.slot_s / 3600.0
    c, d = np.maximum(-p.battery_w, 0.0), np.maximum(p.battery_w, 0.0)
    return h * (ETA["charge_eff"] * c - d / ETA["discharge_eff"])


def check_limits(p, battery=BATTERY):
    assert np.all(p.battery_w <= battery["discharge_w"] + 1e-6)
    assert np.all(p.battery_w >= -battery["charge_w"] - 1e-6)
    assert np.all(p.soc >= battery["soc_min"] - 1e-6) and np.all(p.soc <= battery["soc_max"] + 1e-6)


@pytest.mark.parametrize("eff", [1.0, 0.95])
def test_flat_prices_no_cycling(eff):
    p = plan(np.full(24, 0.3), 800.0, 0.0, 3600, **BATTERY, charge_eff=eff, discharge_eff=eff)
    assert p.status == "optimal"
    assert np.allclose(p.battery_w, 0.0, atol=1e-6)
    assert np.allclose(p.soc, BATTERY["soc0"], atol=1e-9)
    assert p.cost == pytest.approx(24 * 0.8 * 0.3)


def test_two_price_day_charges_cheap_discharges_expensive():
    p = plan(TWO_PRICES, 800.0, 0.0, 3600, **BATTERY, **ETA)
    check_limits(p)
    cheap, dear = p.battery_w[:12], p.battery_w[12:]
    assert np.all(cheap <= 1e-6) and cheap.min() == pytest.approx(-3000.0)   # charges at the cap
    assert np.all(dear >= -1e-6)
    assert np.all(dear <= 800.0 + 1e-6)          # export earns nothing: discharge covers the load only
    assert np.all(p.grid_w >= -1e-6)
    assert p.soc[-1] >= BATTERY["soc0"] - 1e-9   # the default end SOC: not below the start
    assert p.cost < 12 * 0.8 * 0.1 + 12 * 0.8 * 0.4 - 1.0


def test_export_price_makes_discharge_into_the_grid_worthwhile():
    p = plan(TWO_PRICES, 800.0, 0.0, 3600, **BATTERY, **ETA, export_prices=TWO_PRICES)
    check_limits(p)
    assert p.battery_w[12:].max() == pytest.approx(2500.0)   # discharge cap, beyond the load
    assert p.grid_w.min() < -1000.0


def test_efficiency_respected():
    p = plan(TWO_PRICES, 800.0, 0.0, 3600, **BATTERY, **ETA)
    soc_before = np.r_[BATTERY["soc0"], p.soc[:-1]]
    assert np.allclose((p.soc - soc_before) * BATTERY["usable_wh"], energy_wh(p), atol=1e-6)
    # a spread smaller than the round-trip loss is not worth a cycle: 0.10 -> 0.11 at 81 %
    p = plan(np.r_[np.full(12, 0.10), np.full(12, 0.11)], 800.0, 0.0, 3600, **BATTERY,
             charge_eff=0.9, discharge_eff=0.9)
    assert np.allclose(p.battery_w, 0.0, atol=1e-6)


def test_soc_bounds_and_caps_every_slot_random_day():
    rng = np.random.default_rng(7)
    for _ in range(5):
        prices = rng.uniform(-0.05, 0.6, 96)
        load, pv = rng.uniform(100, 4000, 96), np.maximum(0, 6000 * np.sin(np.linspace(-0.5, 3.6, 96)))
        p = plan(prices, load, pv, 900, **BATTERY, **ETA, export_prices=0.5 * prices)
        check_limits(p)
        assert np.allclose(p.grid_w, load - pv - p.battery_w)
        soc_before = np.r_[BATTERY["soc0"], p.soc[:-1]]
        assert np.allclose((p.soc - soc_before) * BATTERY["usable_wh"], energy_wh(p), atol=1e-4)


def test_grid_caps_respected():
    p = plan(TWO_PRICES, 800.0, 0.0, 3600, **BATTERY, **ETA, grid_import_max_w=2000.0)
    assert np.all(p.grid_w <= 2000.0 + 1e-6)
    assert p.battery_w.min() == pytest.approx(-1200.0)


def test_start_below_soc_min_does_not_discharge_further():
    p = plan(TWO_PRICES, 800.0, 0.0, 3600, **{**BATTERY, "soc0": 0.05}, **ETA)
    assert np.all(p.soc >= 0.05 - 1e-9)


def test_per_slot_durations():
    p = plan(TWO_PRICES, 800.0, 0.0, np.r_[1800.0, np.full(23, 3600.0)], **BATTERY, **ETA)
    assert p.slot_s[0] == 1800.0
    soc_before = np.r_[BATTERY["soc0"], p.soc[:-1]]
    assert np.allclose((p.soc - soc_before) * BATTERY["usable_wh"], energy_wh(p), atol=1e-6)


@pytest.mark.parametrize("kwargs,fragment", [
    (dict(soc_end_min=0.95, charge_w=100.0), "soc_end_min 0.950 unreachable"),
    (dict(soc_end_min=0.99), "soc_end_min 0.990 unreachable"),
    (dict(grid_import_max_w=100.0, discharge_w=500.0), "slot 0: load - pv = 800 W exceeds"),
    (dict(load_w=[800.0] * 3), "load_w: needs 24 values"),
    (dict(charge_eff=0.0), "charge_eff must be in (0.0, 1.0]"),
    (dict(soc_min=0.5, soc_max=0.4), "soc_max must be in"),
    (dict(prices=[0.1, float("nan")]), "prices: every value must be finite"),
])
def test_infeasible_or_invalid_raises_with_reason(kwargs, fragment):
    args = dict(prices=TWO_PRICES, load_w=800.0, pv_w=0.0, slot_s=3600, **BATTERY, **ETA)
    with pytest.raises(ValueError, match=fragment.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        plan(**{**args, **kwargs})


def test_infeasible_combination_found_by_the_solver():
    # each slot alone is fine, but covering the load needs more energy than the battery holds
    with pytest.raises(ValueError, match="LP infeasible"):
        plan(np.full(8, 0.3), 3000.0, 0.0, 3600, soc0=0.5, usable_wh=4000.0, charge_w=3000.0, discharge_w=3000.0,
             soc_min=0.1, soc_max=0.9, grid_import_max_w=1000.0, soc_end_min=0.1)


@pytest.mark.parametrize("n", [96, 1440])
def test_speed(n):
    rng = np.random.default_rng(1)
    prices = rng.uniform(0.0, 0.5, n)
    load, pv = rng.uniform(200, 3000, n), np.maximum(0, 4000 * np.sin(np.linspace(0, np.pi, n)))
    t0 = time.perf_counter()
    p = plan(prices, load, pv, 86400 / n, **{**BATTERY, "usable_wh": 20_000.0}, **ETA, export_prices=0.3 * prices)
    elapsed = time.perf_counter() - t0
    print(f"\nLP {n} slots (random prices): {elapsed * 1000:.0f} ms")
    assert p.status == "optimal"
    assert elapsed < 5.0
