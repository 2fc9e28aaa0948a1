"""load_matching (peak shaving): rows on the pure function and the closed loop."""
import pytest

from mastercontroller.control import load_matching as lm, parse_params
from mastercontroller.state import ClusterState

from .closed_loop import Loop, sign_changes
from .mode_rows import image, nodes, run_rows

P = lm.Params(import_limit_w=5000, export_limit_w=1000, kp=0.5, ki=0.1)


def test_idle_inside_the_band():
    run_rows(lm, P, [(image(t, g), lambda r: r.target_w == 0.0) for t, g in enumerate((0, 4999, -999, 3000))])


def test_shaves_import_above_the_limit_and_absorbs_export_beyond_it():
    run_rows(lm, P, [
        (image(0, 6000.0), lambda r: r.target_w == pytest.approx(100.0)),   # bumpless from 0 W: I on the 1 kW excess
        (image(1, 6000.0), lambda r: r.target_w == pytest.approx(200.0)),
    ])
    run_rows(lm, P, [(image(0, -1500.0), lambda r: r.target_w == pytest.approx(-50.0))])


def test_returns_to_rest_without_making_a_new_peak():
    p = lm.Params(import_limit_w=5000, return_w_per_s=1000)
    ns = nodes(0.5, 0.5, p_w=1000.0)  # the battery discharges 2 kW after a peak
    r = run_rows(lm, p, [(image(0, 4600.0, ns=ns), lambda r: r.target_w == pytest.approx(1800.0))])  # half of 400 W room
    assert "peak shaving" in r[0].note


def test_recharge_between_peaks_within_the_import_room():
    p = lm.Params(import_limit_w=5000, recharge_w=3000, recharge_soc=0.9, return_w_per_s=10_000)
    run_rows(lm, p, [
        (image(0, 2000.0), lambda r: r.target_w == pytest.approx(-1500.0)),   # half of the 3 kW room
        (image(1, 3500.0), lambda r: r.target_w == pytest.approx(-2250.0)),
    ])
    full = nodes(0.95, 0.95)
    run_rows(lm, p, [(image(0, 2000.0, ns=full), lambda r: r.target_w == 0.0)])  # at the recharge SOC: rest is 0 W


def test_reserve_and_zero_limits():
    run_rows(lm, P, [(image(t, 9000.0, ns=nodes(0.05, 0.05)), lambda r: r.target_w == 0.0) for t in range(5)])
    run_rows(lm, P, [(image(t, 9000.0, ns=nodes(0.5, 0.5, cap_w=0.0)), lambda r: r.target_w == 0.0) for t in range(5)])


def test_meter_stale_ramps_to_zero():
    p = lm.Params(import_limit_w=0, export_limit_w=0.1, stale_hold_s=0, stale_ramp_w_per_s=100, kp=0, ki=1)
    r = run_rows(lm, p, [(image(0, 300.0), lambda r: r.target_w == 300.0),
                         (image(1, None), lambda r: r.target_w == 300.0),
                         (image(2, None), lambda r: r.target_w == 200.0)])
    assert "meter stale" in r[-1].note


def test_bad_parameters():
    with pytest.raises(ValueError, match="load_matching: import_limit_w: Field required"):
        parse_params("load_matching", {})
    with pytest.raises(ValueError, match="cannot both be 0"):
        parse_params("load_matching", {"import_limit_w": 0, "export_limit_w": 0})
    with pytest.raises(ValueError, match="recharge_soc: Input should be less than or equal to 1"):
        parse_params("load_matching", {"import_limit_w": 1000, "recharge_soc": 1.5})


@pytest.mark.parametrize("meter_s", [0.1, 1.0, 5.0])
def test_peak_held_at_the_limit_without_oscillation(meter_s):
    loop = Loop(lambda t: 3000.0 if t < 20 else 9000.0, meter_s=meter_s, response_s=2.0)
    samples = loop.run(ClusterState(mode="load_matching", mode_params={"import_limit_w": 5000}), 300.0)
    excess = [g - 5000.0 for t, g, _ in samples if t >= 20]
    assert sign_changes(excess, band_w=100.0) <= 1
    assert all(abs(g - 5000.0) <= 100.0 for t, g, _ in samples if t >= 240)
