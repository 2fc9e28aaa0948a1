"""End to end: a real `sitecontroller run` process, driven through the CLI."""
import signal
import time

import psutil
import pytest

pytestmark = pytest.mark.slow


def test_status_setpoint_and_orderly_stop(node_params, start_node):
    """scripts/run-sim: a node with simulated BMS (CAN), inverter (SunSpec) and meter (EM24)."""
    params_file, endpoint = node_params()
    node = start_node(params_file, endpoint)
    status = node.wait_status(lambda s: s["state"] == "run" and s["grid_p_w"] is not None, 30, "node in run")
    for key in ("node_id", "state", "soc", "p_w", "grid_p_w", "errors", "cycle"):
        assert key in status
    assert status["node_id"] == "node1" and 0 <= status["soc"] <= 1
    assert set(status["cycle"]) >= {"period_ms_p50", "period_ms_p99", "overruns"}
    # the SOC came from BMS frames (two racks on the CAN bus), the power from the inverter over Modbus
    assert status["battery"]["racks_online"] == 2 and status["devices"]["bms"]["frames_decoded"] > 0
    assert status["devices"]["inverter"]["polls"] > 0 and status["devices"]["meter"]["readings"] > 0
    assert abs(status["p_w"]) < 1
    soc_before, grid_before = status["soc"], status["grid_p_w"]

    r = node.cli("setpoint", "--w", "3000")
    t_cmd = time.monotonic()
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("set_power done")
    status = node.wait_status(lambda s: abs(s["p_w"] - 3000) < 30, 2.5, "inverter at 3000 W")
    assert time.monotonic() - t_cmd < 2.5  # within 2 s, plus the time one status call takes
    # the grid import falls by the same amount (load and PV drift a little meanwhile)
    status = node.wait_status(lambda s: abs(s["grid_p_w"] - (grid_before - 3000)) < 300, 3, "grid import -3000 W")
    # and the battery empties: 3 kW out of 10 kWh is 0.0001 SOC every 1.2 s
    node.wait_status(lambda s: s["soc"] < soc_before - 0.0002, 20, "SOC falling")

    t0 = time.monotonic()
    node.proc.send_signal(signal.SIGTERM)
    code = node.proc.wait(5)
    took = time.monotonic() - t0
    assert code == 0, node.output()
    assert took < 2.0, f"orderly stop took {took:.2f} s"
    out = node.output()
    assert "stopping: ramping to 0 W" in out and "stopped (exit status 0)" in out
    assert "Traceback" not in out
    # nothing left listening on the endpoint
    assert node.cli("status", timeout=10).returncode == 1


def test_cli_rejections_say_why(node_params, start_node):
    params_file, endpoint = node_params()
    node = start_node(params_file, endpoint)
    node.wait_status(lambda s: s["state"] == "run", 20, "node in run")
    r = node.cli("setpoint", "--w", "99999")
    assert r.returncode == 1 and "rejected" in r.stdout and "rating" in r.stdout
    r = node.cli("ack-error", "NOPE")
    assert r.returncode == 1 and "no listed error 'NOPE'" in r.stdout
    r = node.cli("state", "sleep")
    assert r.returncode == 0 and "run -> sleep" in r.stdout
    r = node.cli("setpoint", "--w", "100")
    assert r.returncode == 1 and "power is exchanged only in run" in r.stdout
    node.proc.send_signal(signal.SIGINT)
    assert node.proc.wait(5) == 0


def test_status_of_a_node_that_is_not_running_fails_in_one_line(node_params, tmp_path):
    from tests.e2e.conftest import CLI, REPO
    import subprocess

    _, endpoint = node_params()
    t0 = time.monotonic()
    r = subprocess.run(CLI + ["status", "--endpoint", endpoint], capture_output=True, text=True, cwd=REPO, timeout=10)
    assert r.returncode == 1
    assert r.stderr.strip().count("\n") == 0 and "did not answer within 2 s" in r.stderr
    assert time.monotonic() - t0 < 5


def test_a_second_node_on_a_taken_endpoint_fails_with_one_clear_line(node_params, start_node):
    params_file, endpoint = node_params("sim_node1_inproc.json")
    first = start_node(params_file, endpoint)
    first.wait_status(lambda s: s["state"] == "run", 20, "first node in run")
    other_file, _ = node_params("sim_node1_inproc.json", control={"endpoint": endpoint})
    second = start_node(other_file, endpoint)
    assert second.proc.wait(20) == 1
    out = second.output()
    holders = {first.proc.pid} | {c.pid for c in psutil.Process(first.proc.pid).children(recursive=True)}
    assert any(f"cannot start: port {endpoint.removeprefix('tcp://')} (control.endpoint) is in use by pid {pid} ("
               in out for pid in holders), (out, holders)
    assert "Traceback" not in out
    assert first.status()["state"] == "run"  # the running node is unharmed
