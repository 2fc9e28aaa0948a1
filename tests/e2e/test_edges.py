"""What a new user hits with `scripts/run-sim`: a second start, a relative --params, a node found with no flags."""
import json
import os
import shutil
import signal
import subprocess

import pytest

from tests.e2e.conftest import CLI, NodeProcess
from tests.util import REPO, isolated_example

pytestmark = pytest.mark.slow


def test_starting_the_same_node_twice_is_one_line_naming_ports_and_holder(node_params, start_node):
    params_file, endpoint = node_params()
    first = start_node(params_file, endpoint)
    first.wait_status(lambda s: s["state"] == "run", 30, "first node in run")
    second = start_node(params_file, endpoint)
    assert second.proc.wait(30) == 1
    out = second.output()
    lines = [line for line in out.splitlines() if not line.startswith("[setup]")]
    assert len(lines) == 1, out
    assert lines[0].startswith(f"sitecontroller: cannot start: ports {endpoint.removeprefix('tcp://')} "
                               f"(control.endpoint), ")
    assert f"are in use by pid {first.proc.pid} (" in lines[0]
    assert first.status()["state"] == "run"  # the running node is unharmed


def test_run_sim_params_is_relative_to_the_callers_directory(tmp_path, monkeypatch):
    """`cd elsewhere && scripts/run-sim --params node.json`; its relative data_dir lands beside the file."""
    work = tmp_path / "elsewhere"
    work.mkdir()
    data = isolated_example("sim_node1_inproc.json", tmp_path)
    data["storage"] = {"data_dir": "state/{node_id}"}
    (work / "node.json").write_text(json.dumps(data))
    run_dir = tmp_path / "run"
    env = {**os.environ, "SITECONTROLLER_RUN_DIR": str(run_dir)}
    log = open(tmp_path / "node.log", "w")
    proc = subprocess.Popen(["bash", str(REPO / "scripts" / "run-sim"), "--params", "node.json"], cwd=work,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env)
    node = NodeProcess.__new__(NodeProcess)
    node.endpoint, node.proc, node.log, node._log_f = data["control"]["endpoint"], proc, tmp_path / "node.log", log
    try:
        node.wait_status(lambda s: s["state"] == "run", 30, "node in run")
        assert (work / "state" / "node1" / "node.log").is_file()
        # with no flags, the CLI finds the only running node through the run directory
        r = subprocess.run(CLI + ["status", "--json"], capture_output=True, text=True, cwd=tmp_path, env=env,
                           timeout=10)
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["node_id"] == "node1"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
        assert not list(run_dir.glob("*.json")), "the node removes its entry when it stops"
    finally:
        node.kill()


@pytest.mark.skipif(shutil.which("head") is None, reason="needs head")
def test_status_piped_into_head_is_not_a_traceback(node_params, start_node):
    params_file, endpoint = node_params("sim_node1_inproc.json")
    node = start_node(params_file, endpoint)
    node.wait_status(lambda s: s["state"] == "run", 30, "node in run")
    cmd = " ".join(CLI) + f" status --endpoint {endpoint} | head -n 1"
    r = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, cwd=REPO, timeout=10)
    assert r.stdout.startswith("node1 ") and "Traceback" not in r.stderr, r.stderr
