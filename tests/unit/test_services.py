"""Grid-service controllers at the node, one row per cycle: (t, frequency) -> fraction of the capacity."""
import pytest

from sitecontroller.control.services import SERVICES, frequency_hz, parse_params
from sitecontroller.control.services.allocation import GridServices
from sitecontroller.process_image import InverterReading, MeterReading, ProcessImage


def run(name, params, rows):
    """rows: (t, freq_hz or None, expected fraction)."""
    c = SERVICES[name].Controller(parse_params(name, params))
    for t, f, want in rows:
        got = c.step(t, f)
        assert got == pytest.approx(want, abs=1e-9), (name, t, f, got, want)
    return c


def test_ffr_full_at_once_held_released_at_20_percent_per_s_then_blocked():
    c = run("ffr", {"activation_hz": 49.5, "support_s": 5, "blocking_s": 60, "recovery_fraction": 0}, [
        (0.0, 50.0, 0.0),
        (1.0, 49.51, 0.0),    # above the level: nothing
        (2.0, 49.50, 1.0),    # at the level: full power in this cycle
        (3.0, 50.00, 1.0),    # the frequency is back: the support goes on
        (6.9, 50.0, 1.0),
        (7.0, 50.0, 1.0),     # 5 s of support: the release begins
        (8.0, 50.0, 0.8),     # 20 % of the capacity per second
        (10.0, 50.0, 0.4),
        (12.0, 50.0, 0.0),
        (13.0, 49.4, 0.0),    # blocked: no new activation within 60 s of the last
        (61.9, 49.4, 0.0),
        (62.0, 49.4, 0.0),    # blocking over, but the frequency is still low: not re-armed
        (63.0, 49.9, 0.0),    # back above the level: re-armed
        (64.0, 49.45, 1.0),   # a new event
    ])
    assert c.phase == "support"


def test_ffr_recovers_the_energy_it_delivered_at_a_quarter_of_the_capacity_in_the_normal_band_only():
    c = SERVICES["ffr"].Controller(parse_params("ffr", {"activation_hz": 49.5, "support_s": 5}))
    out, t, dt = [], 0.0, 0.1
    freq = lambda t: 49.5 if t < 1.0 else (49.85 if t < 20.0 else 50.0)  # noqa: E731  (low, then normal)
    while t < 120.0:
        out.append((t, c.step(t, freq(t))))
        t = round(t + dt, 6)
    delivered = sum(w * dt for _, w in out if w > 0)
    recovered = -sum(w * dt for _, w in out if w < 0)
    assert delivered == pytest.approx(5.0 + 2.5, abs=0.15)  # 5 s full, then a 5 s ramp down
    assert recovered == pytest.approx(delivered, abs=1e-6)  # all of it, no more
    assert min(w for _, w in out) == pytest.approx(-0.25)
    assert all(w >= 0 for s, w in out if freq(s) < 49.9)  # never charging below the normal band


def test_ffr_no_measurement_no_activation_but_an_activation_runs_its_course():
    run("ffr", {"activation_hz": 49.7}, [(0.0, None, 0.0), (0.1, 49.6, 1.0), (0.2, None, 1.0), (4.0, None, 1.0)])


@pytest.mark.parametrize("name, rows", [
    ("fcr_d_up", [(0, 50.0, 0.0), (1, 49.9, 0.0), (2, 49.8, 0.25), (3, 49.7, 0.5), (4, 49.5, 1.0), (5, 49.0, 1.0),
                  (6, 50.2, 0.0), (7, None, 0.0)]),
    ("fcr_d_down", [(0, 50.0, 0.0), (1, 50.1, 0.0), (2, 50.2, -0.25), (3, 50.5, -1.0), (4, 51.0, -1.0),
                    (5, 49.5, 0.0)]),
    ("fcr_n", [(0, 50.0, 0.0), (1, 49.95, 0.5), (2, 49.9, 1.0), (3, 49.5, 1.0), (4, 50.05, -0.5), (5, 50.2, -1.0)]),
    ("droop", [(0, 50.0, 0.0), (1, 49.8, 0.0), (2, 49.65, 0.5), (3, 49.5, 1.0), (4, 49.0, 1.0), (5, 50.2, 0.0),
               (6, 50.35, -0.5), (7, 50.6, -1.0)]),
])
def test_linear_curves_at_their_thresholds(name, rows):
    run(name, {}, rows)


def test_fcr_n_deadband_and_a_filter():
    run("fcr_n", {"deadband_hz": 0.01}, [(0, 50.005, 0.0), (1, 49.995, 0.0), (2, 49.95, 0.5)])
    # a 2 s filter: the step to full is reached by first-order steps (dt / filter_s of the gap each cycle)
    run("fcr_d_up", {"filter_s": 2.0}, [(0, 50.0, 0.0), (1, 49.5, 0.5), (2, 49.5, 0.75), (3, 49.5, 0.875)])


@pytest.mark.parametrize("name, params, says", [
    ("droop", {"f1_hz": 49.9, "f2_hz": 49.8}, "thresholds out of order: need f1 < f2 < f3 < f4"),
    ("fcr_d_up", {"start_hz": 49.4}, "need full_hz < start_hz"),
    ("fcr_d_down", {"full_hz": 50.0}, "need start_hz < full_hz"),
    ("ffr", {"activation_hz": 49.8}, "activation_hz: Input should be 49.7, 49.6 or 49.5"),
    ("ffr", {"support_s": 10}, "support_s: Input should be 5 or 30"),
    ("fcr_n", {"gain": 2}, "gain: Extra inputs are not permitted"),
    ("ffrr", {}, "unknown service 'ffrr'"),
])
def test_bad_parameters_are_refused_naming_the_field(name, params, says):
    with pytest.raises(ValueError, match=says):
        parse_params(name, params)


def test_frequency_from_the_newest_reading_that_has_one():
    inv, meter = InverterReading(t=1.0, p_w=0, freq_hz=49.8), MeterReading(t=0.9, p_w=0, freq_hz=50.1)
    assert frequency_hz(ProcessImage(0, 0, None, inv, meter)) == 49.8
    assert frequency_hz(ProcessImage(0, 0, None, inv, MeterReading(t=1.1, p_w=0, freq_hz=50.1))) == 50.1
    assert frequency_hz(ProcessImage(0, 0, None, None, meter)) == 50.1
    assert frequency_hz(ProcessImage(0, 0, None, InverterReading(t=0, p_w=0), None)) is None


def test_an_allocation_holds_until_it_expires_a_newer_term_replaces_it_and_an_event_keeps_its_state():
    gs = GridServices()
    gs.allocate({"ffr": 3000.0, "fcr_n": 0.0}, {"ffr": {"activation_hz": 49.5}}, term=4, now=0.0, valid_s=300)
    (ffr,) = gs.responses(1.0)
    img = ProcessImage(1.0, 0, None, InverterReading(t=1, p_w=0, freq_hz=49.4), None)
    assert ffr.term_w(img) == 3000.0
    gs.allocate({"ffr": 2000.0}, {"ffr": {"activation_hz": 49.5}}, term=3, now=2.0, valid_s=300)  # older: ignored
    assert gs.responses(2.0)[0].capacity_w == 3000.0
    gs.allocate({"ffr": 2000.0}, {"ffr": {"activation_hz": 49.5}}, term=5, now=3.0, valid_s=300)  # same service
    (again,) = gs.responses(3.0)
    assert again is ffr and again.controller.phase == "support"  # the event goes on, at the new capacity
    assert gs.responses(302.9) and gs.responses(303.0) == ()  # 300 s after it was last heard: released
    gs.allocate({"droop": 1000.0}, {"droop": {"f1_hz": 49.9, "f2_hz": 49.8}}, term=6, now=400.0, valid_s=300)
    assert gs.responses(400.0) == () and "f1 < f2" in gs.status(400.0)["rejected"]["droop"]


def test_aem_alert_on_the_moving_average_and_energy_management_by_soc():
    c = SERVICES["aem"].Controller(parse_params("aem", {"window_s": 10, "alert_band_hz": 0.05}))
    rows = [(t, 49.9, 0.2) for t in range(0, 9)]  # a sustained low frequency, but not yet a whole window
    assert [c.step(t, f, soc) for t, f, soc in rows] == [0.0] * 9 and not c.alert
    assert c.step(10, 49.9, 0.2) == -1.0 and c.alert  # alerted, SOC below soc_low: charge at the AEM capacity
    assert c.step(11, 49.9, 0.5) == 0.0 and c.alert  # SOC inside its band: nothing
    assert c.step(12, 49.9, 0.8) == 1.0  # above soc_high: discharge
    for t in range(13, 30):
        c.step(t, 50.0, 0.8)
    assert not c.alert and c.step(30, 50.0, 0.8) == 0.0  # the mean is back: normal state


def test_aem_is_reported_as_an_alarm_event_and_holds_no_energy():
    gs = GridServices()
    gs.allocate({"aem": 1000.0}, {"aem": {"window_s": 10}}, term=1, now=0.0, valid_s=300)
    (r,) = gs.responses(0.0)
    for t in range(12):
        r.term_w(ProcessImage(float(t), 0, None, InverterReading(t=t, p_w=0, freq_hz=49.9), None))
    problems = gs.problems(12.0, soc=0.5, usable_wh=10_000, soc_floor=0.1, soc_ceil=0.95)
    assert "GRID_ALERT" in problems and "49.900 Hz" in problems["GRID_ALERT"] and "RESERVE_ENDURANCE" not in problems
