"""The emulator as a child process on a loopback address of its own, for tests and benchmarks.

The SDK's ports (8883, 443) are fixed, so emulators that run side by side differ by address
(127.x.y.z; the server certificate names it). `EmulatorProcess` starts one, talks to its operator
API and reads what the devices sent.
"""
from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path


def free_loopback_address() -> str:
    """A 127.x.y.z on which 8883 and 443 are both free."""
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


class EmulatorProcess:
    def __init__(self, state_dir: Path, log: Path, devices=("node1",), cwd: Path | None = None):
        self.dir, self.log_path, self.devices, self.cwd = Path(state_dir), Path(log), devices, cwd
        self.host = free_loopback_address()
        self.proc: subprocess.Popen | None = None
        self.start()

    def start(self, timeout_s: float = 20.0) -> None:
        (self.dir / "admin.json").unlink(missing_ok=True)
        args = [sys.executable, "-m", "sitecontroller.cloud.emulator", "--dir", str(self.dir), "serve",
                "--host", self.host]
        for d in self.devices:
            args += ["--device", d]
        self._log = open(self.log_path, "a")
        self.proc = subprocess.Popen(args, stdout=self._log, stderr=subprocess.STDOUT, cwd=self.cwd,
                                     start_new_session=True)
        deadline = time.monotonic() + timeout_s
        while not (self.dir / "admin.json").exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the emulator did not start: {self.output()}")
            time.sleep(0.05)
        self.url = json.loads((self.dir / "admin.json").read_text())["url"]

    def stop(self) -> None:
        """kill -9: to the devices, the hub is gone at once."""
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

    def desired(self, device, patch) -> int:
        return self.call("PATCH", f"/devices/{device}/twin/desired", patch)["$version"]

    def cut_link(self, device="node1", cut=True):
        return self.call("POST", f"/devices/{device}/link?cut={int(cut)}")

    def twin(self, device="node1") -> dict:
        return self.call("GET", f"/devices/{device}/twin")

    def messages(self, device="node1", kind=None) -> list[dict]:
        path = self.dir / "telemetry" / f"{device}.jsonl"
        if not path.exists():
            return []
        lines = [json.loads(line) for line in path.read_text().splitlines() if line.endswith("}")]
        return [m for m in lines if kind is None or m["properties"].get("type") == kind]
