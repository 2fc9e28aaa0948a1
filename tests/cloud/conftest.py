"""The IoT Hub emulator in its own process on a loopback address of its own (the SDK's ports 8883 and
443 are fixed, so parallel tests differ by address), and nodes started with a `cloud` section."""
import json
import os
import random
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from tests.e2e.conftest import NodeProcess
from mastercontroller import keys
from tests.util import REPO, free_tcp_port, isolated_example, wait_until


def _free_loopback_address() -> str:
    for _ in range(100):
        host = f"127.{random.randint(20, 250)}.{random.randint(0, 255)}.{random.randint(2, 254)}"
        try:
            for port in (8883, 443):
                with socket.socket() as s:
                    s.bind((host, port))
            return host
        except OSError:
            continue
    raise RuntimeError("no free loopback address for the emulator")


class Emulator:
    def __init__(self, state_dir: Path, log: Path, devices=("node1",)):
        self.dir, self.log_path, self.devices = state_dir, log, devices
        self.host = _free_loopback_address()
        self.proc = None
        self.start()

    def start(self) -> None:
        (self.dir / "admin.json").unlink(missing_ok=True)
        args = [sys.executable, "-m", "sitecontroller.cloud.emulator", "--dir", str(self.dir), "serve",
                "--host", self.host]
        for d in self.devices:
            args += ["--device", d]
        self._log = open(self.log_path, "a")
        self.proc = subprocess.Popen(args, stdout=self._log, stderr=subprocess.STDOUT, cwd=REPO, start_new_session=True)
        wait_until(lambda: (self.dir / "admin.json").exists() or self.proc.poll() is not None, 20, 0.05,
                   "emulator listening")
        assert self.proc.poll() is None, self.output()
        self.url = json.loads((self.dir / "admin.json").read_text())["url"]

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)
        self._log.close()

    def output(self) -> str:
        return self.log_path.read_text()

    def cs_file(self, device="node1") -> Path:
        return self.dir / f"{device}.cs"

    def call(self, method: str, path: str, body=None, timeout=40):
        req = urllib.request.Request(self.url + path, data=None if body is None else json.dumps(body).encode(),
                                     method=method)
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return json.loads(resp.read())

    def invoke(self, device, method, payload=None, timeout=20):
        r = self.call("POST", f"/devices/{device}/methods/{method}?timeout={timeout}", payload or {}, timeout + 5)
        return r["status"], r["payload"]

    def desired(self, device, patch):
        return self.call("PATCH", f"/devices/{device}/twin/desired", patch)["$version"]

    def cut_link(self, device="node1", cut=True):
        return self.call("POST", f"/devices/{device}/link?cut={int(cut)}")

    def twin(self, device="node1"):
        return self.call("GET", f"/devices/{device}/twin")

    def messages(self, device="node1", kind=None) -> list[dict]:
        path = self.dir / "telemetry" / f"{device}.jsonl"
        if not path.exists():
            return []
        lines = [json.loads(line) for line in path.read_text().splitlines() if line.endswith("}")]
        return [m for m in lines if kind is None or m["properties"].get("type") == kind]


@pytest.fixture
def emulator(tmp_path):
    started = []

    def start(devices=("node1",)):
        hub = Emulator(tmp_path / f"hub{len(started)}", tmp_path / f"hub{len(started)}.log", devices)
        started.append(hub)
        return hub

    yield start
    for hub in started:
        hub.stop()


@pytest.fixture
def cloud_node(tmp_path):
    """A simulated node (scripts/run-sim) whose `cloud` section points at an emulator."""
    started = []

    def start(hub, device="node1", cluster=False, **cloud):
        data = isolated_example("sim_node1.json", tmp_path)
        if cluster:  # a cluster of one: cluster modes go through its Raft log
            public = keys.generate(tmp_path / "node1")
            data["features"] = {**data.get("features", {}), "CLUSTER": True}
            data["cluster"] = {"members": [{"node_id": "node1", "raft": f"127.0.0.1:{free_tcp_port()}",
                                            "data": f"127.0.0.1:{free_tcp_port()}", "public_key": public}]}
        data["cloud"] = {"connection_string_file": str(hub.cs_file(device)), "ca_cert_file": str(hub.dir / "ca.pem"),
                         "telemetry_interval_s": 1, **cloud}
        path = tmp_path / f"params-{device}-{len(started)}.json"
        path.write_text(json.dumps(data))
        node = NodeProcess(path, data["control"]["endpoint"], tmp_path / f"{device}-{len(started)}.log")
        started.append(node)
        return node

    yield start
    for node in started:
        node.kill()
