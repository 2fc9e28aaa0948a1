"""A whole node on the simulated clock with in-process devices: cycles, commands, safety."""
import pytest

from sitecontroller.clock import SimClock
from sitecontroller.drivers.factory import make_devices
from sitecontroller.node import Node
from sitecontroller.sim.plant import Plant


class Rig:
    """A node, its plant and a simulated clock; `run(s)` steps both every cycle."""

    def __init__(self, params, clock=None, plant=None):
        self.params = params
        self.clock = clock or SimClock()
        self.plant = plant or Plant.from_params(params, wall_s=self.clock.wall())
        self.devices = make_devices(params, self.clock, plant=self.plant)
        self.node = Node(params, self.clock, self.devices)
        self.period = params.cycle.period_s

    def run(self, seconds):
        for _ in range(round(seconds / self.period)):
            self.node.step()
            self.clock.advance(self.period)
            self.plant.step(self.period, self.clock.wall())

    def command(self, **raw):
        ack = self.node.commands.submit(raw)
        self.run(self.period)
        return self.node.commands.ack_of(ack.id)

    def run_until(self, predicate, limit_s, what):
        t0 = self.clock.monotonic()
        while not predicate():
            if self.clock.monotonic() - t0 > limit_s:
                raise AssertionError(f"not within {limit_s} s (simulated): {what}")
            self.run(self.period)
        return self.clock.monotonic() - t0

    @property
    def error_ids(self):
        return {e.id for e in self.node.errors.listed()}


@pytest.fixture
def rig(make_params):
    return Rig(make_params())


def test_starts_in_run_once_devices_answer(rig):
    assert rig.node.states.state == "init"
    rig.run(0.1)
    assert rig.node.states.state == "run"
    assert rig.node.status()["soc"] == pytest.approx(0.6, abs=0.01)


def test_power_follows_a_setpoint_with_the_ramp(rig):
    rig.run(0.2)
    ack = rig.command(type="set_power", p_w=3000)
    assert ack.status == "done" and ack.result["applied_w"] == 3000
    rig.run(1.0)
    assert rig.plant.inverter.p_w == pytest.approx(3000)
    soc0 = rig.plant.battery.soc
    rig.run(10)
    assert rig.plant.battery.soc < soc0
    assert rig.node.status()["p_w"] == pytest.approx(3000, abs=1)


def test_a_request_expires_and_the_node_returns_to_zero(make_params):
    r = Rig(make_params(staleness={"setpoint_s": 2.0}))
    r.run(0.2)
    r.command(type="set_power", p_w=2000)
    r.run(1.0)
    assert r.node.setpoint_w == pytest.approx(2000)
    r.run(2.0)
    assert r.node.setpoint_w == 0.0 and r.node.sources["local"].latest() is None


def test_a_request_outside_the_limits_is_clamped_and_the_ack_says_why(make_params):
    r = Rig(make_params(battery={"max_discharge_w": 2500}))
    r.run(0.2)
    ack = r.command(type="set_power", p_w=4000)
    assert ack.status == "done"
    assert ack.result["applied_w"] == 2500
    assert "clamped: discharge 4000 W requested, 2500 W allowed" in ack.detail
    r.run(1.0)
    assert r.plant.inverter.p_w == pytest.approx(2500)


def test_a_request_beyond_the_inverter_rating_is_rejected(rig):
    rig.run(0.2)
    ack = rig.command(type="set_power", p_w=9000)
    assert ack.status == "rejected" and "rating" in ack.detail


def test_inverter_silent_means_zero_within_one_cycle_after_the_limit_and_resumes(rig):
    rig.run(0.2)
    rig.command(type="set_power", p_w=3000)
    rig.run(1.0)
    rig.devices.inverter.silent = True
    took = rig.run_until(lambda: rig.node.setpoint_w == 0.0, 2.0, "setpoint 0 after inverter silence")
    limit = rig.params.staleness.inverter_s
    assert limit < took <= limit + 2 * rig.period
    assert "INV_STALE" in rig.error_ids and rig.node.states.state == "run"
    rig.devices.inverter.silent = False
    rig.run(1.0)
    assert rig.node.setpoint_w == pytest.approx(3000)  # fresh again: the request is carried out again


def test_bms_silent_is_critical_opens_contactors_and_stops(rig):
    rig.run(0.2)
    rig.command(type="set_power", p_w=3000)
    rig.run(1.0)
    rig.devices.bms.silent = True
    took = rig.run_until(lambda: rig.node.states.state == "error", 3.0, "state error after BMS silence")
    assert took <= rig.params.staleness.bms_s + 2 * rig.period
    rig.run(0.1)
    assert "BMS_STALE" in rig.error_ids
    assert rig.node.setpoint_w == 0.0 and rig.plant.inverter.run_requested is False
    rig.devices.bms.silent = False
    rig.run(0.2)
    assert rig.plant.battery.contactor_closed is False  # the open command reached the BMS
    assert rig.node.states.state == "error"  # cause gone, but not acknowledged


@pytest.mark.parametrize("knob,value,code", [("cell_v_fault_v", 0.5, "CELL_OVERVOLTAGE"),
                                             ("cell_v_fault_v", -0.6, "CELL_UNDERVOLTAGE"),
                                             ("temp_fault_c", 40.0, "CELL_OVERTEMP")])
def test_cell_faults_are_critical_and_need_clear_plus_acknowledge(rig, knob, value, code):
    rig.run(0.2)
    setattr(rig.plant.battery, knob, value)
    rig.run(0.2)
    assert rig.node.states.state == "error" and code in rig.error_ids
    assert rig.plant.battery.contactor_closed is False
    ack = rig.command(type="set_state", target="run")
    assert ack.status == "rejected" and "acknowledge" in ack.detail
    ack = rig.command(type="ack_error", code=code)
    assert ack.status == "rejected" and "cause is active" in ack.detail  # no acknowledging in advance
    setattr(rig.plant.battery, knob, 0.0)
    rig.run(0.3)
    assert rig.node.states.state == "error"  # cleared, but nobody acknowledged it since
    ack = rig.command(type="ack_error", code=code)
    assert ack.status == "done"
    rig.run(0.3)
    assert rig.node.states.state == "run"


def test_errors_persist_across_a_restart(make_params):
    params = make_params()
    first = Rig(params)
    first.run(0.2)
    first.plant.battery.temp_fault_c = 40.0
    first.run(0.2)
    assert "CELL_OVERTEMP" in first.error_ids
    first.node.commands.close()
    # a new process: same data directory, the fault has cooled off meanwhile
    second = Rig(params)
    assert "CELL_OVERTEMP" in second.error_ids
    second.run(0.5)
    assert second.node.states.state == "error"
    assert second.command(type="ack_error", code="all").status == "done"
    second.run(0.3)
    assert second.node.states.state == "run"


def test_sleep_and_maintenance_exchange_no_power(rig):
    rig.run(0.2)
    rig.command(type="set_power", p_w=2000)
    rig.run(1.0)
    assert rig.command(type="set_state", target="sleep").status == "done"
    rig.run(0.2)
    assert rig.plant.inverter.p_w == 0.0 and rig.node.sources["local"].latest() is None
    assert rig.command(type="set_power", p_w=100).status == "rejected"
    assert rig.command(type="set_state", target="maintenance").status == "done"
    assert rig.command(type="set_state", target="run").status == "done"


def test_estop_engages_and_release_plus_ack_recovers(rig):
    rig.run(0.2)
    rig.command(type="set_power", p_w=2000)
    rig.run(1.0)
    assert rig.command(type="estop", engaged=True).status == "done"
    rig.run(0.1)
    assert rig.node.states.state == "error" and rig.plant.inverter.p_w == 0.0
    assert rig.command(type="ack_error", code="ESTOP").status == "rejected"  # still engaged
    rig.command(type="estop", engaged=False)
    rig.run(0.5)
    assert rig.node.states.state == "error"
    rig.command(type="ack_error", code="ESTOP")
    rig.run(0.2)
    assert rig.node.states.state == "run" and rig.node.sources["local"].latest() is None


def test_restart_command_requests_exit_code_75(rig):
    rig.run(0.2)
    assert rig.command(type="restart").status == "done"
    assert rig.node.exit_requested == 75


def test_meter_stale_keeps_running_on_the_local_setpoint_and_reports_it(rig):
    rig.run(0.2)
    rig.command(type="set_power", p_w=1500)
    rig.plant.meter_stopped = True
    rig.run(rig.params.staleness.meter_s + 0.5)
    status = rig.node.status()
    assert status["state"] == "run" and status["grid_p_w"] is None and "meter" in status["absent"]
    assert "METER_STALE" in rig.error_ids
    assert rig.plant.inverter.p_w == pytest.approx(1500)
    rig.plant.meter_stopped = False
    rig.run(0.3)
    assert "METER_STALE" not in rig.error_ids  # a warning goes with its cause


def test_an_inverter_trip_is_one_error_and_holds_zero(rig):
    rig.run(0.2)
    rig.command(type="set_power", p_w=2000)
    rig.run(1.0)
    rig.plant.inverter.trip("GRID_FAULT")
    rig.run(0.2)
    assert "INV_FAULT" in rig.error_ids and rig.node.setpoint_w == 0.0
    assert rig.node.states.state == "run"  # an error, not critical: the node waits for the inverter
    rig.plant.inverter.reset()
    rig.run(1.0)
    assert rig.node.setpoint_w == pytest.approx(2000)


def stop_trace(rig, seconds):
    """(setpoint, inverter_run, contactor_closed) of each cycle for `seconds`."""
    out = []
    for _ in range(round(seconds / rig.period)):
        rig.run(rig.period)
        d = rig.node.decision
        out.append((round(d.setpoint_w), d.inverter_run, d.contactor_closed))
    return out


def test_restart_ramps_linearly_to_zero_then_stops_the_inverter_then_opens_contactors(make_params):
    r = Rig(make_params(safety={"ramp_w_per_s": 300}))  # a slow grid-code ramp: the stop is faster
    r.run(0.2)
    r.command(type="set_power", p_w=5000, hold_s=600)
    r.run(20)
    assert r.node.setpoint_w == pytest.approx(5000)
    r.command(type="restart")  # the cycle that carries it out takes the first step already
    first = r.node.setpoint_w
    trace = stop_trace(r, 1.0)
    powers = [p for p, _, _ in trace]
    assert first < 5000 and 0 in powers[:8], trace  # 0 W within about 0.8 s
    steps = [a - b for a, b in zip([first] + powers, powers)]
    assert max(steps) <= 5000 / 0.8 * 0.1 + 1, trace  # linear, no cut from full power
    assert all(c for _, _, c in trace), "contactors stay closed until the app's last stop phase"
    r.node.stop.advance("off")
    r.run(0.1)
    assert r.node.decision.inverter_run is False and r.node.decision.contactor_closed is True
    r.node.stop.advance("open")
    r.run(0.1)
    assert r.node.decision.contactor_closed is False and r.plant.battery.contactor_closed is False
    assert r.node.exit_requested == 75


def test_an_orderly_stop_never_overrides_an_error(rig):
    rig.run(0.2)
    rig.command(type="set_power", p_w=5000)
    rig.run(1.0)
    rig.node.begin_stop()  # SIGTERM
    rig.run(0.1)
    assert 0 < rig.node.setpoint_w < 5000
    rig.command(type="estop", engaged=True)  # during the ramp
    rig.run(0.1)
    d = rig.node.decision
    assert (d.setpoint_w, d.inverter_run, d.contactor_closed) == (0.0, False, False)


def test_an_orderly_stop_of_a_node_in_error_keeps_the_contactors_open(rig):
    rig.run(0.2)
    rig.command(type="estop", engaged=True)
    rig.run(0.2)
    assert rig.plant.battery.contactor_closed is False
    rig.node.begin_stop()
    for phase in (None, "off", "open"):
        if phase:
            rig.node.stop.advance(phase)
        rig.run(0.1)
        assert rig.node.decision.contactor_closed is False and rig.plant.battery.contactor_closed is False


def test_a_cycle_that_raises_commands_the_safe_state_and_the_node_keeps_cycling(rig, monkeypatch):
    rig.run(0.2)
    rig.command(type="set_power", p_w=3000)
    rig.run(1.0)
    assert rig.plant.inverter.p_w == pytest.approx(3000)
    import sitecontroller.control as control

    def broken(*a, **k):
        raise RuntimeError("a bug in decide")

    monkeypatch.setattr(control, "decide", broken)
    rig.run(0.2)  # must not raise
    assert rig.plant.inverter.run_requested is False and rig.plant.inverter.p_w == 0.0
    assert rig.plant.battery.contactor_closed is False
    assert "CYCLE_FAILED" in rig.error_ids and rig.node.states.state == "error"
    monkeypatch.undo()
    rig.run(0.2)
    assert not rig.node.errors.is_active("CYCLE_FAILED")  # cycles work again: the cause is gone
    assert rig.command(type="ack_error", code="all").status == "done"
    rig.run(0.3)
    assert rig.node.states.state == "run" and rig.node.setpoint_w == 0.0  # the old request is gone


def test_inverter_silent_while_power_still_flows_becomes_critical(rig):
    rig.run(0.2)
    rig.command(type="set_power", p_w=4000)
    rig.run(1.0)
    rig.devices.inverter.silent = True  # an inverter without a watchdog keeps its last setpoint
    took = rig.run_until(lambda: "UNCONTROLLED_POWER" in rig.error_ids, 10, "UNCONTROLLED_POWER")
    assert took <= rig.params.staleness.inverter_s + 5.0 + 0.3
    rig.run(0.2)
    assert rig.node.states.state == "error" and rig.plant.battery.contactor_closed is False


def test_a_stalled_cycle_does_not_jump_the_ramp(make_params):
    """The ramp advances by one cycle period per cycle, even when a cycle started late (1.8)."""
    r = Rig(make_params(safety={"ramp_w_per_s": 1000}))
    r.run(0.2)
    r.command(type="set_power", p_w=3000, hold_s=600)
    before = r.node.setpoint_w
    r.clock.advance(2.0)  # the process stalled for 2 s (swap, a slow disk)
    r.run(r.period)
    assert r.node.setpoint_w - before == pytest.approx(1000 * r.period)


def test_cluster_scope_commands_go_to_the_cluster_service_or_are_refused(rig):
    from sitecontroller.commands import DONE

    rig.run(0.2)
    ack = rig.command(type="cluster_setpoint", target_w=6000)
    assert ack.status == "rejected" and "no cluster service" in ack.detail
    rig.node.executor.cluster_handler = lambda c, image: (DONE, "through the Raft log", {})
    assert rig.command(type="cluster_setpoint", target_w=6000).status == DONE
    later = []
    rig.node.executor.cluster_handler = lambda c, image: later.append(c)  # finished once the log commits
    ack = rig.command(type="cluster_setpoint", target_w=5000)
    assert ack.status == "accepted" and later[0].target_w == 5000
    rig.node.commands.finish(later[0], DONE, "committed")
    assert rig.node.commands.ack_of(ack.id).status == DONE


def test_a_set_power_ack_says_when_a_higher_source_owns_the_setpoint(rig):
    """The ack is decided over the sources as the cycle will see them, not last cycle's image."""
    rig.run(0.2)
    assert rig.command(type="set_power", p_w=1000, hold_s=600).result["applied_w"] == 1000  # local (CLI)
    ack = rig.command(type="set_power", p_w=2500, hold_s=600, source="scada")
    assert ack.status == "done" and ack.result["applied_w"] is None, ack
    assert "not applied now: local outranks scada" in ack.detail
    rig.run(1.0)
    assert rig.node.decision.source == "local" and rig.plant.inverter.p_w == pytest.approx(1000)


def test_a_set_power_ack_says_when_no_power_can_flow_now(rig):
    rig.run(0.2)
    rig.devices.inverter.silent = True  # its readings go stale: the decision holds 0 W
    rig.run(rig.params.staleness.inverter_s + 0.5)
    ack = rig.command(type="set_power", p_w=2000, hold_s=600)
    assert ack.status == "done" and ack.result["applied_w"] is None, ack
    assert "not applied now: no fresh inverter data" in ack.detail
    assert rig.node.decision.setpoint_w == 0.0
