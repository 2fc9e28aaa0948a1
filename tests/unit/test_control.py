"""The node's pure decisions, one row per cycle: inputs -> expected commands."""
from dataclasses import replace

import pytest

from sitecontroller.control import ControlInput, SetpointReading, arbitrate, decide, protection
from sitecontroller.process_image import BmsReading, InverterReading, MeterReading, ProcessImage

BMS = BmsReading(
    t=10.0, soc=0.6, soh=0.98, pack_v=52.0, pack_a=0.0, cell_v_min_v=3.28, cell_v_max_v=3.29, cell_v_avg_v=3.285,
    cell_t_min_c=22.0, cell_t_max_c=24.0, charge_limit_a=200.0, discharge_limit_a=200.0, contactor_closed=True,
)
INV = InverterReading(t=10.0, p_w=0.0, running=True, rated_w=5000)
METER = MeterReading(t=10.0, p_w=800.0)


def image(bms=BMS, inv=INV, meter=METER, stale=(), setpoints=None):
    return ProcessImage(t=10.0, wall=0.0, bms=bms, inverter=inv, meter=meter, stale=frozenset(stale),
                        setpoints=setpoints or {})


def reading(source, p_w):
    return SetpointReading(source, p_w, t=9.0, valid_until=15.0, origin="test")


def control_input(params, img, state="run", request_w=None, prev=0.0, **kw):
    if request_w is not None:
        img = replace(img, setpoints={"local": reading("local", request_w)})
    defaults = dict(mode="local", critical=None, dt_s=0.1, rated_w=5000)
    return ControlInput(image=img, state=state, prev_base_w=prev, params=params, **{**defaults, **kw})


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
    d = decide(control_input(params, image(bms, inv), state, request_w, prev))
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


# --- a critical error wins over every state and every stop phase ------------------------------
@pytest.mark.parametrize("state", ["init", "run", "sleep", "maintenance", "error", "restart", "reboot"])
@pytest.mark.parametrize("stop_phase", [None, "ramp", "off", "open"])
def test_a_critical_error_means_zero_inverter_off_contactors_open_in_every_state(make_params, state, stop_phase):
    d = decide(control_input(make_params(), image(), state, request_w=3000.0, prev=3000.0,
                             critical="critical error listed: ESTOP", stop_phase=stop_phase, stop_ramp_w_per_s=3750))
    assert (d.setpoint_w, d.inverter_run, d.contactor_closed, d.balancing) == (0.0, False, False, False)
    assert "ESTOP" in d.note


def test_an_orderly_stop_ramps_then_stops_the_inverter_then_opens(make_params):
    p = make_params()
    ramp = decide(control_input(p, image(), "restart", prev=3000.0, stop_phase="ramp", stop_ramp_w_per_s=3750))
    assert (ramp.setpoint_w, ramp.inverter_run, ramp.contactor_closed) == (2625.0, True, True)
    off = decide(control_input(p, image(), "restart", prev=0.0, stop_phase="off"))
    assert (off.setpoint_w, off.inverter_run, off.contactor_closed) == (0.0, False, True)
    opened = decide(control_input(p, image(), "restart", prev=0.0, stop_phase="open"))
    assert (opened.setpoint_w, opened.inverter_run, opened.contactor_closed) == (0.0, False, False)


def test_the_ramp_uses_the_cycle_period_it_is_given(make_params):
    d = decide(control_input(make_params(), image(), request_w=3000.0, prev=0.0, dt_s=0.1))
    assert d.setpoint_w == pytest.approx(1000.0)  # 10 kW/s x 0.1 s, whatever time passed


# --- the arbiter: mode -> fresh sources -> owner --------------------------------------------
ARBITER_ROWS = [
    ("local", {}, None, 0.0),
    ("local", {"local": 1000.0}, "local", 1000.0),
    ("local", {"scada": 2000.0}, "scada", 2000.0),
    ("local", {"cloud": -500.0, "scada": 2000.0}, "scada", 2000.0),
    ("local", {"local": 1000.0, "scada": 2000.0, "cloud": 3000.0}, "local", 1000.0),
    ("local", {"cluster": 4000.0}, "cluster", 4000.0),  # the node's own cluster-of-one mode (solo.py) ...
    ("local", {"cluster": 4000.0, "cloud": -500.0}, "cloud", -500.0),  # ... below every person's request
    ("cluster", {"cluster": 4000.0, "local": 1000.0}, "cluster", 4000.0),
    ("cluster", {"local": 1000.0, "scada": 2000.0}, None, 0.0),  # no fresh dispatch: 0 W
]


@pytest.mark.parametrize("mode,fresh,owner,p_w", ARBITER_ROWS)
def test_arbiter(mode, fresh, owner, p_w):
    choice = arbitrate(mode, {name: reading(name, w) for name, w in fresh.items()})
    assert (choice.source, choice.p_w) == (owner, p_w)


def test_decide_reports_the_source_that_owns_the_setpoint(make_params):
    img = image(setpoints={"scada": reading("scada", 2000.0), "cloud": reading("cloud", 500.0)})
    d = decide(control_input(make_params(), img, prev=2000.0))
    assert (d.source, d.setpoint_w, d.note) == ("scada", 2000.0, "following scada")


# --- reactive power: what the rating leaves beside P; grid forming: backup hardware, power branch -----
Q_ROWS = [
    # state, P asked (prev = P), Q asked -> P, Q
    ("run", 3000.0, 1000.0, 3000.0, 1000.0),
    ("run", 3000.0, -6000.0, 3000.0, -4000.0),  # sqrt(5000² - 3000²)
    ("run", 5000.0, 2000.0, 5000.0, 0.0),  # at the rating: no room
    ("run", 0.0, 7000.0, 0.0, 5000.0),
    ("run", 2000.0, float("nan"), 2000.0, 0.0),
    ("sleep", 2000.0, 1000.0, 0.0, 0.0),  # no power exchange: no reactive power either
]


@pytest.mark.parametrize("state, p_w, q_asked, p_expected, q_expected", Q_ROWS)
def test_reactive_power_gets_what_the_rating_leaves(make_params, state, p_w, q_asked, p_expected, q_expected):
    ask = replace(reading("local", p_w), meta={"q_var": q_asked})
    d = decide(control_input(make_params(), image(setpoints={"local": ask}), state=state, prev=p_w))
    assert (d.setpoint_w, d.q_var) == pytest.approx((p_expected, q_expected))


@pytest.mark.parametrize("backup, state, inv, stop, critical, forming", [
    (True, "run", INV, None, None, True),
    (True, "run", replace(INV, island=True), None, None, True),  # on a lost grid too: it carries the site
    (False, "run", replace(INV, island=True), None, None, False),  # no backup hardware
    (True, "sleep", INV, None, None, False),
    (True, "run", None, None, None, False),  # stale inverter data
    (True, "run", INV, "ramp", None, False),  # an orderly stop
    (True, "run", INV, None, "ESTOP", False),
])
def test_grid_forming_only_with_backup_hardware_in_the_power_branch(make_params, backup, state, inv, stop,
                                                                     critical, forming):
    params = make_params(features={"BACKUP": backup})
    d = decide(control_input(params, image(inv=inv), state=state, stop_phase=stop, critical=critical, prev=100.0))
    assert d.grid_forming is forming, d
    assert ("forms it (backup)" in d.note) is (forming and inv.island is True)


# --- additive responses: after the ramp, not ramp-limited, clamped to the window ------------
class Step:
    """A test response: adds a fixed term (as a frequency response would at a step)."""

    def __init__(self, name, w):
        self.name, self.w = name, w

    def term_w(self, image):
        return self.w


RESPONSE_ROWS = [
    # request, prev base, responses -> setpoint, base
    (0.0, 0.0, [Step("ffr", 4000.0)], 4000.0, 0.0),  # full response in one cycle (no ramp)
    (3000.0, 3000.0, [Step("ffr", 4000.0)], 5000.0, 3000.0),  # clamped to the 5 kW rating
    (3000.0, 0.0, [Step("ffr", 500.0)], 1500.0, 1000.0),  # the base still ramps
    (-2000.0, -2000.0, [Step("fcr", 1000.0), Step("droop", -4000.0)], -5000.0, -2000.0),
]


@pytest.mark.parametrize("request_w,prev,responses,setpoint,base", RESPONSE_ROWS)
def test_additive_responses(make_params, request_w, prev, responses, setpoint, base):
    d = decide(control_input(make_params(), image(), request_w=request_w, prev=prev, responses=tuple(responses)))
    assert (d.setpoint_w, d.base_w) == (pytest.approx(setpoint), pytest.approx(base))
    assert -d.limits.charge_w <= d.setpoint_w <= d.limits.discharge_w


def test_a_response_never_leaves_the_reserve_window(make_params):
    d = decide(control_input(make_params(), image(bms=replace(BMS, soc=0.10)), responses=(Step("ffr", 4000.0),)))
    assert d.setpoint_w == 0.0 and "ffr" in d.note


# --- plausibility: a bad number is never a wide limit ----------------------------------------
@pytest.mark.parametrize("field,value", [
    ("soc", 1.01), ("soc", -0.01), ("soh", 1.5), ("charge_limit_a", -3276.8), ("discharge_limit_a", float("nan")),
    ("cell_v_max_v", 0.0), ("cell_v_min_v", 12.0), ("pack_v", -1.0), ("pack_a", float("inf")),
    ("soc_min", -0.2), ("soc_max", 1.2), ("charge_v_max_v", float("nan")), ("discharge_v_min_v", float("-inf")),
    ("cell_v_min_v", 3.5),  # above the highest cell (3.29 V)
])
def test_impossible_bms_values_are_invalid_data(make_params, field, value):
    errs = protection(image(bms=replace(BMS, **{field: value})), make_params().safety, grace_over=True)
    assert "BMS_DATA_INVALID" in errs and field in errs["BMS_DATA_INVALID"]
