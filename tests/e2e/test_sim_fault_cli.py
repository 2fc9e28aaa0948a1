"""`sitecontroller sim faults|fault|state` against the simulator process scripts/run-sim starts."""
from __future__ import annotations

import json

import pytest

from tests.e2e.run_sim import run_sim  # noqa: F401  (fixture)
from tests.util import free_tcp_port, wait_until

pytestmark = pytest.mark.slow


def test_faults_are_listed_set_seen_by_the_node_and_cleared(run_sim):  # noqa: F811
    rs = run_sim()
    rs.wait_status(lambda s: s["state"] == "run", 30, "node in run")
    where = ["--params", str(rs.params_file)]

    r = rs.cli("sim", "faults", *where)
    assert r.returncode == 0, r.stderr
    for device, knob in [("bms", "silent"), ("inverter", "reject_writes"), ("meter", "silent"),
                         ("battery", "cell_v_fault_v"), ("grid", "freq_offset_hz")]:
        assert any(line.split()[:2] == [device, knob] for line in r.stdout.splitlines()), (device, knob, r.stdout)
    listed = json.loads(rs.cli("sim", "faults", "--json", *where).stdout)
    assert all(k["help"] for k in listed)

    # a cell over-voltage in the simulated battery: the node sees it over CAN and goes to error
    r = rs.cli("sim", "fault", "battery", "cell_v_fault_v", "0.5", *where)
    assert (r.returncode, r.stdout.strip()) == (0, "battery cell_v_fault_v = 0.5"), r.stderr
    status = rs.wait_status(lambda s: s["state"] == "error", 10, "node in error")
    assert "CELL_OVERVOLTAGE" in {e["id"] for e in status["errors"]}
    r = rs.cli("sim", "fault", "--clear", *where)
    assert (r.returncode, r.stdout.strip()) == (0, "cleared: battery cell_v_fault_v")

    def acknowledged_and_running():
        rs.cli("ack-error", "all", "--endpoint", rs.endpoint)
        s = rs.status()
        return s is not None and s["state"] == "run"
    wait_until(acknowledged_and_running, 15, 0.3, "node back in run after clear + acknowledge")

    # one rack falls silent
    assert rs.cli("sim", "fault", "bms", "silent", "1", *where).stdout.strip() == "bms silent = 1"
    rs.wait_status(lambda s: s["battery"]["racks_online"] == 1, 10, "one rack offline")
    assert rs.cli("sim", "fault", "--clear", *where).stdout.strip() == "cleared: bms silent"
    rs.wait_status(lambda s: s["battery"]["racks_online"] == 2, 10, "both racks back")

    state = json.loads(rs.cli("sim", "state", "--json", *where).stdout)
    assert 0 <= state["soc"] <= 1 and "contactor_closed" in state
    assert rs.cli("sim", "fault", "--clear", *where).stdout.strip() == "cleared: no knob was set"


def test_mistakes_are_one_line(run_sim):  # noqa: F811
    rs = run_sim()
    wait_until(rs.sim_pid, 30, 0.1, "the simulator")
    where = ["--params", str(rs.params_file)]
    for args, code, says in [
        (["bms", "nope"], 1, "bms has no knob 'nope'; its knobs: silent, alive_frozen"),
        (["bms", "silent", "9"], 1, "allowed: all, none, or rack numbers 0..1"),
        (["pump", "silent"], 1, "no simulated device 'pump'"),
        ([], 2, "DEVICE and KNOB are needed (or --clear)"),
        (["--clear", "bms"], 2, "either --clear or DEVICE KNOB"),
    ]:
        r = rs.cli("sim", "fault", *args, *where)
        assert r.returncode == code and says in r.stderr and r.stderr.count("\n") == 1, (args, r.stderr)
    r = rs.cli("sim", "faults", "--endpoint", f"tcp://127.0.0.1:{free_tcp_port()}")
    assert r.returncode == 1 and "did not answer within 2 s" in r.stderr and r.stderr.count("\n") == 1
