"""The node's pure decisions, one row per cycle: inputs -> expected commands."""
from dataclasses import replace

import pytest

from sitecontroller.control import decide, protection
from sitecontroller.process_image import BmsReading, InverterReading, MeterReading, ProcessImage

BMS = BmsReading(
    t=10.0, soc=0.6, soh=0.98, pack_v=52.0, pack_a=0.0, cell_v_min_v=3.28, cell_v_max_v=3.29, cell_v_avg_v=3.285,
    cell_t_min_c=22.0, cell_t_max_c=24.0, charge_limit_a=200.0, discharge_limit_a=200.0, contactor_closed=True,
)
INV = InverterReading(t=10.0, p_w=0.0, running=True, rated_w=5000)
METER = MeterReading(t=10.0, p_w=800.0)


def image(bms=BMS, inv=INV, meter=METER, stale=()):
    return ProcessImage(t=10.0, wall=0.0, bms=bms, inverter=inv, meter=meter, stale=frozenset(stale))


# state, bms, inverter, request_w, prev_w -> setpoint_w, inverter_run, contactor, note fragment
ROWS = [
    ("run", BMS, INV, None, 0.0, 0.0, True, True, "idle"),
    ("run", BMS, INV, 3000.0, 0.0, 1000.0, True, True, "ramp"),  # 10 kW/s x 0.1 s
    ("run", BMS, INV, 3000.0, 2500.0, 3000.0, True, True, "following"),
    ("run", BMS, INV, -3000.0, -2500.0, -3000.0, True, True, "following"),
    ("run", BMS, INV, 9000.0, 5000.0, 5000.0, True, True, "allowed"),  # clamped to the rating
    ("run", replace(BMS, soc=0.10), INV, 2000.0, 0.0, 0.0, True, True, "reserve"),  # at reserve: no discharge
    ("run", replace(BMS, soc=0.10), INV, -2000.0, -1500.0, -2000.0, True, True, "following"),  # charging is fine
    ("run", replace(BMS, discharge_limit_a=20.0), INV, 3000.0, 3000.0, 1040.0, True, True, "BMS"),  # cut at once
    ("run", None, INV, 3000.0, 3000.0, 0.0, False, True, "no fresh BMS"),
    ("run", BMS, None, 3000.0, 3000.0, 0.0, False, True, "no fresh inverter"),
    ("run", BMS, replace(INV, faults=frozenset({"GRID_FAULT"})), 3000.0, 3000.0, 0.0, False, True, "inverter reports a fault"),
    ("sleep", BMS, INV, 3000.0, 3000.0, 0.0, False, True, "state sleep"),
    ("maintenance", BMS, INV, 3000.0, 0.0, 0.0, False, True, "state maintenance"),
    ("init", BMS, INV, None, 0.0, 0.0, False, True, "state init"),
    ("error", BMS, INV, 3000.0, 3000.0, 0.0, False, False, "state error"),
]


@pytest.mark.parametrize("state,bms,inv,request_w,prev,setpoint,run,contactor,note", ROWS)
def test_decide(make_params, state, bms, inv, request_w, prev, setpoint, run, contactor, note):
    params = make_params()
    d = decide(image(bms, inv), state, request_w, prev, 0.1, params, rated_w=5000)
    assert d.setpoint_w == pytest.approx(setpoint)
    assert (d.inverter_run, d.contactor_closed) == (run, contactor)
    assert note.lower() in d.note.lower()
    assert -d.limits.charge_w <= d.setpoint_w <= d.limits.discharge_w


# image, grace_over -> expected error ids
PROTECTION_ROWS = [
    (image(), True, set()),
    (image(bms=None, inv=None, meter=None), False, set()),  # start-up: nothing yet, not an error yet
    (image(bms=None, inv=None, meter=None), True, {"BMS_STALE", "INV_STALE", "METER_STALE"}),
    (image(bms=None, stale={"bms"}), False, {"BMS_STALE"}),  # was there and went stale: error at once
    (image(bms=replace(BMS, cell_v_max_v=3.65, cell_v_max_idx=7)), True, {"CELL_OVERVOLTAGE"}),
    (image(bms=replace(BMS, cell_v_min_v=2.80)), True, {"CELL_UNDERVOLTAGE"}),
    (image(bms=replace(BMS, cell_t_max_c=51.0)), True, {"CELL_OVERTEMP"}),
    (image(bms=replace(BMS, cell_t_min_c=-19.0)), True, set()),  # the limiter still allows cold discharge here
    (image(bms=replace(BMS, cell_t_min_c=-21.0)), True, {"CELL_UNDERTEMP"}),  # below the limiter's cold bound
    (image(bms=replace(BMS, cell_t_max_c=float("nan"))), True, {"BMS_DATA_INVALID"}),
    (image(bms=replace(BMS, faults=frozenset({"cell_ov"}))), True, {"BMS_FAULT"}),
    (image(bms=replace(BMS, alarms=frozenset({"high_temp"}))), True, {"BMS_ALARM"}),
    (image(inv=replace(INV, faults=frozenset({"GRID_FAULT"}))), True, set()),  # the driver reports INV_FAULT
]


def test_uncontrolled_power_is_critical(make_params):
    errs = protection(image(inv=None, bms=replace(BMS, pack_a=60.0)), make_params().safety, grace_over=True,
                      uncontrolled_s=5.2)
    assert set(errs) == {"INV_STALE", "UNCONTROLLED_POWER"}
    assert "3120 W" in errs["UNCONTROLLED_POWER"]


@pytest.mark.parametrize("img,grace_over,expected", PROTECTION_ROWS)
def test_protection(make_params, img, grace_over, expected):
    assert set(protection(img, make_params().safety, grace_over=grace_over)) == expected


def test_protection_texts_name_the_values(make_params):
    errs = protection(image(bms=replace(BMS, cell_v_max_v=3.65, cell_v_max_idx=7)), make_params().safety, grace_over=True)
    assert errs["CELL_OVERVOLTAGE"] == "cell #7 at 3.650 V > max 3.6 V"
