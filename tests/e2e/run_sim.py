"""`scripts/run-sim` as a test fixture: the supervisor, its simulator and node processes, always cleaned up."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from sitecontroller.sim.endpoint import SimUnreachable, sim_request
from tests.util import REPO, isolated_example, wait_until

CLI = [sys.executable, "-m", "sitecontroller.cli"]


def alive(pid: int) -> bool:
    """True while `pid` runs (a zombie counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


class RunSim:
    def __init__(self, tmp_path: Path, name: str, params_file: Path, *args: str, cwd: Path = REPO,
                 params_arg: str | None = None):
        self.params_file = params_file
        self.data = json.loads(params_file.read_text())
        self.endpoint = self.data["control"]["endpoint"]
        self.sim_endpoint = self.data["simulation"]["endpoint"]
        self.log = tmp_path / f"{name}.log"
        self._log_f = open(self.log, "w")
        self.proc = subprocess.Popen(
            ["bash", str(REPO / "scripts" / "run-sim"), "--params", params_arg or str(params_file), *args],
            stdout=self._log_f, stderr=subprocess.STDOUT, cwd=cwd, start_new_session=True)

    def output(self) -> str:
        self._log_f.flush()
        return self.log.read_text()

    def cli(self, *args: str, timeout: float = 10) -> subprocess.CompletedProcess:
        return subprocess.run(CLI + list(args), capture_output=True, text=True, cwd=REPO, timeout=timeout)

    def status(self) -> dict | None:
        r = self.cli("status", "--json", "--endpoint", self.endpoint)
        return json.loads(r.stdout) if r.returncode == 0 else None

    def wait_status(self, predicate, timeout_s: float, what: str) -> dict:
        def check():
            s = self.status()
            return s if s is not None and predicate(s) else None
        return wait_until(check, timeout_s, 0.1, what)

    def sim(self, op: str, **kw) -> dict:
        return sim_request(self.sim_endpoint, {"op": op, **kw})

    def plant(self) -> dict:
        return self.sim("plant")["plant"]

    def sim_pid(self) -> int | None:
        """The simulator's pid once all its devices listen."""
        try:
            reply = self.sim("ping")
        except SimUnreachable:
            return None
        return reply["pid"] if reply["ready"] else None

    def node_pids(self) -> list[int]:
        return [int(p) for p in re.findall(r"run-sim: node running \(pid (\d+)\)", self.output())]

    def kill(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(5)
        self._log_f.close()


@pytest.fixture
def run_sim(tmp_path):
    """start(example="sim_node1.json", *run_sim_args, **overrides) -> RunSim on free ports."""
    started: list[RunSim] = []

    def start(example: str = "sim_node1.json", *args: str, params_file: Path | None = None, cwd: Path = REPO,
              params_arg: str | None = None, **overrides) -> RunSim:
        if params_file is None:
            params_file = tmp_path / f"params-{len(started)}.json"
            params_file.write_text(json.dumps(isolated_example(example, tmp_path, **overrides)))
        rs = RunSim(tmp_path, f"run-sim-{len(started)}", params_file, *args, cwd=cwd, params_arg=params_arg)
        started.append(rs)
        return rs

    yield start
    for rs in started:
        rs.kill()
