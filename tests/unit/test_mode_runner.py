"""ModeRunner: safety narrows, whatever the mode asks (DESIGN §2.3), over random sequences.

Invariant, checked on every cycle of random sequences (modes, parameters, images, limits):
every node's setpoint lies within its own limits and the mode's cap for it, the cluster
total within the cluster limits; a node that may not run gets exactly 0 W; no setpoint is
ever non-finite; a node at or below a mode's reserve never discharges.
"""
import math
import random

import pytest

from mastercontroller.control import MODES
from mastercontroller.control.base import ClusterImage, ModeResult
from mastercontroller.control.runner import ModeRunner
from mastercontroller.dispatch import DispatchParams, NodeView
from mastercontroller.state import ClusterState
from sitecontroller.control.services import SERVICES

from .mode_rows import WALL0

# one valid parameter set per mode (every registered mode must have one here)
SAMPLE_PARAMS = {
    "passive": [{}],
    "self_consumption": [{}, {"grid_target_w": 500, "reserve_soc": 0.3, "ki": 0.5}],
    "load_matching": [{"import_limit_w": 2000, "export_limit_w": 500, "recharge_w": 1500}],
    "grid_forming": [{}, {"backup_reserve_soc": 0.6}],
    "charge_only": [{}, {"target_soc": 0.7, "max_charge_w": 1500}],
    "external_control": [{"schedule": [{"start": "2026-05-28T00:00:00+00:00", "end": "2026-05-30T00:00:00+00:00",
                                        "p_w": 4000, "q_var": -3000}], "fallback_w": -500}],
    "local": [{}, {"heartbeat_s": 5}],
    "cost_saving": [{"prices": [{"start": f"2026-05-28T{h:02d}:00:00+00:00", "price": 0.1 + 0.02 * (h % 7)}
                                for h in range(24)]}],
}
SERVICES_HELD = {"ffr": {"capacity_w": 2000.0, "params": {"activation_hz": 49.5}},
                 "fcr_n": {"capacity_w": 1500.0, "params": {}}, "fcr_d_down": {"capacity_w": 3000.0, "params": {}}}
RESERVE = {"self_consumption": "reserve_soc", "load_matching": "reserve_soc", "grid_forming": "backup_reserve_soc"}


def test_every_mode_has_sample_parameters():
    assert set(MODES) <= set(SAMPLE_PARAMS)


def _random_image(rng: random.Random, t: float) -> ClusterImage:
    nodes = []
    for i in range(rng.randint(0, 4)):
        nodes.append(NodeView(
            f"n{i}", rng.random() > 0.1, rng.choice(["run", "run", "run", "sleep", "error"]),
            rng.choice([0.0, 0.05, 0.1, 0.3, rng.random(), 1.0]), rng.choice([1000.0, 10_000.0]),
            rng.choice([0.0, 500.0, 5000.0, rng.uniform(0, 8000)]), rng.choice([0.0, 500.0, 5000.0, rng.uniform(0, 8000)]),
            rng.uniform(-5000, 5000), rng.choice([0.0, 3000.0, rng.uniform(0, 5000), math.nan])))
    return ClusterImage(
        t, WALL0 + t, 1.0, tuple(nodes),
        grid_w=rng.choice([None, rng.uniform(-20_000, 20_000), 0.0]), grid_t=t if rng.random() > 0.3 else None,
        freq_hz=rng.choice([None, 50.0, 46.0]), island=rng.random() < 0.05,
        request_w=rng.choice([None, rng.uniform(-9000, 9000)]), request_wall=WALL0 + t - rng.uniform(0, 100))


@pytest.mark.parametrize("seed", range(8))
def test_setpoints_never_leave_any_limit(seed):
    rng = random.Random(seed)
    runner = ModeRunner(DispatchParams(min_dwell_cycles=3), backup=rng.random() < 0.5)
    modes = sorted(MODES)
    state = ClusterState()
    for cycle in range(600):
        if cycle % 40 == 0:
            mode = rng.choice(modes)
            limits = rng.choice([None, {"charge_w": rng.uniform(0, 6000), "discharge_w": rng.uniform(0, 6000)}])
            services = rng.choice([None, SERVICES_HELD])
            state = ClusterState(mode=mode, mode_params=rng.choice(SAMPLE_PARAMS[mode]), limits=limits,
                                 version=state.version + 1, services=services)
        image = _random_image(rng, float(cycle))
        step = runner.step(state, image)
        assert step.mode in (state.mode, "grid_forming")
        result: ModeResult = step.result
        d = step.dispatch
        if state.limits is not None:
            assert -state.limits["charge_w"] - 1e-6 <= step.target_w <= state.limits["discharge_w"] + 1e-6
        assert abs(math.fsum(step.q_setpoints.values())) <= abs(result.target_var) + 1e-6
        reserve = state.mode_params.get(RESERVE.get(step.mode, ""), 0.1 if step.mode in RESERVE else None)
        for n in image.nodes:
            p = d.setpoints[n.node_id]
            assert math.isfinite(p)
            cap_c, cap_d = result.node_limits.get(n.node_id, (math.inf, math.inf))
            assert -min(max(0.0, n.charge_w), cap_c) - 1e-6 <= p <= min(max(0.0, n.discharge_w), cap_d) + 1e-6, \
                (cycle, step.mode, n, p, result.node_limits)
            q = step.q_setpoints[n.node_id]
            assert abs(q) <= (n.q_max_var if math.isfinite(n.q_max_var) else 0.0) + 1e-6, (cycle, n, q)
            if not (n.online and n.state == "run"):
                assert p == 0.0 and q == 0.0
            held = step.reserve.per_node.get(n.node_id, {})  # the reserve comes on top of the base setpoint
            up = sum(w for s, w in held.items() if SERVICES[s].direction != "down")
            down = sum(w for s, w in held.items() if SERVICES[s].direction != "up")
            assert p + up <= max(0.0, n.discharge_w) + 1e-6 and -p + down <= max(0.0, n.charge_w) + 1e-6, \
                (cycle, step.mode, n, p, held)
            if reserve is not None and not result.grid_forming and n.soc <= reserve:
                assert p <= 0.0, (cycle, step.mode, n, p)


def test_an_unreadable_state_runs_passive():
    runner = ModeRunner()
    img = ClusterImage(0.0, WALL0, 1.0, (NodeView("a", True, "run", 0.5, 1000, 500, 500),), grid_w=3000.0, grid_t=0.0)
    for state in (ClusterState(mode="warp_drive"), ClusterState(mode="self_consumption", mode_params={"kp": -1}, version=1)):
        step = runner.step(state, img)
        assert step.mode == "passive" and step.target_w == 0.0


def test_parameter_change_restarts_the_mode_bumplessly():
    runner = ModeRunner()
    nodes = (NodeView("a", True, "run", 0.5, 10_000, 5000, 5000, 2500.0),)
    img = ClusterImage(0.0, WALL0, 1.0, nodes, grid_w=0.0, grid_t=0.0)
    runner.step(ClusterState(mode="self_consumption"), img)
    step = runner.step(ClusterState(mode="self_consumption", mode_params={"grid_target_w": 0.0, "kp": 0.3}, version=1),
                       ClusterImage(1.0, WALL0 + 1, 1.0, nodes, grid_w=0.0, grid_t=1.0))
    assert step.target_w == pytest.approx(2500.0)  # from the measured 2.5 kW, not from zero


def test_a_mode_that_raises_gives_0_w_and_dispatch_goes_on(monkeypatch, caplog):
    from mastercontroller.control import self_consumption

    def broken(image, params, memory):
        raise ZeroDivisionError("bug")

    monkeypatch.setattr(self_consumption, "step", broken)
    runner = ModeRunner()
    nodes = (NodeView("a", True, "run", 0.5, 10_000, 5000, 5000, 2500.0),)
    for t in range(5):
        step = runner.step(ClusterState(mode="self_consumption", version=1),
                           ClusterImage(float(t), WALL0 + t, 1.0, nodes, grid_w=3000.0, grid_t=float(t)))
        assert step.mode == "passive" and step.dispatch.setpoints == {"a": 0.0}
        assert "mode self_consumption failed (ZeroDivisionError: bug)" in step.result.note
    assert sum("failed" in r.message for r in caplog.records) == 1  # logged once, not every cycle


def test_the_loop_window_is_the_cluster_limit_no_windup_against_it():
    runner = ModeRunner()
    nodes = (NodeView("a", True, "run", 0.5, 10_000, 10_000, 10_000, 2000.0),)
    state = ClusterState(mode="self_consumption", limits={"charge_w": 10_000, "discharge_w": 2000}, version=1)
    for t in range(100):  # 4 kW import the cluster may not cover: the loop sits on the 2 kW limit
        step = runner.step(state, ClusterImage(float(t), WALL0 + t, 1.0, nodes, grid_w=4000.0, grid_t=float(t)))
    assert step.target_w == 2000.0
    # the import turns into export: the loop leaves the limit at once (nothing wound up behind it)
    step = runner.step(state, ClusterImage(100.0, WALL0 + 100, 1.0, nodes, grid_w=-1000.0, grid_t=100.0))
    assert step.target_w < 2000.0 - 100.0


def test_a_meter_gap_or_another_clock_is_integrated_as_one_interval():
    from mastercontroller.control import self_consumption as sc
    from mastercontroller.control.base import ClusterImage as Image

    p = sc.Params(kp=0.0, ki=0.1, deadband_w=0)
    nodes = (NodeView("a", True, "run", 0.5, 10_000, 5000, 5000, 0.0),)
    memory = sc.start(Image(0.0, WALL0, 1.0, nodes, grid_w=0.0, grid_t=0.0), p)
    out = []
    for t, grid_t in ((1, 1.0), (2, 2.0), (3, 3600.0), (4, -50.0)):  # a one-hour jump, then another node's clock
        r = sc.step(Image(float(t), WALL0 + t, 1.0, nodes, grid_w=1000.0, grid_t=grid_t), p, memory)
        memory = r.memory
        out.append(r.target_w)
    steps = [b - a for a, b in zip([0.0] + out, out)]
    # 0.1 * 1000 W * one interval each time: 1 s, and 1 s for the one-hour gap (which moves the interval
    # estimate to 2 s at most), then 2 s for the sample on another node's clock
    assert steps == pytest.approx([100.0, 100.0, 100.0, 200.0]), steps
