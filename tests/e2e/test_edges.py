"""What a new user hits with `scripts/run-sim`: a second start, a relative --params, a node found with no flags."""
import json

import os
import shutil
import signal
import subprocess

import psutil
import pytest

from tests.e2e.conftest import CLI, NodeProcess
from tests.util import REPO, isolated_example, wait_until

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
    # run-sim starts the simulator first: it is the one that finds its ports taken, and names the holder
    holders = {first.proc.pid} | {c.pid for c in psutil.Process(first.proc.pid).children(recursive=True)}
    assert lines[0].startswith("sitecontroller.sim: cannot start: a simulator (pid "), lines[0]
    assert any(f"(pid {pid}, " in lines[0] for pid in holders), (lines[0], holders)
    assert "already answers on tcp://127.0.0.1:" in lines[0]
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


def _full_disk_node(tmp_path, node_params, start_node, files):
    """A node whose `files` in the data directory sit on a full disk (symlinks to /dev/full: ENOSPC)."""
    params_file, endpoint = node_params("sim_node1_inproc.json")
    data_dir = tmp_path / "node1"  # isolated_example puts the data directory at <tmp>/{node_id}
    data_dir.mkdir(exist_ok=True)
    for name in files:
        (data_dir / name).symlink_to("/dev/full")
    node = start_node(params_file, endpoint)
    node.wait_status(lambda s: s["state"] == "run", 30, "node in run")
    return node


def test_a_full_disk_under_the_log_file_degrades_to_one_warning_and_sigterm_exits_0(tmp_path, node_params,
                                                                                    start_node):
    node = _full_disk_node(tmp_path, node_params, start_node, ["node.log"])
    for w in (1000, -1000, 0):  # commands log lines: each is a record the full disk refuses
        assert node.cli("setpoint", "--w", str(w)).returncode == 0
    node.wait_status(lambda s: s["state"] == "run", 10, "still in run")
    node.proc.send_signal(signal.SIGTERM)
    assert node.proc.wait(10) == 0
    out = node.output()
    assert out.count("WARNING cannot write the log file") == 1 and "Traceback" not in out, out


def _can_mount_tmpfs(tmp_path) -> bool:
    (tmp_path / "probe").mkdir()
    r = subprocess.run(["unshare", "-m", "mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(tmp_path / "probe")],
                       capture_output=True, timeout=10)
    return r.returncode == 0


def test_a_disk_that_fills_while_running_keeps_control_and_sigterm_exits_0(tmp_path, node_params):
    """A real full file system: the node's data directory on a 2 MB tmpfs in its own mount namespace,
    filled up from outside (through /proc/PID/root) while the node runs."""
    if shutil.which("unshare") is None or not _can_mount_tmpfs(tmp_path):
        pytest.skip("needs unshare -m and tmpfs mounts (root in a sandbox that allows them)")
    params_file, endpoint = node_params("sim_node1_inproc.json")
    data_dir = tmp_path / "node1"  # isolated_example puts the data directory at <tmp>/{node_id}
    data_dir.mkdir()
    script = f'mount -t tmpfs -o size=2m tmpfs "{data_dir}" && exec "$@"'
    log = open(tmp_path / "node.out", "w")
    proc = subprocess.Popen(["unshare", "-m", "bash", "-c", script, "-", *CLI, "run", "--simulate", "--params",
                             str(params_file)],
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    node = NodeProcess.__new__(NodeProcess)
    node.endpoint, node.proc, node.log, node._log_f = endpoint, proc, tmp_path / "node.out", log
    try:
        node.wait_status(lambda s: s["state"] == "run", 30, "node in run")
        with open(f"/proc/{proc.pid}/root{data_dir}/fill", "wb", buffering=0) as fill:  # the node's view
            with pytest.raises(OSError):
                while True:
                    fill.write(b"\0" * 65536)
        # each command writes an audit line and log records, all refused once the log's last page is full
        for i in range(16):
            r = node.cli("setpoint", "--w", str(1000 if i % 2 else -1000))
            assert r.returncode == 0, r.stdout + r.stderr
        node.wait_status(lambda s: s["state"] == "run" and abs(s["setpoint_w"]) > 0, 10, "control goes on")
        wait_until(lambda: "WARNING cannot write the log file" in node.output(), 10, 0.1, "the log file warning")
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(10)
        out = node.output()
        assert out.count("WARNING cannot write the log file") == 1 and "Traceback" not in out, out
        assert code == 0, out
    finally:
        node.kill()
