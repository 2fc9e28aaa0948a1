"""Safety invariants of the node, checked every cycle over seeded random sequences of
commands and faults (DESIGN §4), plus the follow check of an inverter that ignores writes.

Invariants, each checked on every cycle of every sequence:
  I1  no decision closes the contactors, runs the inverter or asks for power while a
      critical error is listed — whatever the state, orderly stops included;
  I2  power is asked only in `run` (or while an orderly stop ramps down from it);
  I3  the setpoint never leaves the limiter's window;
  I4  every acknowledgement tells what was actually done in the cycle that executed it
      (e-stop: 0 W and contactors open; state change: the node is in that state;
      restart: the node is stopping; acknowledge: the error is no longer latched;
      set_power: its source owns the setpoint exactly when the ack says it is applied) —
      checked for the last command of each cycle, since an earlier one may rightly be
      undone by a later one in the same cycle;
  I5  an orderly stop never closes contactors that were open (a restart from `error`);
  I6  the inverter may form the grid only on a node whose own parameters say it has backup
      hardware (`features.BACKUP`), while the inverter runs with the contactors closed, no
      critical error is listed and no orderly stop runs; what the inverter was told is what
      the decision says;
  I7  reactive power only while the inverter runs, and never beyond what the rating leaves
      beside the active power (|S| <= rated).
"""
import math
import random
from collections import deque

import pytest
import zmq

from sitecontroller.drivers.base import DeviceIssue
from tests.unit.test_node import Rig

SEEDS = range(28)  # seed 27 restarts from error with only INV_STALE latched (I5)
CYCLES = 250
FAULTS = ["cell_ov", "overtemp", "bms_silent", "inverter_silent", "inverter_trip", "ignores_writes", "grid_lost",
          "freq_event"]
ERROR_CODES = ["ESTOP", "CELL_OVERVOLTAGE", "CELL_OVERTEMP", "BMS_STALE", "INV_NOT_FOLLOWING", "all"]


class FaultyRig(Rig):
    """The rig with fault switches that act on the plant and the in-process drivers."""

    def __init__(self, params, lag_cycles=0):
        super().__init__(params)
        inverter = self.devices.inverter
        self._command, self._issues = inverter.command, inverter.issues
        inverter.command, inverter.issues = self._inverter_command, self._inverter_issues
        self.ignores_writes = False  # it answers polls but ignores every write
        self.refuses_writes = False  # it refuses every write, and its driver says so
        self._late = deque(maxlen=lag_cycles + 1)  # an inverter that answers a command lag_cycles late

    def _inverter_command(self, cmd):
        if self.ignores_writes or self.refuses_writes:
            return
        self._late.append(cmd)
        self._command(self._late[0])

    def _inverter_issues(self):
        refused = [DeviceIssue("INV_WRITE_FAILED", "the inverter refused the write")] if self.refuses_writes else []
        return self._issues() + refused

    def fault(self, name, on):
        b, inv = self.plant.battery, self.plant.inverter
        if name == "cell_ov":
            b.cell_v_fault_v = 0.5 if on else 0.0
        elif name == "overtemp":
            b.temp_fault_c = 40.0 if on else 0.0
        elif name == "bms_silent":
            self.devices.bms.silent = on
        elif name == "inverter_silent":
            self.devices.inverter.silent = on
        elif name == "inverter_trip":
            inv.trip("GRID_FAULT") if on else inv.reset()
        elif name == "ignores_writes":
            self.ignores_writes = on
        elif name == "grid_lost":  # the inverter reports islanded operation (the follow check's window)
            self.plant.grid.lost = on
        elif name == "freq_event":  # 49.4 Hz: the grid services' responses go to full power
            self.plant.grid.freq_offset_hz = -0.6 if on else 0.0


def random_command(rng):
    kind = rng.choice(["set_power", "set_power", "set_state", "estop", "estop", "ack", "ack", "restart"])
    if kind == "set_power":
        return {"type": "set_power", "p_w": rng.choice([-6000, -3000, -500, 0, 800, 3000, 5000]),
                "hold_s": rng.choice([None, 1.0, 30.0])}
    if kind == "set_state":
        return {"type": "set_state", "target": rng.choice(["run", "sleep", "maintenance"])}
    if kind == "estop":
        return {"type": "estop", "engaged": rng.random() < 0.6}
    if kind == "ack":
        return {"type": "ack_error", "code": rng.choice(ERROR_CODES)}
    return {"type": "restart", "reboot": rng.random() < 0.5}


def check_cycle(rig, acks, where, prev=None):
    node, d = rig.node, rig.node.decision
    if node.stop.phase is not None and prev is not None and not prev.contactor_closed:
        assert not d.contactor_closed, (where, "an orderly stop closed the contactors", prev, d)
    critical = node.errors.run_blocker()
    if critical:
        assert (d.contactor_closed, d.inverter_run, d.setpoint_w) == (False, False, 0.0), (where, critical, d)
    if node.states.state not in ("run", "restart", "reboot"):
        assert d.setpoint_w == 0.0, (where, node.states.state, d)
    assert -d.limits.charge_w - 1e-6 <= d.setpoint_w <= d.limits.discharge_w + 1e-6, (where, d)
    if d.grid_forming:
        assert node.params.features.BACKUP, (where, d)
        assert d.inverter_run and d.contactor_closed and not critical and node.stop.phase is None, (where, d)
    if not (getattr(rig, "ignores_writes", False) or rig.devices.inverter.silent):  # the command got there
        assert rig.plant.inverter.grid_forming == d.grid_forming, (where, d)
    assert d.q_var == 0.0 or d.inverter_run, (where, d)
    assert math.hypot(d.setpoint_w, d.q_var) <= node.rated_w + 1e-6, (where, d)
    for raw, ack in acks[-1:]:  # a later command of the same cycle may rightly undo an earlier one
        if ack.status != "done":
            continue
        if raw["type"] == "estop" and raw["engaged"]:
            assert (d.setpoint_w, d.inverter_run, d.contactor_closed) == (0.0, False, False), (where, ack, d)
        elif raw["type"] == "set_power":  # applied: its source owns the setpoint now; not applied: it does not
            applied = ack.result["applied_w"] is not None
            assert (d.source == ack.result["source"]) == applied, (where, ack, d)
        elif raw["type"] == "set_state":
            assert node.states.state == raw["target"], (where, ack, node.states.state)
        elif raw["type"] == "restart":
            assert node.stop.phase is not None and node.exit_requested in (75, 76), (where, ack)
        elif raw["type"] == "ack_error" and raw["code"] != "all":
            entry = {e.id: e for e in node.errors.listed()}.get(raw["code"])
            assert entry is None or entry.acknowledged, (where, ack, entry)


def finish_stop(rig, where):
    """What the app does after a restart/reboot: ramp, inverter off, contactors open."""
    for phase in ("ramp",) * 10 + ("off", "open"):
        if phase != "ramp":
            rig.node.stop.advance(phase)
        prev = rig.node.decision
        rig.run(rig.period)
        check_cycle(rig, [], where, prev)
    assert rig.node.decision.contactor_closed is False


@pytest.mark.parametrize("seed", SEEDS)
def test_invariants_hold_over_random_commands_and_faults(make_params, seed):
    run_random(make_params(), seed)


@pytest.mark.parametrize("seed", range(12))
def test_invariants_hold_in_a_cluster_with_backup_hardware(make_params, seed):
    """The node steered by random dispatches (some missing), with or without backup hardware,
    through the same random commands and faults, the grid lost now and then, holding frequency reserve
    that frequency events call on (I6 above all; I1-I3 with the responses on top of the base)."""
    me = {"node_id": "node1", "raft": "127.0.0.1:1", "data": "127.0.0.1:2", "public_key": zmq.curve_keypair()[0].decode()}
    params = make_params(features={"CLUSTER": True, "BACKUP": seed % 3 != 0}, cluster={"members": [me]})
    run_random(params, seed, dispatch=True)


def run_random(params, seed, dispatch=False):
    rng = random.Random(seed)
    rig = new_rig(params, dispatch)
    active = set()
    for cycle in range(CYCLES):
        where = f"seed {seed} cycle {cycle}"
        if dispatch and rng.random() < 0.7:
            rig.node.sources["cluster"].put(rng.choice([-4000, -1000, 0, 1500, 4000]), rig.clock.monotonic(),
                                            valid_s=0.3, meta={"q_var": rng.choice([-6000, -2000, 0, 2500, 6000])})
        if rng.random() < (0.01 if dispatch else 0.04):  # dispatch: mostly running, to see it form the grid
            name = rng.choice(FAULTS)
            on = name not in active
            rig.fault(name, on)
            (active.add if on else active.discard)(name)
        submitted = [rng.random() < (0.05 if dispatch else 0.15) and random_command(rng)
                     for _ in range(rng.choice([1, 1, 2]))]
        if dispatch and cycle % 25 == 24:  # an operator releases the e-stop and acknowledges: back to run
            submitted += [{"type": "estop", "engaged": False}, {"type": "ack_error", "code": "all"}]
        submitted = [(raw, rig.node.commands.submit(raw).id) for raw in submitted if raw]
        prev = rig.node.decision
        rig.run(rig.period)
        acks = [(raw, rig.node.commands.ack_of(cmd_id)) for raw, cmd_id in submitted]
        assert all(a.final for _, a in acks), (where, acks)
        check_cycle(rig, acks, where, prev)
        if rig.node.exit_requested is not None:  # restart: the process exits, a new one starts
            finish_stop(rig, where + " (stopping)")
            rig.node.commands.close()
            rig = new_rig(params, dispatch)
            for name in active:
                rig.fault(name, True)


def new_rig(params, dispatch):
    rig = FaultyRig(params)
    if dispatch:  # a leader's reserve allocation: the node responds to its own frequency on top of the base
        rig.node.grid_services.allocate({"ffr": 3000.0, "fcr_d_up": 2000.0, "fcr_n": 1000.0},
                                        {"ffr": {"activation_hz": 49.5, "blocking_s": 5}}, term=1,
                                        now=rig.clock.monotonic(), valid_s=3600)
    return rig


def test_restart_from_error_under_estop_never_closes_the_contactors(make_params):
    """The review's case: e-stop, then restart: the stop must keep the contactors open, and so must the new process."""
    params = make_params()
    rig = Rig(params)
    rig.run(0.2)
    rig.command(type="set_power", p_w=3000)
    rig.run(1.0)
    assert rig.command(type="estop", engaged=True).status == "done"
    ack = rig.command(type="restart")
    assert ack.status == "done" and "contactors stay open" in ack.detail
    finish_stop(rig, "restart under e-stop")
    rig.node.commands.close()
    again = Rig(params)  # the new process finds ESTOP in errors.json
    for _ in range(10):
        again.run(again.period)
        assert again.node.decision.contactor_closed is False and again.plant.battery.contactor_closed is False


def test_an_inverter_that_ignores_writes_is_critical_and_the_contactors_open(make_params):
    rig = FaultyRig(make_params())
    rig.run(0.2)
    rig.command(type="set_power", p_w=3000, hold_s=600)
    rig.run(2.0)
    assert rig.plant.inverter.p_w == pytest.approx(3000)
    rig.ignores_writes = True
    rig.command(type="set_power", p_w=0, hold_s=600)  # the node now asks for 0 W; the inverter keeps 3 kW
    follow_s = rig.params.safety.follow_s
    took = rig.run_until(lambda: "INV_NOT_FOLLOWING" in rig.error_ids, follow_s + 2, "INV_NOT_FOLLOWING")
    lag_s = rig.params.safety.follow_lag_s  # the stop's 0 W may still be on its way for this long
    assert follow_s + lag_s - rig.period <= took <= follow_s + lag_s + 3 * rig.period
    rig.run(0.2)
    assert rig.node.states.state == "error"
    assert rig.node.decision.contactor_closed is False and rig.plant.battery.contactor_closed is False
    assert rig.plant.inverter.p_w == 0.0  # with the contactors open the inverter has nothing to draw from


def test_an_inverter_that_refuses_every_write_is_critical(make_params):
    rig = FaultyRig(make_params())
    rig.run(0.2)
    rig.refuses_writes = True  # it stays at 0 W: less than asked is only a warning, but the node cannot control it
    rig.command(type="set_power", p_w=3000, hold_s=600)
    follow_s = rig.params.safety.follow_s
    took = rig.run_until(lambda: "INV_NOT_FOLLOWING" in rig.error_ids, follow_s + 2, "INV_NOT_FOLLOWING")
    assert took <= follow_s + 3 * rig.period
    rig.run(0.2)
    assert rig.node.states.state == "error" and rig.plant.battery.contactor_closed is False


def test_a_lagging_inverter_ramping_down_raises_no_follow_error(make_params):
    """1.5 s late on every command, down from 5 kW at 500 W/s: always 750 W above the ramp, never an error."""
    rig = FaultyRig(make_params(safety={"ramp_w_per_s": 500}), lag_cycles=15)
    rig.run(0.2)
    rig.command(type="set_power", p_w=5000, hold_s=600)
    rig.run(15)
    assert rig.plant.inverter.p_w == pytest.approx(5000)
    rig.command(type="set_power", p_w=0, hold_s=600)
    for _ in range(150):
        rig.run(rig.period)
        assert not {"INV_NOT_FOLLOWING", "INV_UNDERDELIVERING"} & rig.error_ids
    assert rig.plant.inverter.p_w == pytest.approx(0) and rig.node.states.state == "run"


def test_an_inverter_that_delivers_less_than_asked_is_a_warning(make_params):
    rig = Rig(make_params())
    rig.run(0.2)
    rig.plant.inverter.rated_w = 2000  # derated: it can do 2 kW of the 3 kW asked
    rig.command(type="set_power", p_w=3000, hold_s=600)
    safety = rig.params.safety
    rig.run(safety.follow_lag_s + safety.follow_s + 1.5)  # the ramp's lower commands leave the window first
    assert "INV_UNDERDELIVERING" in rig.error_ids and "INV_NOT_FOLLOWING" not in rig.error_ids
    assert rig.node.states.state == "run"


def test_a_node_that_follows_raises_no_follow_error_through_steps_and_ramps(make_params):
    rig = Rig(make_params())
    rig.run(0.2)
    for p_w in (5000, -5000, 0, 3000, -1000):
        rig.command(type="set_power", p_w=p_w, hold_s=600)
        for _ in range(40):
            rig.run(rig.period)
            assert not {"INV_NOT_FOLLOWING", "INV_UNDERDELIVERING"} & rig.error_ids, p_w


def test_restart_from_error_with_only_latched_errors_keeps_the_contactors_open(make_params):
    """E-stop, then an inverter outage latches INV_STALE (severity error); the e-stop is released and
    acknowledged, INV_STALE is not: the node stays in error with no critical error listed. A restart
    from there must not close the contactors on its way out."""
    rig = Rig(make_params())
    rig.run(0.2)
    rig.command(type="set_power", p_w=3000)
    rig.run(1.0)
    rig.command(type="estop", engaged=True)
    rig.devices.inverter.silent = True
    rig.run_until(lambda: "INV_STALE" in rig.error_ids, 10, "INV_STALE")
    rig.devices.inverter.silent = False
    rig.run(1.0)
    rig.command(type="estop", engaged=False)
    assert rig.command(type="ack_error", code="ESTOP").status == "done"
    assert rig.node.states.state == "error" and rig.node.errors.run_blocker() is None
    assert rig.node.decision.contactor_closed is False
    ack = rig.command(type="restart")
    assert ack.status == "done" and "contactors stay open" in ack.detail, ack
    assert rig.node.decision.contactor_closed is False
    finish_stop(rig, "restart from error")
    for _ in range(3):
        rig.run(rig.period)
        assert rig.plant.battery.contactor_closed is False
