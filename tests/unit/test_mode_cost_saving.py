"""The ``cost_saving`` mode: its pure step, one row per situation, and its parameter validation."""
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest
from pydantic import ValidationError

from mastercontroller.control import cost_saving, plan as planner
from mastercontroller.control.base import ClusterImage
from mastercontroller.dispatch import NodeView


@pytest.fixture(autouse=True)
def solver_loaded():
    """The rows below plan at once; the loading itself has its own test."""
    planner._load()


DAY = datetime(2024, 6, 1, tzinfo=timezone.utc)
T0 = DAY.timestamp()
HOUR = 3600.0
# a cheap night (cheapest first), a dear evening peak
PRICE = [0.08, 0.09, 0.10, 0.11, 0.12, 0.13] + [0.25] * 11 + [0.50] * 5 + [0.25] * 2


def raw_prices(values=PRICE, step=timedelta(hours=1), start=DAY):
    return [{"start": (start + i * step).isoformat(), "price": p} for i, p in enumerate(values)]


PARAMS = cost_saving.Params.model_validate({"prices": raw_prices()})


def image(at_h, soc=0.5, nodes=2, state="run"):
    views = tuple(NodeView(f"n{i}", True, state, soc, 10_000.0, 5000.0, 5000.0) for i in range(nodes))
    return ClusterImage(t=at_h * HOUR, wall=T0 + at_h * HOUR, dt_s=0.1, nodes=views)


def planned_soc_after(memory, hour):
    return float(memory.plan.soc[hour - memory.first])


def test_start_plans_to_the_end_of_the_prices():
    mem = cost_saving.start(image(0.5), PARAMS)
    assert mem.first == 0 and len(mem.plan.battery_w) == 24
    assert mem.plan.slot_s[0] == pytest.approx(1800.0)   # the rest of the current slot only
    assert mem.made_soc == 0.5 and mem.made_wall == T0 + 0.5 * HOUR


# start (h, soc), step (h, soc: None = as planned at the slot start), expected: sign of the target, replanned, note
ROWS = [
    ("cheap slot charges", (0.5, 0.5), (0.6, 0.5), -1, False, "slot 00:00 price 0.08: charge 10000 W"),
    ("same slot, SOC off: no re-plan", (0.5, 0.5), (0.9, 0.8), -1, False, "charge"),
    ("next slot as planned: keep", (0.5, 0.5), (1.2, None), -1, False, "slot 01:00"),
    ("next slot, SOC off: re-plan", (0.5, 0.5), (1.2, 0.95), 0, True, "idle 0 W (re-planned: SOC 0.950 vs planned"),
    ("evening peak discharges", (17.2, 0.8), (18.5, None), 1, False, "slot 18:00 price 0.5: discharge 800 W"),
    ("after the last slot", (23.5, 0.5), (24.0, 0.5), 0, False, "after the last price slot (ended 00:00)"),
    ("before the first slot", (-2.0, 0.5), (-1.0, 0.5), 0, False, "before the first price slot (00:00)"),
]


@pytest.mark.parametrize("name,start_at,step_at,sign,replanned,note", ROWS, ids=[r[0] for r in ROWS])
def test_step(name, start_at, step_at, sign, replanned, note):
    mem = cost_saving.start(image(*start_at), PARAMS)
    hour, soc = step_at
    if soc is None:
        soc = planned_soc_after(mem, int(hour) - 1)
    res = cost_saving.step(image(hour, soc), PARAMS, mem)
    assert np.sign(round(res.target_w, 3)) == sign
    assert note in res.note
    assert (res.memory.made_wall == T0 + hour * HOUR) == replanned
    assert -10_000.0 <= res.target_w <= 10_000.0


def test_step_is_pure():
    mem = cost_saving.start(image(0.5), PARAMS)
    a, b = (cost_saving.step(image(3.2, 0.7), PARAMS, mem) for _ in range(2))
    assert (a.target_w, a.note) == (b.target_w, b.note)


def test_replan_when_the_memory_has_no_plan_for_now():
    mem = cost_saving.start(image(10.0), PARAMS)   # covers 10:00 on (e.g. the wall clock was stepped back)
    res = cost_saving.step(image(5.5, 0.5), PARAMS, mem)
    assert "re-planned: no plan for now" in res.note
    assert res.memory.made_wall == T0 + 5.5 * HOUR
    res = cost_saving.step(image(5.5), PARAMS, None)   # no memory at all
    assert res.memory.plan is not None


def test_lp_failure_is_zero_watts_with_the_reason(monkeypatch):
    def broken(*args, **kwargs):
        raise ValueError("boom: infeasible")

    monkeypatch.setattr(cost_saving, "plan", broken)
    mem = cost_saving.start(image(2.0), PARAMS)
    assert mem.plan is None
    res = cost_saving.step(image(2.0), PARAMS, mem)
    assert res.target_w == 0.0
    assert "no plan (LP failed: boom: infeasible): 0 W" in res.note
    monkeypatch.undo()
    res = cost_saving.step(image(2.0 + 30 / 3600), PARAMS, res.memory)   # within the retry delay: still none
    assert res.memory.plan is None and res.target_w == 0.0
    res = cost_saving.step(image(2.0 + 61 / 3600), PARAMS, res.memory)   # retried
    assert res.memory.plan is not None and res.target_w < 0.0


def test_no_running_node():
    mem = cost_saving.start(image(1.0, state="sleep"), PARAMS)
    res = cost_saving.step(image(1.0, state="sleep"), PARAMS, mem)
    assert res.target_w == 0.0 and "no running node" in res.note


def test_node_limits_keep_soc_min():
    mem = cost_saving.start(image(18.0, soc=0.1), PARAMS)
    res = cost_saving.step(image(18.0, soc=0.1), PARAMS, mem)
    assert res.node_limits == {"n0": (5000.0, 0.0), "n1": (5000.0, 0.0)}
    res = cost_saving.step(image(18.0, soc=0.5), PARAMS, mem)
    assert res.node_limits["n0"] == (5000.0, 5000.0)


def test_forecasts_and_export_factor_change_the_plan():
    pv = [0.0] * 10 + [6000.0] * 5 + [0.0] * 9
    params = cost_saving.Params.model_validate({"prices": raw_prices(), "pv_w": pv, "load_w": 500.0,
                                                "export_price_factor": 1.0})
    mem = cost_saving.start(image(0.0, soc=0.5), params)
    assert mem.plan.battery_w[17:22].max() > 500.0 + 1.0   # exports at the peak: it earns the full price


def test_quarter_hour_slots():
    params = cost_saving.Params.model_validate(
        {"slot_s": 900, "prices": raw_prices([0.1] * 8 + [0.5] * 8, timedelta(minutes=15))})
    mem = cost_saving.start(image(0.0), params)
    res = cost_saving.step(image(2.5, soc=planned_soc_after(mem, 9)), params, mem)
    assert "slot 02:30 price 0.5: discharge 800 W" in res.note


def prices_with(index, **change):
    raw = raw_prices()
    raw[index] = {**raw[index], **change}
    return raw


@pytest.mark.parametrize("raw,fragment", [
    ({"prices": prices_with(3, start=(DAY + timedelta(hours=1)).isoformat())}, "prices[3].start"),
    ({"prices": prices_with(3, start=(DAY + timedelta(hours=4)).isoformat())},
     "prices[3].start must be slot_s = 3600 s after prices[2].start, got 7200 s"),
    ({"prices": raw_prices()[:3] + raw_prices()[4:]}, "prices[3].start must be slot_s = 3600 s"),
    ({"prices": prices_with(2, start="2024-06-01T02:00:00")}, "prices.2.start"),
    ({"prices": prices_with(1, price=150.0)}, "prices.1.price"),
    ({"prices": raw_prices(), "colour": "blue"}, "colour"),
    ({"prices": raw_prices(), "efficiency": 0.3}, "efficiency"),
    ({"prices": raw_prices(), "slot_s": 1800}, "slot_s"),
    ({"prices": raw_prices(), "soc_min": 0.9, "soc_max": 0.5}, "soc_min (0.9) must be below soc_max"),
    ({"prices": raw_prices(), "load_w": [800.0] * 3}, "load_w: 3 values but 24 price slots"),
    ({"prices": raw_prices(), "pv_w": -1.0}, "pv_w"),
    ({"prices": []}, "prices"),
    ({"prices": raw_prices([0.1] * 193)}, "prices"),
    ({"prices": raw_prices(), "export_price_factor": 1.5}, "export_price_factor"),
])
def test_invalid_params_name_the_field(raw, fragment):
    with pytest.raises(ValidationError) as err:
        cost_saving.Params.model_validate(raw)
    assert fragment in str(err.value)


def test_params_are_frozen_and_have_defaults():
    assert (PARAMS.slot_s, PARAMS.export_price_factor, PARAMS.load_w, PARAMS.pv_w) == (3600, 0.0, 800.0, 0.0)
    assert (PARAMS.soc_min, PARAMS.soc_max, PARAMS.efficiency, PARAMS.replan_soc_delta) == (0.1, 0.95, 0.95, 0.05)
    with pytest.raises(ValidationError):
        PARAMS.soc_min = 0.2


def test_replan_keeps_the_end_soc_anchor_of_the_start():
    params = cost_saving.Params.model_validate({"prices": raw_prices(PRICE[:22] + [0.6, 0.6])})
    fresh = cost_saving.start(image(17.2, soc=0.95), params)   # anchored at 0.95: nothing to sell
    assert cost_saving.step(image(17.3, soc=0.95), params, fresh).target_w == 0.0
    mem = cost_saving.start(image(0.5, soc=0.5), params)       # anchored at 0.5
    res = cost_saving.step(image(17.2, soc=0.95), params, mem)  # re-planned from 0.95, still ends >= 0.5
    assert "re-planned" in res.note and res.target_w == pytest.approx(800.0)
    assert res.memory.end_soc == 0.5 and res.memory.plan.soc[-1] >= 0.5 - 1e-9


def test_the_first_plan_waits_for_the_solver_without_holding_up_the_cycle(monkeypatch):
    """A node that has not loaded scipy yet: 0 W with the reason while it loads in the background,
    then the plan on the next cycle it is there (not a minute later)."""
    loaded = planner._solver
    monkeypatch.setattr(planner, "_solver", None)
    monkeypatch.setattr(planner, "_loading", None)
    monkeypatch.setattr(planner, "_load", lambda: None)  # the background import never finishes by itself
    img = image(0.5)
    memory = cost_saving.start(img, PARAMS)
    r = cost_saving.step(img, PARAMS, memory)
    assert r.target_w == 0.0 and "loading the LP solver" in r.note
    monkeypatch.setattr(planner, "_solver", loaded)  # loaded now
    monkeypatch.setattr(planner, "_load", lambda: loaded)
    r = cost_saving.step(image(0.5 + 1 / 3600), PARAMS, r.memory)
    assert r.memory.plan is not None and "cost saving: slot" in r.note
