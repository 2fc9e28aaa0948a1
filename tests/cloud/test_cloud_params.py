"""The `cloud` parameter section: validated like every other (unknown keys are errors), paths relative
to the parameter file, unusable files one clear line and exit 2 in `check-params`; at run time a node
with unusable cloud files runs without cloud and says so in status."""
import json
import subprocess
import sys

import pytest

from sitecontroller import params as site_params
from sitecontroller.cloud.config import file_problems
from tests.util import REPO, isolated_example

CLI = [sys.executable, "-m", "sitecontroller.cli"]
GOOD_CS = "HostName=hub.example;DeviceId=node1;SharedAccessKey=QUJDRA==\n"


def _write(tmp_path, cloud, name="p.json"):
    data = isolated_example("sim_node1.json", tmp_path)
    data["cloud"] = cloud
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return path


def _check(path):
    return subprocess.run(CLI + ["check-params", str(path)], capture_output=True, text=True, cwd=REPO, timeout=30)


def test_relative_paths_are_relative_to_the_parameter_file(tmp_path):
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "node1.cs").write_text(GOOD_CS)
    params = site_params.load(_write(tmp_path, {"connection_string_file": "secrets/node1.cs"}))
    assert params.cloud.connection_string_file == str(tmp_path / "secrets" / "node1.cs")
    assert params.cloud.telemetry_interval_s == 10 and params.cloud.offline_queue.max_age_s == 604800
    assert file_problems(params) == []
    r = _check(tmp_path / "p.json")
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("cloud, fragment", [
    ({"connection_string_file": "x.cs", "colour": 1}, "$.cloud.colour"),
    ({"connection_string_file": "x.cs", "telemetry_interval_s": 0.5}, "$.cloud.telemetry_interval_s"),
    ({"connection_string_file": "x.cs", "offline_queue": {"max_mb": 0}}, "$.cloud.offline_queue.max_mb"),
    ({}, "$.cloud.connection_string_file"),
])
def test_bad_cloud_sections_name_the_field(tmp_path, cloud, fragment):
    r = _check(_write(tmp_path, cloud))
    assert r.returncode == 2 and fragment in r.stderr, r.stderr


@pytest.mark.parametrize("cs, ca, fragment", [
    (None, None, "$.cloud.connection_string_file: cannot read"),
    ("HostName=h;DeviceId=node1\n", None, "missing: SharedAccessKey"),
    (GOOD_CS, "not a certificate", "$.cloud.ca_cert_file"),
])
def test_unusable_files_are_one_clear_line_and_exit_2(tmp_path, cs, ca, fragment):
    cloud = {"connection_string_file": "node1.cs"}
    if cs is not None:
        (tmp_path / "node1.cs").write_text(cs)
    if ca is not None:
        (tmp_path / "ca.pem").write_text(ca)
        cloud["ca_cert_file"] = "ca.pem"
    r = _check(_write(tmp_path, cloud))
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and fragment in lines[0], r.stderr
    assert "QUJDRA" not in r.stderr  # the key is never printed


@pytest.mark.slow
def test_a_node_with_unusable_cloud_files_runs_without_cloud_and_says_so(tmp_path, emulator, cloud_node):
    hub = emulator()
    node = cloud_node(hub, connection_string_file=str(tmp_path / "missing.cs"))
    s = node.wait_status(lambda s: s["state"] == "run" and s.get("cloud"), 60, "node in run")
    assert s["cloud"]["connected"] is False and "running without cloud" in s["cloud"]["problem"]
    assert "missing.cs" in s["cloud"]["problem"]
