"""Charge limiter: one table row per case (inputs -> charge_w, discharge_w, reason), then
seeded random checks that no layer ever widens the allowed range (DESIGN §2.3, §7)."""
from __future__ import annotations

import math
import random
from dataclasses import replace

import pytest

from sitecontroller.limits import (
    LAYERS,
    LimitInputs,
    PowerLimits,
    clamp,
    compute_limits,
    nameplate,
    next_setpoint,
    ramp,
)
from sitecontroller.drivers.bms.rack import RackValues, aggregate
from sitecontroller.params import BatteryParams, SafetyParams
from sitecontroller.process_image import BmsReading

SAFETY = SafetyParams()  # soc 0.05/0.10/0.95, cell 2.9..3.6 V taper 0.05, 0..50 °C derate 5
BATTERY = BatteryParams(capacity_wh=10_000, max_charge_w=4000, max_discharge_w=6000)
RATED_W = 5000.0  # nameplate: charge 4000 W (configured), discharge 5000 W (rating)

BMS = BmsReading(
    t=0.0, soc=0.5, soh=1.0, pack_v=50.0, pack_a=0.0,
    cell_v_min_v=3.30, cell_v_max_v=3.30, cell_v_avg_v=3.30,
    cell_t_min_c=25.0, cell_t_max_c=25.0,
    charge_limit_a=100.0, discharge_limit_a=120.0, contactor_closed=True,
)
NAN = float("nan")

# id, BMS overrides (None = no BMS), compute_limits kwargs, charge_w, discharge_w, reason fragment
ROWS = [
    ("nominal", {}, {}, 4000, 5000, None),
    ("no_bms", None, {}, 0, 0, "no BMS data: no charge or discharge"),
    ("bms_fault", {"faults": frozenset({"OVERCURRENT"})}, {}, 0, 0, "BMS fault OVERCURRENT: no power"),
    ("contactors_open", {"contactor_closed": False}, {}, 0, 0, "contactors open: no power"),
    ("pack_v_zero", {"pack_v": 0.0}, {}, 0, 0, "pack voltage 0.0 V invalid"),
    ("pack_v_nan", {"pack_v": NAN}, {}, 0, 0, "pack voltage nan V invalid"),
    ("bms_charge_a", {"charge_limit_a": 40.0}, {}, 2000, 5000, "BMS charge limit 40.0 A x 50.0 V = 2000 W"),
    ("bms_discharge_a", {"discharge_limit_a": 20.0}, {}, 4000, 1000, "BMS discharge limit 20.0 A x 50.0 V = 1000 W"),
    ("bms_negative_a", {"charge_limit_a": -5.0}, {}, 0, 5000, "BMS charge limit 0.0 A"),
    ("bms_nan_a", {"discharge_limit_a": NAN}, {}, 4000, 0, "BMS discharge limit 0.0 A"),
    ("bms_above_nameplate", {"charge_limit_a": 500.0}, {}, 4000, 5000, None),
    ("hot_near", {"cell_t_max_c": 47.5}, {}, 2000, 2500, "cell 47.5 °C near max 50.0 °C: power derated to 50%"),
    ("hot_at", {"cell_t_max_c": 50.0}, {}, 0, 0, "cell 50.0 °C at max 50.0 °C: no power"),
    ("hot_above", {"cell_t_max_c": 58.0}, {}, 0, 0, "cell 58.0 °C at max 50.0 °C: no power"),
    ("temp_nan", {"cell_t_max_c": NAN}, {}, 0, 0, "cell temperature unknown: no power"),
    ("cold_below_min", {"cell_t_min_c": -1.0}, {}, 0, 5000, "cell -1.0 °C at/below min 0.0 °C: no charge"),
    ("cold_near_min", {"cell_t_min_c": 2.5}, {}, 2000, 5000, "cell 2.5 °C near min 0.0 °C: charge derated to 50%"),
    ("cold_near_dis_min", {"cell_t_min_c": -17.5}, {}, 0, 2500,
     "cell -17.5 °C near discharge min -20.0 °C: discharge derated to 50%"),
    ("cold_below_dis_min", {"cell_t_min_c": -25.0}, {}, 0, 0,
     "cell -25.0 °C at/below discharge min -20.0 °C: no discharge"),
    ("cell_high_near", {"cell_v_max_v": 3.57}, {}, 2400, 5000, "cell 3.570 V near max 3.60 V: charge tapered to 60%"),
    ("cell_high_at", {"cell_v_max_v": 3.60}, {}, 0, 5000, "cell 3.600 V at max 3.60 V: no charge"),
    ("cell_high_above", {"cell_v_max_v": 3.75}, {}, 0, 5000, "cell 3.750 V at max 3.60 V: no charge"),
    ("cell_low_near", {"cell_v_min_v": 2.92}, {}, 4000, 2000, "cell 2.920 V near min 2.90 V: discharge tapered to 40%"),
    ("cell_low_at", {"cell_v_min_v": 2.90}, {}, 4000, 0, "cell 2.900 V at min 2.90 V: no discharge"),
    ("cell_v_nan", {"cell_v_min_v": NAN}, {}, 0, 0, "cell voltage unknown: no power"),
    ("soc_below_reserve", {"soc": 0.09}, {}, 4000, 0, "soc 0.09 at reserve 0.10: no discharge"),
    ("soc_at_reserve", {"soc": 0.10}, {}, 4000, 0, "soc 0.10 at reserve 0.10: no discharge"),
    ("soc_above_reserve", {"soc": 0.11}, {}, 4000, 5000, None),
    ("backup_uses_min", {"soc": 0.09}, {"backup": True}, 4000, 5000, None),
    ("backup_at_min", {"soc": 0.05}, {"backup": True}, 4000, 0, "soc 0.05 at min 0.05: no discharge"),
    ("soc_at_max", {"soc": 0.95}, {}, 0, 5000, "soc 0.95 at max 0.95: no charge"),
    ("soc_nan", {"soc": NAN}, {}, 0, 0, "soc unknown: no power"),
    ("soc_taper_low", {"soc": 0.12}, {"soc_taper": 0.05}, 4000, 2000,
     "soc 0.12 near reserve 0.10: discharge tapered to 40%"),
    ("soc_taper_high", {"soc": 0.93}, {"soc_taper": 0.05}, 1600, 5000, "soc 0.93 near max 0.95: charge tapered to 40%"),
    ("soc_taper_outside", {"soc": 0.5}, {"soc_taper": 0.05}, 4000, 5000, None),
    ("rating_binds", {}, {"rated_w": 3000}, 3000, 3000, None),
    # what the BMS allows (issue 6, 1.3): enable flags, force charge, voltage limits (pack 50 V = 15 x 3.33 V)
    ("charge_disabled", {"charge_enabled": False}, {}, 0, 5000, "BMS disables charging: no charge"),
    ("discharge_disabled", {"discharge_enabled": False}, {}, 4000, 0, "BMS disables discharging: no discharge"),
    ("force_charge", {"force_charge": True}, {}, 4000, 0, "BMS requests a force charge: no discharge"),
    ("force_charge_never_widens", {"force_charge": True, "charge_limit_a": 10.0}, {}, 500, 0, "BMS charge limit 10.0 A"),
    ("cvl_above", {"charge_v_max_v": 49.9}, {}, 0, 5000, "pack 50.00 V at BMS charge voltage limit 49.90 V: no charge"),
    ("cvl_at", {"charge_v_max_v": 50.0}, {}, 0, 5000, "at BMS charge voltage limit"),
    ("cvl_near", {"charge_v_max_v": 50.3}, {}, 1600, 5000,
     "pack 50.00 V near BMS charge voltage limit 50.30 V: charge tapered to 40%"),  # taper 15 x 0.05 V
    ("cvl_far", {"charge_v_max_v": 53.2}, {}, 4000, 5000, None),
    ("cvl_nan", {"charge_v_max_v": NAN}, {}, 0, 5000, "BMS charge voltage limit nan V invalid: no charge"),
    ("dvl_below", {"discharge_v_min_v": 50.5}, {}, 4000, 0, "at BMS discharge voltage limit 50.50 V: no discharge"),
    ("dvl_near", {"discharge_v_min_v": 49.7}, {}, 4000, 2000,
     "pack 50.00 V near BMS discharge voltage limit 49.70 V: discharge tapered to 40%"),
    ("dvl_nan", {"discharge_v_min_v": NAN}, {}, 4000, 0, "BMS discharge voltage limit nan V invalid: no discharge"),
    # racks (issue 6, 1.4): discharge looks at the emptiest rack, charge at the fullest
    ("rack_below_reserve", {"soc": 0.20, "soc_min": 0.05, "soc_max": 0.35}, {}, 4000, 0,
     "emptiest rack soc 0.05 at reserve 0.10: no discharge"),
    ("rack_above_max", {"soc": 0.80, "soc_min": 0.64, "soc_max": 0.96}, {}, 0, 5000,
     "fullest rack soc 0.96 at max 0.95: no charge"),
    ("rack_taper_low", {"soc": 0.30, "soc_min": 0.12, "soc_max": 0.48}, {"soc_taper": 0.05}, 4000, 2000,
     "emptiest rack soc 0.12 near reserve 0.10: discharge tapered to 40%"),
    ("racks_inside", {"soc": 0.50, "soc_min": 0.40, "soc_max": 0.60}, {}, 4000, 5000, None),
    ("rack_soc_nan", {"soc_min": NAN, "soc_max": 0.6}, {}, 0, 0, "soc unknown: no power"),
    ("rack_backup_min", {"soc": 0.30, "soc_min": 0.05, "soc_max": 0.55}, {"backup": True}, 4000, 0,
     "emptiest rack soc 0.05 at min 0.05: no discharge"),
    ("bms_binds_over_temp", {"charge_limit_a": 30.0, "cell_t_max_c": 47.5}, {}, 1500, 2500,
     "cell 47.5 °C near max 50.0 °C: power derated to 50%"),
]


@pytest.mark.parametrize("name,bms_over,kwargs,charge_w,discharge_w,fragment", ROWS, ids=[r[0] for r in ROWS])
def test_limits_table(name, bms_over, kwargs, charge_w, discharge_w, fragment):
    bms = None if bms_over is None else replace(BMS, **bms_over)
    kwargs = dict(kwargs)
    rated = kwargs.pop("rated_w", RATED_W)
    lim = compute_limits(bms, SAFETY, BATTERY, rated, **kwargs)
    assert lim.charge_w == pytest.approx(charge_w, abs=1e-6)
    assert lim.discharge_w == pytest.approx(discharge_w, abs=1e-6)
    if fragment is None:
        assert lim.reasons == ()
    else:
        assert any(fragment in r for r in lim.reasons), lim.reasons


def test_binding_reason_per_direction():
    lim = compute_limits(replace(BMS, charge_limit_a=30.0, cell_t_max_c=47.5), SAFETY, BATTERY, RATED_W)
    assert lim.charge_reason.startswith("BMS charge limit 30.0 A")  # BMS (1500 W) binds before the 50% derate
    assert lim.discharge_reason.startswith("cell 47.5 °C near max")
    assert lim.reasons == (lim.charge_reason, lim.discharge_reason)  # layer order: hardware first
    plain = compute_limits(BMS, SAFETY, BATTERY, RATED_W)
    assert (plain.charge_reason, plain.discharge_reason) == ("configured max charge 4000 W", "inverter rating 5000 W")


CLAMP_LIMITS = PowerLimits(2000.0, 3000.0, ("x",), "charge why", "discharge why")
# request_w -> applied_w, reason fragment (None = passed through)
CLAMP_ROWS = [
    (1000.0, 1000.0, None),
    (-1500.0, -1500.0, None),
    (3000.0, 3000.0, None),
    (4000.0, 3000.0, "discharge 4000 W requested, 3000 W allowed: discharge why"),
    (-2500.0, -2000.0, "charge 2500 W requested, 2000 W allowed: charge why"),
    (math.inf, 3000.0, "allowed: discharge why"),
    (-math.inf, -2000.0, "allowed: charge why"),
    (NAN, 0.0, "request is not a number"),
]


@pytest.mark.parametrize("request_w,applied_w,fragment", CLAMP_ROWS)
def test_clamp_table(request_w, applied_w, fragment):
    applied, why = clamp(request_w, CLAMP_LIMITS)
    assert applied == applied_w
    assert (why is None) if fragment is None else (fragment in why)


def test_clamp_zero_limit_quotes_the_protection_reason():
    lim = compute_limits(replace(BMS, soc=0.09), SAFETY, BATTERY, RATED_W)
    applied, why = clamp(1000.0, lim)
    assert applied == 0.0
    assert why == "discharge 1000 W requested, 0 W allowed: soc 0.09 at reserve 0.10: no discharge"


# previous_w, target_w, ramp_w_per_s, dt_s -> expected
RAMP_ROWS = [
    (0.0, 1000.0, 5000.0, 0.1, 500.0),
    (0.0, 300.0, 5000.0, 0.1, 300.0),
    (1000.0, -1000.0, 5000.0, 0.1, 500.0),
    (-200.0, -1200.0, 5000.0, 0.1, -700.0),
    (800.0, 0.0, 5000.0, 0.0, 800.0),
    (800.0, 0.0, 5000.0, -1.0, 800.0),
]


@pytest.mark.parametrize("previous_w,target_w,rate,dt_s,expected", RAMP_ROWS)
def test_ramp_table(previous_w, target_w, rate, dt_s, expected):
    assert ramp(previous_w, target_w, rate, dt_s) == pytest.approx(expected)


LIM = PowerLimits(2000.0, 3000.0, (), "charge why", "discharge why")
# previous_w, request_w, limits -> setpoint, reason fragment
SETPOINT_ROWS = [
    (0.0, 2000.0, LIM, 500.0, "ramp 5000 W/s: 500 W toward 2000 W"),
    (1000.0, 1000.0, LIM, 1000.0, None),
    (0.0, 9000.0, LIM, 500.0, "discharge 9000 W requested, 3000 W allowed"),
    (4000.0, 1000.0, PowerLimits(2000.0, 1000.0, (), "c", "limit fell"), 1000.0,
     "cut to 1000 W discharge at once: limit fell"),
    (-3000.0, 0.0, PowerLimits(0.0, 1000.0, (), "no charge now", "d"), 0.0, "cut to 0 W charge at once: no charge now"),
    (-3000.0, -500.0, PowerLimits(0.0, 1000.0, (), "no charge now", "d"), 0.0,
     "charge 500 W requested, 0 W allowed: no charge now"),
    (NAN, 100.0, LIM, 100.0, None),
]


@pytest.mark.parametrize("previous_w,request_w,limits,expected,fragment", SETPOINT_ROWS)
def test_next_setpoint_table(previous_w, request_w, limits, expected, fragment):
    out, why = next_setpoint(previous_w, request_w, limits, 5000.0, 0.1)
    assert out == pytest.approx(expected)
    assert (why is None) if fragment is None else (fragment in why), why


# --- property checks (hypothesis is not installed: a seeded loop) ----------------------------


def _random_case(rng: random.Random):
    soc_min = rng.uniform(0.0, 0.3)
    soc_reserve = rng.uniform(soc_min, 0.4)
    safety = SafetyParams(
        soc_min=soc_min, soc_reserve=soc_reserve, soc_max=rng.uniform(0.5, 1.0),
        cell_v_min_v=rng.uniform(2.5, 3.0), cell_v_max_v=rng.uniform(3.4, 3.7), cell_v_taper_v=rng.choice([0, 0.02, 0.1]),
        cell_t_min_c=rng.uniform(-10, 5), cell_t_max_c=rng.uniform(40, 60), cell_t_derate_c=rng.choice([0, 2, 10]),
    )
    battery = BatteryParams(capacity_wh=10_000, max_charge_w=rng.uniform(100, 8000), max_discharge_w=rng.uniform(100, 8000))
    bms = None if rng.random() < 0.05 else replace(
        BMS, soc=rng.uniform(0, 1), pack_v=rng.choice([rng.uniform(0, 60), 48.0]),
        cell_v_min_v=rng.uniform(2.4, 3.4), cell_v_max_v=rng.uniform(3.2, 3.8),
        cell_t_min_c=rng.uniform(-35, 30), cell_t_max_c=rng.uniform(10, 65),
        charge_limit_a=rng.uniform(-10, 200), discharge_limit_a=rng.uniform(-10, 200),
        contactor_closed=rng.random() > 0.05,
        faults=frozenset({"F"}) if rng.random() < 0.03 else frozenset(),
        charge_v_max_v=None if rng.random() < 0.3 else rng.uniform(40, 60),
        discharge_v_min_v=None if rng.random() < 0.3 else rng.uniform(35, 55),
        charge_enabled=rng.random() > 0.05, discharge_enabled=rng.random() > 0.05, force_charge=rng.random() < 0.05,
    )
    if bms is not None and rng.random() < 0.5:
        lo, hi = sorted((rng.uniform(0, 1), rng.uniform(0, 1)))
        bms = replace(bms, soc_min=min(lo, bms.soc), soc_max=max(hi, bms.soc))
    return LimitInputs(bms, safety, battery, rng.uniform(500, 10_000), rng.random() < 0.3, rng.choice([0, 0.05]))


def _fold(inp: LimitInputs) -> PowerLimits:
    lim = nameplate(inp)
    for _name, layer in LAYERS:
        lim = layer(inp, lim)
    return lim


def test_no_layer_ever_widens():
    rng = random.Random(20240603)
    for _ in range(3000):
        inp = _random_case(rng)
        lim = nameplate(inp)
        for name, layer in LAYERS:
            nxt = layer(inp, lim)
            assert nxt.charge_w <= lim.charge_w and nxt.discharge_w <= lim.discharge_w, (name, inp)
            assert len(nxt.reasons) >= len(lim.reasons)
            lim = nxt
        assert 0.0 <= lim.charge_w and 0.0 <= lim.discharge_w
        got = compute_limits(inp.bms, inp.safety, inp.battery, inp.rated_w, backup=inp.backup, soc_taper=inp.soc_taper)
        assert got == lim
        if inp.bms is not None and inp.bms.contactor_closed and not inp.bms.faults and inp.bms.pack_v > 0:
            assert lim.charge_w <= max(0.0, inp.bms.charge_limit_a) * inp.bms.pack_v + 1e-6
            assert lim.discharge_w <= max(0.0, inp.bms.discharge_limit_a) * inp.bms.pack_v + 1e-6


def test_worse_inputs_never_allow_more():
    rng = random.Random(7)
    worse = [  # (field, change, which limits may not grow)
        ("cell_t_max_c", +3.0, ("charge_w", "discharge_w")),
        ("cell_t_min_c", -3.0, ("charge_w", "discharge_w")),
        ("cell_v_max_v", +0.02, ("charge_w",)),
        ("cell_v_min_v", -0.02, ("discharge_w",)),
        ("soc", +0.03, ("charge_w",)),
        ("soc", -0.03, ("discharge_w",)),
        ("charge_limit_a", -20.0, ("charge_w",)),
        ("discharge_limit_a", -20.0, ("discharge_w",)),
        ("charge_v_max_v", -0.5, ("charge_w",)),
        ("discharge_v_min_v", +0.5, ("discharge_w",)),
        ("soc_max", +0.03, ("charge_w",)),
        ("soc_min", -0.03, ("discharge_w",)),
    ]
    for _ in range(2000):
        inp = _random_case(rng)
        if inp.bms is None:
            continue
        base = _fold(inp)
        for field, delta, sides in worse:
            if getattr(inp.bms, field) is None:
                continue
            bad = _fold(replace(inp, bms=replace(inp.bms, **{field: getattr(inp.bms, field) + delta})))
            for side in sides:
                assert getattr(bad, side) <= getattr(base, side) + 1e-6, (field, delta, inp)


def test_narrow_clamp_and_setpoint_never_leave_the_limits():
    rng = random.Random(99)
    odd = [NAN, -1.0, math.inf, 0.0]
    for _ in range(3000):
        lim = PowerLimits(rng.uniform(0, 5000), rng.uniform(0, 5000), (), "c", "d")
        n = lim.narrow("layer", charge_w=rng.choice(odd + [rng.uniform(0, 8000)]),
                       discharge_w=rng.choice(odd + [rng.uniform(0, 8000)]))
        assert n.charge_w <= lim.charge_w and n.discharge_w <= lim.discharge_w
        assert n.charge_w >= 0 and n.discharge_w >= 0
        request = rng.uniform(-9000, 9000)
        applied, why = clamp(request, n)
        assert -n.charge_w <= applied <= n.discharge_w
        assert abs(applied) <= abs(request) and applied * request >= 0
        assert (why is None) == (applied == request)
        prev = rng.uniform(-9000, 9000)
        out, _ = next_setpoint(prev, request, n, 5000.0, 0.1)
        assert -n.charge_w - 1e-9 <= out <= n.discharge_w + 1e-9
        at_bound = math.isclose(out, n.discharge_w) or math.isclose(out, -n.charge_w)
        assert abs(out - prev) <= 500.0 + 1e-6 or at_bound


def _random_rack(rng: random.Random) -> RackValues:
    return RackValues(
        t=0.0, pack_v=rng.uniform(45, 56), pack_a=rng.uniform(-50, 50), soc=rng.uniform(0, 1), soh=rng.uniform(0.7, 1),
        cell_v_min_v=3.2, cell_v_max_v=3.35, cell_v_avg_v=3.3, cell_t_min_c=20.0, cell_t_max_c=25.0,
        charge_limit_a=rng.uniform(0, 200), discharge_limit_a=rng.uniform(0, 200), contactor_closed=True,
        capacity_wh=rng.choice([None, 5000.0, 10_000.0]),
    )


def test_no_discharge_while_any_rack_is_at_or_below_the_floor_and_no_charge_while_any_is_full():
    """Seeded random racks (some offline with a last known SOC): the mean never decides, every rack does."""
    rng = random.Random(20261123)
    blocked = 0
    for _ in range(3000):
        n = rng.randint(1, 6)
        racks = {i: _random_rack(rng) for i in range(n)}
        offline_ids = {i for i in racks if rng.random() < 0.2}
        online = {i: v for i, v in racks.items() if i not in offline_ids}
        reading = aggregate(online, n, {i: racks[i] for i in offline_ids})
        if reading is None:
            continue
        backup = rng.random() < 0.3
        safety = SafetyParams(soc_min=rng.uniform(0.0, 0.1), soc_reserve=rng.uniform(0.1, 0.4),
                              soc_max=rng.uniform(0.6, 1.0))
        lim = compute_limits(reading, safety, BATTERY, RATED_W, backup=backup, soc_taper=rng.choice([0, 0.05]))
        floor = safety.soc_min if backup else safety.soc_reserve
        socs = [v.soc for v in racks.values()]
        if min(socs) <= floor:
            blocked += 1
            assert lim.discharge_w == 0.0, (socs, floor, lim)
        if max(socs) >= safety.soc_max:
            assert lim.charge_w == 0.0, (socs, safety.soc_max, lim)
    assert blocked > 500  # the check really ran on many blocked cases
