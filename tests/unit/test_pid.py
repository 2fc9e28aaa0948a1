"""PID rows: one row per step (inputs -> expected output)."""
import math

import pytest

from mastercontroller import pid

P = pid.Gains(kp=0.5, ki=0.1)


def run(gains, rows, state=pid.State()):
    """rows: (setpoint, measurement, dt, lo, hi, expected output)."""
    for i, (sp, meas, dt, lo, hi, want) in enumerate(rows):
        out, state = pid.step(gains, state, sp, meas, dt, lo, hi)
        assert out == pytest.approx(want, abs=1e-9), f"row {i}"
    return state


def test_step_response_p_and_i():
    run(P, [
        (10.0, 0.0, 1.0, -100, 100, 5.0 + 1.0),    # p = 5, i = 1
        (10.0, 0.0, 1.0, -100, 100, 5.0 + 2.0),    # i accumulates
        (10.0, 10.0, 1.0, -100, 100, 2.0),         # error gone: only the integral is left
        (10.0, 10.0, 0.0, -100, 100, 2.0),         # dt 0: nothing integrates
    ])


def test_reverse_acting():
    g = pid.Gains(kp=1.0, ki=0.0, reverse=True)
    run(g, [(0.0, 300.0, 1.0, -1000, 1000, 300.0), (0.0, -200.0, 1.0, -1000, 1000, -200.0)])


def test_saturation_and_windup_recovery():
    g = pid.Gains(kp=0.0, ki=1.0)
    # a long saturation: the integral stays on the limit (back-calculation) ...
    state = run(g, [(100.0, 0.0, 1.0, -10, 10, 10.0)] * 50)
    assert state.integral == pytest.approx(10.0)
    # ... so the first reversed error leaves the limit at once (no wind-up to unwind)
    run(g, [(0.0, 5.0, 1.0, -10, 10, 5.0)], state)


def test_limits_that_shrink_clamp_at_once():
    g = pid.Gains(kp=0.0, ki=1.0)
    state = run(g, [(5.0, 0.0, 1.0, -100, 100, 5.0)])
    run(g, [(5.0, 0.0, 1.0, -2, 2, 2.0), (0.0, 0.0, 1.0, -100, 100, 2.0)], state)


def test_no_derivative_kick_on_setpoint_step():
    g = pid.Gains(kp=0.0, ki=0.0, kd=10.0)
    state = run(g, [(0.0, 1.0, 1.0, -1e9, 1e9, 0.0)])   # first step: no previous measurement, no D
    state = run(g, [(500.0, 1.0, 1.0, -1e9, 1e9, 0.0)], state)  # setpoint jumps: no kick
    run(g, [(500.0, 3.0, 1.0, -1e9, 1e9, -20.0)], state)  # measurement rises 2/s: D = -10 * 2


def test_bumpless_start_returns_the_given_output():
    for sp, meas in ((0.0, 1234.0), (100.0, -50.0)):
        state = pid.start(P, 777.0, sp, meas)
        out, _ = pid.step(P, state, sp, meas, 0.0, -1e6, 1e6)
        assert out == pytest.approx(777.0)


def test_reset_forgets_history():
    state = run(P, [(10.0, 0.0, 1.0, -100, 100, 6.0)] * 1 + [(10.0, 0.0, 1.0, -100, 100, 7.0)])
    fresh = pid.start(P, 0.0, 10.0, None)
    assert fresh.integral == 0.0 and fresh.last_measurement is None
    assert state.integral != fresh.integral


def test_inverted_limits_collapse_to_their_middle():
    out, _ = pid.step(P, pid.State(), 10.0, 0.0, 1.0, 5.0, -5.0)
    assert out == 0.0


@pytest.mark.parametrize("bad", [-1.0, math.nan, math.inf])
def test_gains_validated(bad):
    with pytest.raises(ValueError, match="kp"):
        pid.Gains(kp=bad, ki=0.0)
