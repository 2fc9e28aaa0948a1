"""The cloud client against the local IoT Hub emulator: queue drain after an outage, direct-method
round trip, CPU and memory of a node with the cloud client.

    .venv/bin/python bench/cloud.py [--backlog 5000] [--methods 200] [--seconds 30] [--websockets] [--sim-process]

1. Drain: `--backlog` messages are queued in the node's offline queue while it is down (an outage
   of hours, in effect), then the node starts and connects; the figure is messages per second from
   connect until the queue is empty, and whether the hub got every seq once, in order.
2. Method round trip: `--methods` GoToState_Running/Idling calls from the emulator's operator API to
   the node's answer (HTTP to the emulator, MQTT to the node, the Command through the cycle).
3. CPU and RSS of the node process with the cloud client, over `--seconds` of 1 s telemetry. RSS is
   sampled every 0.1 s from the node's start: `connected` once the link is up (start-up done, backlog
   not yet drained), `drain` the highest sample while the backlog drains, `steady` the median over the
   last `--seconds`, and `peak` the kernel's high-water mark (VmHWM) over the whole run.

By default the node runs `--simulate`: the simulated BMS, inverter and meter run in the node's process
and count in its RSS. With `--sim-process` they run in their own process (`python -m sitecontroller.sim`)
and the node talks to them over loopback, as a field node talks to its devices: that RSS is a field
node's (which also has no simulator code loaded).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

from _node import CLI, REPO, free_port, status, write_params

sys.path.insert(0, str(REPO))
from sitecontroller.cloud.emulator.process import EmulatorProcess  # noqa: E402
from sitecontroller.cloud.offline_queue import OfflineQueue  # noqa: E402
from sitecontroller.sim.endpoint import SimUnreachable, sim_request  # noqa: E402


def _wait(predicate, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.05)
    return value


class RssSampler:
    """RSS of a process every `period_s` (from /proc/PID/statm), in a thread; `mark` names the phases."""

    def __init__(self, pid: int, period_s: float = 0.1):
        self.pid, self.period_s = pid, period_s
        self.samples: list[tuple[float, str, float]] = []  # (monotonic, phase, MB)
        self.phase = "start-up"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        page = os.sysconf("SC_PAGE_SIZE")
        while not self._stop.is_set():
            try:
                with open(f"/proc/{self.pid}/statm") as f:
                    mb = int(f.read().split()[1]) * page / 2**20
            except (OSError, IndexError, ValueError):
                return
            self.samples.append((time.monotonic(), self.phase, mb))
            self._stop.wait(self.period_s)

    def mark(self, phase: str) -> None:
        self.phase = phase

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def max(self, phase: str) -> float:
        return max((mb for _, p, mb in self.samples if p == phase), default=float("nan"))

    def median(self, phase: str) -> float:
        values = [mb for _, p, mb in self.samples if p == phase]
        return statistics.median(values) if values else float("nan")

    def trend(self, phase: str) -> tuple[float, float]:
        """Median of the first and of the last tenth of a phase's samples (growth shows here)."""
        values = [mb for _, p, mb in self.samples if p == phase]
        if not values:
            return float("nan"), float("nan")
        k = max(1, len(values) // 10)
        return statistics.median(values[:k]), statistics.median(values[-k:])

    def first(self, phase: str) -> float:
        return next((mb for _, p, mb in self.samples if p == phase), float("nan"))


def _peak_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM")) / 1024


def _start_simulator(params: Path, sim_endpoint: str, cwd: Path, log: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "sitecontroller.sim", "--params", str(params)], cwd=cwd,
                            stdout=subprocess.DEVNULL, stderr=log.open("w"), start_new_session=True)

    def ready():
        if proc.poll() is not None:
            raise RuntimeError(f"the simulator exited ({proc.returncode}): {log.read_text()[-2000:]}")
        try:
            return sim_request(sim_endpoint, {"op": "ping"}, timeout_s=0.5)["ready"]
        except SimUnreachable:
            return False

    _wait(ready, 60, "the simulator ready")
    return proc


def _stop(proc: subprocess.Popen | None) -> None:
    if proc is None:
        return
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()


def _pct(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backlog", type=int, default=5000)
    ap.add_argument("--methods", type=int, default=200)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--websockets", action="store_true", help="MQTT over WSS 443 instead of MQTT/TLS 8883")
    ap.add_argument("--sim-process", action="store_true",
                    help="simulated devices in their own process (the node's RSS is then a field node's)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        hub = EmulatorProcess(tmp / "hub", tmp / "hub.log", cwd=REPO)
        params, endpoint = write_params("sim_node1.json", tmp)
        data = json.loads(params.read_text())
        data["cloud"] = {"connection_string_file": str(hub.cs_file()), "ca_cert_file": str(hub.dir / "ca.pem"),
                         "telemetry_interval_s": 1, "websockets": args.websockets, "method_rate_per_min": 6000}
        sim_endpoint = f"tcp://127.0.0.1:{free_port()}"
        data["simulation"]["endpoint"] = sim_endpoint
        params.write_text(json.dumps(data))
        q = OfflineQueue(tmp / "node1" / "cloud" / "outbox.sqlite", 604800, 200 * 1024 * 1024)
        spot = {"state": "run", "soc": 0.5, "p_w": 0.0, "pad": "x" * 600}  # about the size of a real spot
        for _ in range(args.backlog):
            q.put("SC_Spot_10s", {"type": "SC_Spot_10s"}, spot)
        q.close()
        sim = proc = sampler = None
        try:
            if args.sim_process:
                sim = _start_simulator(params, sim_endpoint, REPO, tmp / "sim.log")
            proc = subprocess.Popen(CLI + ["run", "--params", str(params)] + ([] if args.sim_process else ["--simulate"]),
                                    cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                    start_new_session=True)
            sampler = RssSampler(proc.pid)
            _wait(lambda: (s := status(endpoint)) and s["cloud"]["connected"], 60, "the node connected")
            sampler.mark("drain")
            t0 = time.monotonic()
            _wait(lambda: status(endpoint)["cloud"]["queued"] == 0, 600, "the backlog drained")
            drain_s = time.monotonic() - t0
            sampler.mark("methods")
            seqs = [m["body"]["seq"] for m in hub.messages()]
            first = list(dict.fromkeys(seqs))
            in_order = first == list(range(1, len(first) + 1)) and len(first) >= args.backlog
            print(f"cloud client vs emulator ({'WSS 443' if args.websockets else 'MQTT/TLS 8883'}); simulated devices "
                  f"{'in their own process (a field node)' if args.sim_process else 'in the node process (--simulate)'}")
            print(f"  drain             {args.backlog} queued messages in {drain_s:.1f} s = "
                  f"{args.backlog / drain_s:.0f} msg/s (goal >= 200); every seq once, in order: {in_order}"
                  f" (duplicates {len(seqs) - len(first)})")
            rtts = []
            for i in range(args.methods):
                t = time.monotonic()
                code, _ = hub.invoke("node1", "GoToState_Idling" if i % 2 == 0 else "GoToState_Running", {})
                rtts.append((time.monotonic() - t) * 1000)
                assert code == 200, code
            print(f"  method round trip p50 {statistics.median(rtts):.1f} ms  p99 {_pct(rtts, 0.99):.1f} ms  "
                  f"max {max(rtts):.1f} ms  (n={len(rtts)}; p99/p50 = {_pct(rtts, 0.99) / statistics.median(rtts):.2f})")
            ps = psutil.Process(proc.pid)
            sampler.mark("steady")
            cpu0, t0 = ps.cpu_times(), time.monotonic()
            time.sleep(args.seconds)
            cpu1, t1 = ps.cpu_times(), time.monotonic()
            busy = (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)
            peak_mb = _peak_mb(proc.pid)
            sampler.stop()
            cyc = status(endpoint)["cycle"]
            print(f"  node CPU          {100 * busy / (t1 - t0):.1f} % of one core over {args.seconds:g} s "
                  f"(1 s telemetry)")
            print(f"  node RSS          connected {sampler.first('drain'):.1f} MB, drain max {sampler.max('drain'):.1f} MB, "
                  f"steady {sampler.median('steady'):.1f} MB (median of {args.seconds:g} s), "
                  f"peak {peak_mb:.1f} MB (VmHWM; goal < 80 MB); steady from {sampler.trend('steady')[0]:.1f} "
                  f"to {sampler.trend('steady')[1]:.1f} MB (first and last tenth)")
            print(f"  node cycle        p50 {cyc['period_ms_p50']:.1f} ms  p99 {cyc['period_ms_p99']:.1f} ms  "
                  f"overruns {cyc['overruns']}")
        finally:
            if sampler is not None:
                sampler.stop()
            _stop(proc)
            _stop(sim)
            hub.stop()


if __name__ == "__main__":
    main()
