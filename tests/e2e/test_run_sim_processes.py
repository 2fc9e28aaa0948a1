"""scripts/run-sim: a simulator process and a node process, as in the field."""
from __future__ import annotations

import json
import os
import signal
import time

import pytest

from tests.e2e.run_sim import alive, run_sim  # noqa: F401  (fixture)
from tests.util import isolated_example, wait_until

pytestmark = pytest.mark.slow


def test_node_and_simulator_are_separate_processes_and_a_killed_node_comes_back(run_sim):  # noqa: F811
    rs = run_sim("sim_node1.json", "--soc", "0.35")
    status = rs.wait_status(lambda s: s["state"] == "run", 30, "node in run")
    assert status["soc"] == pytest.approx(0.35, abs=0.006)  # from --soc (the file says 0.6), read over SLCAN
    assert status["battery"]["racks_online"] == 2
    sim_pid, (node_pid,) = rs.sim_pid(), rs.node_pids()
    assert len({sim_pid, node_pid, rs.proc.pid}) == 3 and alive(sim_pid) and alive(node_pid)

    r = rs.cli("setpoint", "--w", "-2000", "--endpoint", rs.endpoint)
    assert r.returncode == 0, r.stdout + r.stderr
    try:
        wait_until(lambda: rs.plant()["p_w"] < -1990, 5, 0.05, "the simulated inverter charging at 2 kW")
    except AssertionError:
        raise AssertionError(f"{rs.plant()}\n{rs.status()}\n{r.stdout}") from None
    os.kill(node_pid, signal.SIGKILL)
    wait_until(lambda: not alive(node_pid), 5, 0.02, "the node gone")
    plant = rs.plant()  # the simulator still answers, with its battery as it was
    assert rs.sim_pid() == sim_pid and plant["soc"] == pytest.approx(0.35, abs=0.006) and plant["soc"] > 0.35
    new = wait_until(lambda: [p for p in rs.node_pids() if p != node_pid], 15, 0.1, "the node started again")
    status = rs.wait_status(lambda s: s["state"] == "run" and s["soc"] is not None, 30, "the new node in run")
    assert abs(status["soc"] - rs.plant()["soc"]) < 0.006  # the new node sees the SOC the simulator kept
    assert "node exited (killed by SIGKILL); the simulator keeps running" in rs.output()
    assert alive(new[0]) and rs.sim_pid() == sim_pid

    t0 = time.monotonic()
    rs.proc.send_signal(signal.SIGTERM)
    assert rs.proc.wait(10) == 0, rs.output()
    took = time.monotonic() - t0
    assert not alive(new[0]) and not alive(sim_pid)
    out = rs.output()
    assert out.index("stopped (exit status 0)") < out.index("simulator stopped"), "the node stops first"
    assert "Traceback" not in out
    assert took < 4.0, f"stopping both took {took:.2f} s"


def test_ctrl_c_stops_the_node_in_order_and_then_the_simulator(run_sim):  # noqa: F811
    rs = run_sim()
    rs.wait_status(lambda s: s["state"] == "run", 30, "node in run")
    sim_pid, (node_pid,) = rs.sim_pid(), rs.node_pids()
    os.killpg(rs.proc.pid, signal.SIGINT)  # what a terminal does: the whole foreground group gets it
    assert rs.proc.wait(10) == 0, rs.output()
    out = rs.output()
    assert "stopping: ramping to 0 W" in out and out.index("stopped (exit status 0)") < out.index("simulator stopped")
    assert not alive(sim_pid) and not alive(node_pid) and "Traceback" not in out


def test_nothing_is_left_running_when_run_sim_itself_is_killed(run_sim):  # noqa: F811
    rs = run_sim()
    rs.wait_status(lambda s: s["state"] == "run", 30, "node in run")
    sim_pid, (node_pid,) = rs.sim_pid(), rs.node_pids()
    os.kill(rs.proc.pid, signal.SIGKILL)  # only the supervisor
    wait_until(lambda: not alive(sim_pid) and not alive(node_pid), 10, 0.05, "simulator and node gone")


def test_a_second_run_sim_on_the_same_file_is_one_clear_line(run_sim):  # noqa: F811
    first = run_sim()
    first.wait_status(lambda s: s["state"] == "run", 30, "node in run")
    second = run_sim(params_file=first.params_file)
    assert second.proc.wait(20) == 1
    out = second.output()
    assert f"a simulator (pid {first.sim_pid()}, {first.params_file}) already answers on {first.sim_endpoint}" in out
    assert "Traceback" not in out and first.status()["state"] == "run"


def test_run_sim_resolves_params_against_the_callers_directory(run_sim, tmp_path):  # noqa: F811
    params_file = tmp_path / "mine.json"
    params_file.write_text(json.dumps(isolated_example("sim_node1.json", tmp_path)))
    rs = run_sim(params_file=params_file, cwd=tmp_path, params_arg="mine.json")
    rs.wait_status(lambda s: s["state"] == "run", 30, "node in run")


def test_a_commanded_restart_starts_the_node_again_against_the_same_simulator(run_sim):  # noqa: F811
    rs = run_sim()
    rs.wait_status(lambda s: s["state"] == "run", 30, "node in run")
    sim_pid, (node_pid,) = rs.sim_pid(), rs.node_pids()
    r = rs.cli("restart", "--endpoint", rs.endpoint)
    assert r.returncode == 0, r.stdout + r.stderr
    wait_until(lambda: len(rs.node_pids()) == 2, 15, 0.1, "the node started again")
    rs.wait_status(lambda s: s["state"] == "run", 30, "the new node in run")
    assert "node exited (exit status 75)" in rs.output() and rs.sim_pid() == sim_pid and not alive(node_pid)


def test_no_restart_leaves_the_node_down_and_the_simulator_up(run_sim):  # noqa: F811
    rs = run_sim("sim_node1.json", "--no-restart")
    rs.wait_status(lambda s: s["state"] == "run", 30, "node in run")
    sim_pid, (node_pid,) = rs.sim_pid(), rs.node_pids()
    os.kill(node_pid, signal.SIGKILL)
    wait_until(lambda: "node exited (killed by SIGKILL); the simulator keeps running" in rs.output(), 10, 0.05,
               "run-sim noticing")
    assert rs.proc.poll() is None and rs.sim_pid() == sim_pid and rs.node_pids() == [node_pid]
    rs.proc.send_signal(signal.SIGTERM)
    assert rs.proc.wait(10) == 0 and not alive(sim_pid)


def test_a_device_port_taken_by_another_program_is_one_line_naming_it(run_sim, tmp_path):  # noqa: F811
    import socket

    data = isolated_example("sim_node1.json", tmp_path)
    params_file = tmp_path / "taken.json"
    params_file.write_text(json.dumps(data))
    port = data["devices"]["meter"]["port"]
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", port))
        holder.listen()
        rs = run_sim(params_file=params_file)
        assert rs.proc.wait(20) == 1
    out = rs.output()
    assert f"cannot start: simulated meter cannot listen on 127.0.0.1:{port}: held by pid {os.getpid()}" in out
    assert "Traceback" not in out and not rs.node_pids(), out
