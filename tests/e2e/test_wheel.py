"""The wheel installs into a fresh virtual environment outside the repository and runs from there.

The wheel is built without build isolation (setuptools and wheel come from the locked test
environment: no network). Its dependencies are not downloaded again: the fresh environment sees
the test environment's site-packages through a .pth line (measured: about 3 s for the whole set-up,
against about 20 s and PyPI for installing requirements.lock). A plain path line in a .pth does not
run the editable install's hook, so `sitecontroller` in the fresh environment is the wheel's copy
(the test checks that).
"""
import json
import os
import signal
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from tests.util import REPO, isolated_example, wait_until

pytestmark = pytest.mark.slow

DATA_SUFFIXES = (".toml", ".dbc", ".md", ".json")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    "-w", str(out), str(REPO)], check=True, capture_output=True, timeout=300)
    (built,) = out.glob("bess_controller-*.whl")
    return built


@pytest.fixture(scope="module")
def venv(wheel, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("venv") / "env"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True, timeout=120)
    py = root / "bin" / "python"
    site = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    Path(site, "test-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "-q", "--no-deps", "--no-index",
                    str(wheel)], check=True, capture_output=True, timeout=300)
    return root


def test_the_wheel_holds_every_data_file_of_the_packages(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    wanted = {
        str(p.relative_to(REPO)) for top in ("sitecontroller", "mastercontroller", "bootstrapper")
        for p in (REPO / top).rglob("*") if p.suffix in DATA_SUFFIXES and "__pycache__" not in p.parts
    }
    assert wanted and wanted <= names, f"missing from the wheel: {sorted(wanted - names)}"
    assert not any(n.startswith(("tests/", "bench/")) for n in names)


def _run(venv: Path, *args, cwd: Path, timeout=60):
    return subprocess.run([str(venv / "bin" / "sitecontroller"), *args], capture_output=True, text=True, cwd=cwd,
                          timeout=timeout, env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})


def test_the_installed_package_is_the_wheel_not_the_repository(venv, tmp_path):
    r = subprocess.run([str(venv / "bin" / "python"), "-c", "import sitecontroller; print(sitecontroller.__file__)"],
                       capture_output=True, text=True, cwd=tmp_path, check=True)
    assert Path(r.stdout.strip()).is_relative_to(venv), r.stdout


@pytest.mark.parametrize("example", ["sim_node1_inproc.json", "sim_node1.json"])
def test_check_params_and_a_short_simulated_run_outside_the_repository(venv, tmp_path, example):
    work = tmp_path / "elsewhere"
    work.mkdir()
    data = isolated_example(example, tmp_path)
    data["storage"] = {"data_dir": "data/{node_id}"}  # relative: beside the parameter file, outside the repo
    (work / "node.json").write_text(json.dumps(data))
    r = _run(venv, "check-params", "node.json", cwd=work)
    assert r.returncode == 0 and r.stdout.startswith("node.json: ok"), r.stderr
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["SITECONTROLLER_RUN_DIR"] = str(tmp_path / "run")
    log = open(tmp_path / "node.out", "w")
    proc = subprocess.Popen([str(venv / "bin" / "sitecontroller"), "run", "--simulate", "--params", "node.json"],
                            cwd=work, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    endpoint = data["control"]["endpoint"]
    try:
        def running():
            if proc.poll() is not None:
                raise AssertionError(f"the node exited with {proc.returncode}: {(tmp_path / 'node.out').read_text()}")
            r = _run(venv, "status", "--json", "--endpoint", endpoint, cwd=work, timeout=10)
            return r.returncode == 0 and json.loads(r.stdout)["state"] == "run"

        wait_until(running, 40, 0.2, "the wheel's node in run")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
        log.close()
    out = (tmp_path / "node.out").read_text()
    assert "Traceback" not in out, out
    assert (work / "data" / "node1" / "node.log").is_file()
    assert not (REPO / "data").exists()
