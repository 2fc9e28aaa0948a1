"""The clairvoyant, battery-limited ideal of a day (simulate/ideal.py): the metrics' yardstick."""
import time

import numpy as np
import pytest

from mastercontroller.control.plan import plan
from mastercontroller.simulate.ideal import ideal_cost, ideal_grid_exchange

DAY_S = 86400
BATTERY = dict(soc0=0.5, usable_wh=10_000.0, charge_w=5000.0, discharge_w=5000.0, soc_min=0.1, soc_max=0.95,
               charge_eff=0.95, discharge_eff=0.95)
NO_BATTERY = {**BATTERY, "usable_wh": 0.0}


def sunny_day(dt_s, noise_w=0.0, seed=3):
    t = np.floor(np.arange(0, DAY_S, dt_s, dtype=float) / 60.0) * 60.0   # constant within each minute
    pv = np.maximum(0.0, 5000.0 * np.sin((t / DAY_S - 0.25) * 2 * np.pi))
    load = np.where((t > 18 * 3600) & (t < 22 * 3600), 2000.0, 600.0)
    if noise_w:
        load = np.maximum(0.0, load + np.random.default_rng(seed).normal(0.0, noise_w, t.size))
    return load, pv


def net_wh(load, pv, dt_s):
    net = load - pv
    return np.maximum(net, 0).sum() * dt_s / 3600, np.maximum(-net, 0).sum() * dt_s / 3600


@pytest.mark.parametrize("dt_s", [60.0, 1.0])   # 1 s: aggregated to 1-minute means, exact for this data
def test_no_battery_is_the_net_exchange(dt_s):
    load, pv = sunny_day(dt_s)
    imp, exp = net_wh(load, pv, dt_s)
    for battery in (NO_BATTERY, {**BATTERY, "charge_w": 0.0, "discharge_w": 0.0}):
        r = ideal_grid_exchange(load, pv, dt_s, **battery)
        assert r["import_wh"] == pytest.approx(imp, rel=1e-6)
        assert r["export_wh"] == pytest.approx(exp, rel=1e-6)
        assert r["grid_exchange_wh"] == pytest.approx(imp + exp, rel=1e-6)
        assert np.allclose(r["battery_w"], 0.0, atol=1e-6)


def test_battery_lowers_the_exchange_within_its_limits():
    dt_s = 60.0
    load, pv = sunny_day(dt_s)
    imp, exp = net_wh(load, pv, dt_s)
    r = ideal_grid_exchange(load, pv, dt_s, **BATTERY)
    stored_wh = (BATTERY["soc_max"] - BATTERY["soc_min"]) * BATTERY["usable_wh"]
    assert r["grid_exchange_wh"] < imp + exp - stored_wh   # the evening is served from the midday surplus
    assert r["battery_w"].shape == load.shape
    assert np.all(r["battery_w"] <= BATTERY["discharge_w"] + 1e-6)
    assert np.all(r["battery_w"] >= -BATTERY["charge_w"] - 1e-6)
    assert np.all(r["soc"] >= BATTERY["soc_min"] - 1e-6) and np.all(r["soc"] <= BATTERY["soc_max"] + 1e-6)
    assert r["soc"][-1] >= BATTERY["soc0"] - 1e-6


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_never_below_the_energy_balance_bound(seed):
    rng = np.random.default_rng(seed)
    dt_s = 300.0
    n = int(DAY_S / dt_s)
    load, pv = rng.uniform(0, 3000, n), rng.uniform(0, 4000, n) * (rng.random(n) < 0.5)
    r = ideal_grid_exchange(load, pv, dt_s, **BATTERY)
    e_net = float(np.sum(load - pv) * dt_s / 3600)
    headroom_wh = (BATTERY["soc_max"] - BATTERY["soc0"]) * BATTERY["usable_wh"] / BATTERY["charge_eff"]
    # the day ends at least at soc0: the grid brings the net energy and the battery's losses
    assert r["import_wh"] - r["export_wh"] >= e_net - 1e-6
    assert r["grid_exchange_wh"] >= max(e_net, -e_net - headroom_wh, 0.0) - 1e-6
    assert r["grid_exchange_wh"] <= float(np.abs(load - pv).sum() * dt_s / 3600) + 1e-6


def test_one_second_steps_averaged_to_minutes_give_a_lower_bound():
    load, pv = sunny_day(1.0, noise_w=400.0)
    t0 = time.perf_counter()
    r = ideal_grid_exchange(load, pv, 1.0, **BATTERY)
    print(f"\nideal grid exchange, 86400 steps -> {r['slot_s'].size} slots: {(time.perf_counter() - t0) * 1000:.0f} ms")
    assert r["slot_s"].size == 1440 and np.all(r["slot_s"] == 60.0)
    assert r["battery_w"].shape == load.shape
    per_second = np.abs(load - pv - r["battery_w"]).sum() / 3600   # the same schedule at 1 s
    assert r["grid_exchange_wh"] <= per_second + 1e-6


def test_uneven_last_slot():
    load, pv = sunny_day(1.0)
    load, pv = load[:2001], pv[:2001]            # 2 steps a slot, the last slot 1 step
    r = ideal_grid_exchange(load, pv, 1.0, **NO_BATTERY)
    assert r["slot_s"].size == 1001 and r["slot_s"].sum() == 2001.0 and r["slot_s"][-1] == 1.0
    assert r["battery_w"].shape == (2001,)
    assert r["import_wh"] == pytest.approx(np.maximum(load - pv, 0).sum() / 3600)


def test_does_not_burn_surplus_in_battery_losses():
    n = 288
    load, pv = np.full(n, 500.0), np.full(n, 3000.0)   # surplus all day, the battery starts full
    r = ideal_grid_exchange(load, pv, 300.0, **{**BATTERY, "soc0": 0.95, "charge_eff": 0.9, "discharge_eff": 0.9})
    assert np.allclose(r["battery_w"], 0.0, atol=1e-6)
    assert r["export_wh"] == pytest.approx(2500.0 * 24)


def test_ideal_cost_reuses_the_planner():
    dt_s = 900.0
    load, pv = sunny_day(dt_s)
    prices = np.where(np.arange(load.size) * dt_s >= 17 * 3600, 0.5, 0.2)
    r = ideal_cost(prices, load, pv, dt_s, **BATTERY, export_prices_per_step=0.05)
    direct = plan(prices, load, pv, dt_s, **BATTERY, export_prices=np.full(load.size, 0.05))
    assert r["cost"] == pytest.approx(direct.cost)
    no_battery = ideal_cost(prices, load, pv, dt_s, **NO_BATTERY, export_prices_per_step=0.05)["cost"]
    assert r["cost"] < no_battery
    assert np.all(r["battery_w"] <= BATTERY["discharge_w"] + 1e-6)


def test_mismatched_inputs_raise():
    with pytest.raises(ValueError, match="pv_w: 3 values but load_w has 4"):
        ideal_grid_exchange(np.ones(4), np.ones(3), 1.0, **BATTERY)
    with pytest.raises(ValueError, match="dt_s"):
        ideal_grid_exchange(np.ones(4), np.ones(4), 0.0, **BATTERY)
