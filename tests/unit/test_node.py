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
    assert r.node.setpoint_w == 0.0 and r.node.request is None


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
    assert ack.status == "done" and "stays in error" in ack.detail  # acknowledged, cause still there
    setattr(rig.plant.battery, knob, 0.0)
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
    assert rig.plant.inverter.p_w == 0.0 and rig.node.request is None
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
    rig.command(type="estop", engaged=False)
    assert rig.node.states.state == "error"
    rig.command(type="ack_error", code="ESTOP")
    rig.run(0.2)
    assert rig.node.states.state == "run" and rig.node.request is None


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
