"""grid_forming (backup): reserve kept on the grid; islanded on grid loss; resync; the runner's hand-over."""
import pytest

from mastercontroller.control import grid_forming as gf, parse_params
from mastercontroller.control.runner import ModeRunner
from mastercontroller.dispatch import DispatchParams
from mastercontroller.state import ClusterState

from .mode_rows import image, nodes, run_rows

P = gf.Params(backup_reserve_soc=0.3, charge_w=1000, resync_s=3)


def test_recharges_to_the_reserve_then_idles_and_keeps_it():
    run_rows(gf, P, [(image(0, 0.0, ns=nodes(0.2, 0.2)), lambda r: r.target_w == -1000.0 and not r.grid_forming)])
    r = run_rows(gf, P, [(image(0, 0.0, ns=nodes(0.3, 0.5)), lambda r: r.target_w == 0.0)])
    assert r[0].node_limits["n1"][1] == 0.0 and r[0].node_limits["n2"][1] == 5000.0


@pytest.mark.parametrize("kw, why", [
    ({"island": True}, "islanded operation"),
    ({"freq_hz": 46.0}, "frequency 46.00 Hz"),
    ({"grid_v": 20.0}, "voltage 20 V"),
])
def test_grid_loss_detected_and_the_inverters_form_the_grid(kw, why):
    ns = nodes(0.5, 0.5, p_w=1500.0)
    r = run_rows(gf, P, [(image(0, 0.0, ns=ns, **kw), lambda r: r.grid_forming and r.target_w == 3000.0)])
    assert why in r[0].note and not r[0].node_limits  # the reserve is there to be used now


def test_overload_reported_and_resync_waits_for_a_healthy_grid():
    full = nodes(0.5, 0.5, p_w=5000.0)
    rows = [(image(0, 0.0, ns=full, island=True), lambda r: "at or above the battery's capacity" in r.note)]
    rows += [(image(1, 0.0), lambda r: r.grid_forming and "resynchronising" in r.note),
             (image(2, 0.0, island=True), lambda r: r.grid_forming),         # a new break restarts the wait
             (image(3, 0.0), lambda r: r.grid_forming),
             (image(5, 0.0), lambda r: r.grid_forming),
             (image(6, 0.0), lambda r: not r.grid_forming)]                  # 3 s healthy: back
    run_rows(gf, P, rows)


def test_bad_parameters():
    with pytest.raises(ValueError, match="f_min_hz .* must be below f_max_hz"):
        parse_params("grid_forming", {"f_min_hz": 51, "f_max_hz": 50})
    with pytest.raises(ValueError, match="backup_reserve_soc"):
        parse_params("grid_forming", {"backup_reserve_soc": -0.1})


def test_runner_hands_any_mode_over_on_grid_loss_and_back():
    runner = ModeRunner(DispatchParams(sleep_enabled=False), backup=True)
    state = ClusterState(mode="self_consumption")
    assert runner.step(state, image(0, 0.0)).mode == "self_consumption"
    step = runner.step(state, image(1, 0.0, island=True, ns=nodes(0.5, 0.5, p_w=800.0)))
    assert step.mode == "grid_forming" and step.result.grid_forming and step.target_w == 1600.0
    t = 2
    while runner.step(state, image(t, 0.0)).mode == "grid_forming":
        t += 1
        assert t < 30
    assert t == 2 + 10  # the default resync time
    without = ModeRunner(DispatchParams(sleep_enabled=False))  # no backup: the mode keeps running
    without.step(state, image(0, 0.0))
    assert without.step(state, image(1, 0.0, island=True)).mode == "self_consumption"
