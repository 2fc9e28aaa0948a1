"""Start real `sitecontroller run` processes; always stop them and free their ports."""
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.util import REPO, isolated_example, wait_until

CLI = [sys.executable, "-m", "sitecontroller.cli"]


class NodeProcess:
    def __init__(self, params_file: Path, endpoint: str, log: Path):
        self.params_file, self.endpoint, self.log = params_file, endpoint, log
        self._log_f = open(log, "w")
        # the README's main command, as a newcomer runs it (it adds --simulate --summary)
        self.proc = subprocess.Popen(
            ["bash", str(REPO / "scripts" / "run-sim"), "--params", str(params_file)],
            stdout=self._log_f, stderr=subprocess.STDOUT, cwd=REPO, start_new_session=True,
        )

    def cli(self, *args, timeout=10):
        return subprocess.run(CLI + list(args) + ["--endpoint", self.endpoint], capture_output=True, text=True,
                              cwd=REPO, timeout=timeout)

    def status(self):
        r = self.cli("status", "--json")
        return json.loads(r.stdout) if r.returncode == 0 else None

    def wait_status(self, predicate, timeout_s=10.0, what="status"):
        def check():
            s = self.status()
            return s if s is not None and predicate(s) else None
        return wait_until(check, timeout_s, 0.1, what)

    def output(self):
        self._log_f.flush()
        return self.log.read_text()

    def kill(self):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)
        self._log_f.close()


@pytest.fixture
def node_params(tmp_path):
    """Write a parameter file for one node with its own port, endpoint and data directory."""

    def make(example="sim_node1.json", **overrides):
        data = isolated_example(example, tmp_path, **overrides)
        path = tmp_path / f"params-{len(list(tmp_path.glob('params-*')))}.json"
        path.write_text(json.dumps(data))
        return path, data["control"]["endpoint"]

    return make


@pytest.fixture
def start_node(tmp_path):
    started = []

    def start(params_file, endpoint):
        node = NodeProcess(params_file, endpoint, tmp_path / f"node-{len(started)}.log")
        started.append(node)
        return node

    yield start
    for node in started:
        node.kill()
