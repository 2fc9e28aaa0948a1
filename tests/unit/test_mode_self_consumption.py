"""self_consumption: rows on the pure function, then the closed loop with slow meters."""
import pytest

from mastercontroller.control import parse_params, self_consumption as sc
from mastercontroller.state import ClusterState

from .closed_loop import Loop, sign_changes
from .mode_rows import image, nodes, run_rows

P = sc.Params(kp=0.5, ki=0.1, deadband_w=0)


def test_import_raises_discharge_export_raises_charge():
    r = run_rows(sc, P, [
        (image(0, 0.0), lambda r: r.target_w == 0),
        (image(1, 1000.0), lambda r: r.target_w == pytest.approx(500 + 100)),   # p 500 + i 100
        (image(2, 1000.0), lambda r: r.target_w == pytest.approx(500 + 200)),
        (image(3, -400.0), lambda r: r.target_w < 200),
    ])
    assert "grid 1000 W" in r[1].note


def test_bumpless_start_from_the_measured_power():
    img = image(0, 300.0, ns=nodes(0.5, 0.5, p_w=1500.0))
    memory = sc.start(img, P)
    # both nodes give 1500 W now: the first output moves from there by the I term only (0.1 * 300 W * 1 s)
    assert sc.step(img, P, memory).target_w == pytest.approx(3000.0 + 30.0)


def test_acts_only_on_new_meter_samples():
    run_rows(sc, P, [
        (image(0, 1000.0, grid_t=0.0), lambda r: r.target_w == pytest.approx(100.0)),  # bumpless: from 0 W, I only
        (image(1, 1000.0, grid_t=0.0), lambda r: r.target_w == pytest.approx(100.0)),  # held sample: no integration
        (image(2, 1000.0, grid_t=0.0), lambda r: r.target_w == pytest.approx(100.0)),
        (image(3, 1000.0, grid_t=3.0), lambda r: r.target_w == pytest.approx(400.0)),  # dt = 3 s since the last
    ])


def test_deadband_stops_hunting():
    p = sc.Params(deadband_w=50, kp=0.5, ki=0.1)
    run_rows(sc, p, [(image(t, 40.0 if t % 2 else -40.0), lambda r: r.target_w == 0) for t in range(10)])


def test_reserve_soc_forbids_discharge_of_that_node():
    ns = nodes(0.10, 0.6)
    rows = [(image(t, 20_000.0, ns=ns), lambda r: r.target_w <= 5000.0) for t in range(5)]
    r = run_rows(sc, P, rows)
    assert r[-1].target_w == 5000.0  # saturated at n2's 5 kW: n1 keeps its reserve
    assert r[-1].node_limits["n1"] == (5000.0, 0.0) and r[-1].node_limits["n2"] == (5000.0, 5000.0)


def test_limits_zero_means_zero_and_no_windup():
    empty = nodes(0.5, 0.5, cap_w=0.0)
    rows = [(image(t, 3000.0, ns=empty), lambda r: r.target_w == 0.0) for t in range(100)]
    rows += [(image(100, -100.0), lambda r: r.target_w < 0)]  # capacity back, export: charges at once
    run_rows(sc, P, rows)


def test_meter_stale_holds_then_ramps_to_zero_then_resumes_bumplessly():
    p = sc.Params(kp=0.5, ki=0.1, deadband_w=0, stale_hold_s=3, stale_ramp_w_per_s=100)
    rows = [(image(0, 2000.0), lambda r: r.target_w == pytest.approx(200.0)),
            (image(1, 2000.0), lambda r: r.target_w == pytest.approx(400.0))]   # I term: +200 W per s
    rows += [(image(t, None), lambda r: r.target_w == pytest.approx(400.0) and "holding" in r.note) for t in (2, 3, 4, 5)]
    rows += [(image(6, None), lambda r: r.target_w == pytest.approx(300.0) and "ramping" in r.note),
             (image(7, None), lambda r: r.target_w == pytest.approx(200.0)),
             (image(8, 0.0), lambda r: r.target_w == pytest.approx(200.0))]  # back: continues from 200 W
    run_rows(sc, p, rows)


def test_bad_parameters_rejected_with_the_field():
    with pytest.raises(ValueError, match=r"self_consumption: deadband_w: .*greater than or equal to 0"):
        parse_params("self_consumption", {"deadband_w": -1})
    with pytest.raises(ValueError, match=r"self_consumption: gain: Extra inputs"):
        parse_params("self_consumption", {"gain": 1})
    with pytest.raises(ValueError, match="unknown mode 'selfconsumption'"):
        parse_params("selfconsumption", {})


# --- stability: the closed loop on the simulated clock ------------------------------------------
def _step_load(t):
    return 2000.0 if t < 20 else 7000.0 if t < 200 else -3000.0


@pytest.mark.parametrize("meter_s", [0.1, 1.0, 5.0])
@pytest.mark.parametrize("response_s", [1.0, 2.0])
def test_no_oscillation_with_slow_meters_and_inverter_lag(meter_s, response_s):
    loop = Loop(_step_load, meter_s=meter_s, response_s=response_s)
    samples = loop.run(ClusterState(mode="self_consumption"), 400.0)
    grid = [g for _, g, _ in samples]
    # one sign change is the load turning into export at t=200; anything more is oscillation
    assert sign_changes(grid, band_w=100.0) <= 1
    # settled: every sample of the last 60 s before each change within the band
    settle_band = 150.0 if meter_s >= 5 else 50.0
    assert all(abs(g) <= settle_band for t, g, _ in samples if 140 <= t < 200), max(
        abs(g) for t, g, _ in samples if 140 <= t < 200)
    assert all(abs(g) <= settle_band for t, g, _ in samples if 340 <= t < 400)
    # never overshoots into the other direction by more than a fraction of the step
    assert min(g for t, g, _ in samples if 20 <= t < 200) > -0.2 * 5000
