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


def test_an_event_is_logged_at_cycle_resolution_and_plotted(make_params, tmp_path):
    from sitecontroller.grid_events import EVENT_TAIL_S, plot, read_event

    rig = rig_with(make_params, "ffr", {"activation_hz": 49.5, "support_s": 5})
    play(rig, "step-49.5")
    rig.run(2.0 + 40.0 + EVENT_TAIL_S + 2.0)  # the step, the 40 s at 49.5 Hz, back to 50 Hz, the tail
    (path,) = (rig.params.data_dir / "events").glob("*.jsonl")
    e = read_event(path)
    assert e["complete"] and e["node_id"] == "node1" and e["hz"] == pytest.approx(49.5)
    samples = e["samples"]
    period = rig.params.cycle.period_s
    assert len(samples) == pytest.approx((2.0 + 40.0 + EVENT_TAIL_S) / period, abs=3)  # every cycle, 2 s before too
    assert samples[0]["hz"] == pytest.approx(50.0, abs=0.15) and min(s["hz"] for s in samples) == pytest.approx(49.5)
    full = [s for s in samples if s["requested_w"].get("ffr") == CAPACITY_W]
    assert full and all(abs(s["p_w"] - CAPACITY_W) < 50 for s in full[5:])  # delivered what was requested
    plot([e], tmp_path / "event.png")
    assert (tmp_path / "event.png").stat().st_size > 10_000


def test_a_reserve_the_battery_cannot_hold_and_a_stale_allocation_are_reported(make_params):
    rig = Rig(make_params())
    rig.run_until(lambda: rig.node.states.state == "run", 5, "run")
    soc = rig.plant.battery.soc  # 0.6 of 10 kWh: ~4.8 kWh above the 10 % reserve
    rig.node.grid_services.allocate({"fcr_d_up": 5000.0}, {"fcr_d_up": {"endurance_s": 7200}}, term=1,
                                    now=rig.clock.monotonic(), valid_s=60)  # 10 kWh for 2 h at 5 kW
    rig.run(1.0)
    errors = {e.id: e for e in rig.node.errors.listed()}
    assert "RESERVE_ENDURANCE" in errors and "up: 10000 Wh needed" in errors["RESERVE_ENDURANCE"].text, soc
    assert "RESERVE_STALE" not in errors
    rig.run(5.0)  # no leader refreshed it
    assert "RESERVE_STALE" in {e.id for e in rig.node.errors.listed() if e.active}
    rig.run(60.0)  # expired: released, nothing to report
    assert not {"RESERVE_STALE", "RESERVE_ENDURANCE"} & {e.id for e in rig.node.errors.listed() if e.active}
