"""Shared by the benchmarks: start a real simulated node process and measure it."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "sitecontroller.cli"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_params(example: str, workdir: Path) -> tuple[Path, str]:
    data = json.loads((REPO / "site_parameters" / example).read_text())
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    data["control"] = {"endpoint": endpoint}
    data["storage"] = {"data_dir": str(workdir / "{node_id}")}
    for dev in ("inverter", "meter"):
        cfg = data["devices"].get(dev)
        if cfg and cfg.get("port"):
            cfg["port"] = free_port()
    can = data["devices"]["bms"].get("can")
    if can and can.get("interface") == "virtual":
        can["channel"] = f"bench-{os.getpid()}"
    elif can and can.get("interface") == "slcan" and str(can.get("channel", "")).startswith("socket://"):
        can["channel"] = f"socket://127.0.0.1:{free_port()}"  # the simulated CAN adapter's port
    path = workdir / "params.json"
    path.write_text(json.dumps(data))
    return path, endpoint


def status(endpoint: str) -> dict | None:
    r = subprocess.run(CLI + ["status", "--json", "--endpoint", endpoint], capture_output=True, text=True, cwd=REPO)
    return json.loads(r.stdout) if r.returncode == 0 else None


def measure_node(example: str, seconds: float, setpoint_w: float | None = 2000.0) -> dict:
    """Run a simulated node for `seconds` and return its cycle, CPU and memory figures."""
    with tempfile.TemporaryDirectory() as tmp:
        params, endpoint = write_params(example, Path(tmp))
        proc = subprocess.Popen(CLI + ["run", "--params", str(params), "--simulate"], cwd=REPO,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            deadline = time.monotonic() + 30
            while (s := status(endpoint)) is None or s["state"] != "run":
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError(f"node did not reach run (last status {s})")
                time.sleep(0.2)
            if setpoint_w is not None:
                subprocess.run(CLI + ["setpoint", "--w", str(setpoint_w), "--hold", str(seconds + 60),
                                      "--endpoint", endpoint], cwd=REPO, capture_output=True)
            ps = psutil.Process(proc.pid)
            cpu0, t0 = ps.cpu_times(), time.monotonic()
            time.sleep(seconds)
            cpu1, t1 = ps.cpu_times(), time.monotonic()
            final = status(endpoint)
            with open(f"/proc/{proc.pid}/status") as f:
                hwm_kb = next(int(line.split()[1]) for line in f if line.startswith("VmHWM"))
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
    busy = (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)
    return {
        "cycle": final["cycle"],
        "cpu_percent": 100 * busy / (t1 - t0),
        "peak_rss_mb": hwm_kb / 1024,
        "errors": [e["id"] for e in final["errors"]],
        "p_w": final["p_w"],
    }
