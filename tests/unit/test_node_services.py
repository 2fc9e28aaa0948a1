"""Grid services through the whole node on simulated time: the plant's frequency (a played
profile) -> the in-process inverter reading -> the node's controllers -> the inverter command
-> the plant's inverter power. The market's times, asserted where the power is."""
import pytest

from sitecontroller.sim.frequency import Player, load
from tests.unit.test_node import Rig

CAPACITY_W = 4000.0


def rig_with(make_params, service, params=None):
    rig = Rig(make_params())
    rig.run_until(lambda: rig.node.states.state == "run", 5, "run")
    rig.node.grid_services.allocate({service: CAPACITY_W}, {service: params or {}}, term=1,
                                    now=rig.clock.monotonic(), valid_s=3600)
    return rig


def play(rig, profile):
    rig.plant.grid.player = Player(load(profile), rig.clock.wall())


def time_to(rig, fraction, limit_s):
    """Seconds from the step (2 s into the profile) until the inverter delivers `fraction` of the capacity."""
    rig.run_until(lambda: rig.plant.grid.player.t >= 2.0, 5, "the step")
    t0 = rig.clock.monotonic()
    rig.run_until(lambda: rig.plant.inverter.p_w >= fraction * CAPACITY_W - 1.0, limit_s, f"{fraction:.0%}")
    return rig.clock.monotonic() - t0


def test_fcr_d_up_half_within_5_s_and_full_within_30_s(make_params):
    rig = rig_with(make_params, "fcr_d_up", {"filter_s": 3.0})  # even smoothed, well within the market's times
    play(rig, "step-49.5")
    assert time_to(rig, 0.5, 5.0) <= 5.0
    rig.run_until(lambda: rig.plant.inverter.p_w >= 0.995 * CAPACITY_W, 30.0, "full")
    assert rig.node.decision.terms[0][0] == "fcr_d_up"


def test_ffr_full_within_0_7_s_held_for_the_support_then_released(make_params):
    rig = rig_with(make_params, "ffr", {"activation_hz": 49.5, "support_s": 5})
    play(rig, "step-49.5")
    assert time_to(rig, 1.0, 0.7) <= 0.7
    rig.run(4.0)
    assert rig.plant.inverter.p_w == pytest.approx(CAPACITY_W, abs=1.0)  # still supporting at 4.x s
    rig.run(7.0)  # support over at 5 s, released at <= 20 %/s: 0 W within 5 s more
    assert abs(rig.plant.inverter.p_w) < 1.0


def test_no_response_without_an_allocation_or_once_it_expired(make_params):
    rig = Rig(make_params())
    rig.run_until(lambda: rig.node.states.state == "run", 5, "run")
    play(rig, "step-49.5")
    rig.run(5.0)
    assert abs(rig.plant.inverter.p_w) < 1.0
    rig.node.grid_services.allocate({"fcr_d_up": CAPACITY_W}, {}, term=1, now=rig.clock.monotonic(), valid_s=10)
    rig.run(2.0)
    assert rig.plant.inverter.p_w > 0.9 * CAPACITY_W
    rig.run(10.0)  # no leader heard for 10 s: the allocation is released
    assert abs(rig.plant.inverter.p_w) < 1.0 and rig.node.grid_services.responses(rig.clock.monotonic()) == ()
