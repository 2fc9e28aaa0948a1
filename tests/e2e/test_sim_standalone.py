"""`python -m sitecontroller.sim` serves a parameter file's devices to other processes."""
import json
import signal
import subprocess
import sys
import urllib.request

import pytest

from tests.e2e.conftest import REPO
from tests.util import wait_until

pytestmark = pytest.mark.slow


def test_standalone_simulators_answer_other_processes(node_params, tmp_path):
    params_file, _ = node_params("sim_node2_pylontech_lux_p1.json")
    data = json.loads(params_file.read_text())
    meter_port = data["devices"]["meter"]["port"]
    log = open(tmp_path / "sim.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "sitecontroller.sim", "--params", str(params_file)],
                            cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        def p1():
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{meter_port}/api/v1/data", timeout=1) as r:
                    return json.loads(r.read())
            except OSError:
                return None

        body = wait_until(p1, 15, 0.1, "the simulated P1 meter answering")
        assert isinstance(body["active_power_w"], (int, float))
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(5) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        log.close()
    out = (tmp_path / "sim.log").read_text()
    assert "serving simulated meter (homewizard_p1)" in out and "Traceback" not in out


def test_standalone_simulators_reject_a_bad_file(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    r = subprocess.run([sys.executable, "-m", "sitecontroller.sim", "--params", str(bad)], cwd=REPO,
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "$.identity: found nothing" in r.stderr and "Traceback" not in r.stderr
