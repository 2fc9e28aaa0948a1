"""The cloud client against the local IoT Hub emulator: queue drain after an outage, direct-method
round trip, CPU and memory of a node with the cloud client.

    .venv/bin/python bench/cloud.py [--backlog 5000] [--methods 200] [--seconds 30] [--websockets]

1. Drain: `--backlog` messages are queued in the node's offline queue while it is down (an outage
   of hours, in effect), then the node starts and connects; the figure is messages per second from
   connect until the queue is empty, and whether the hub got every seq once, in order.
2. Method round trip: `--methods` GoToState_Running/Idling calls from the emulator's operator API to
   the node's answer (HTTP to the emulator, MQTT to the node, the Command through the cycle).
3. CPU and peak RSS of the node process with the cloud client, over `--seconds` of 1 s telemetry.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from _node import CLI, REPO, status, write_params

sys.path.insert(0, str(REPO))
from sitecontroller.cloud.emulator.process import EmulatorProcess  # noqa: E402
from sitecontroller.cloud.offline_queue import OfflineQueue  # noqa: E402


def _wait(predicate, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.05)
    return value


def _pct(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backlog", type=int, default=5000)
    ap.add_argument("--methods", type=int, default=200)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--websockets", action="store_true", help="MQTT over WSS 443 instead of MQTT/TLS 8883")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        hub = EmulatorProcess(tmp / "hub", tmp / "hub.log", cwd=REPO)
        params, endpoint = write_params("sim_node1.json", tmp)
        data = json.loads(params.read_text())
        data["cloud"] = {"connection_string_file": str(hub.cs_file()), "ca_cert_file": str(hub.dir / "ca.pem"),
                         "telemetry_interval_s": 1, "websockets": args.websockets, "method_rate_per_min": 6000}
        params.write_text(json.dumps(data))
        q = OfflineQueue(tmp / "node1" / "cloud" / "outbox.sqlite", 604800, 200 * 1024 * 1024)
        spot = {"state": "run", "soc": 0.5, "p_w": 0.0, "pad": "x" * 600}  # about the size of a real spot
        for _ in range(args.backlog):
            q.put("SC_Spot_10s", {"type": "SC_Spot_10s"}, spot)
        q.close()
        proc = subprocess.Popen(CLI + ["run", "--params", str(params), "--simulate"], cwd=REPO,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            _wait(lambda: (s := status(endpoint)) and s["cloud"]["connected"], 60, "the node connected")
            t0 = time.monotonic()
            _wait(lambda: status(endpoint)["cloud"]["queued"] == 0, 600, "the backlog drained")
            drain_s = time.monotonic() - t0
            seqs = [m["body"]["seq"] for m in hub.messages()]
            first = list(dict.fromkeys(seqs))
            in_order = first == list(range(1, len(first) + 1)) and len(first) >= args.backlog
            print(f"cloud client vs emulator ({'WSS 443' if args.websockets else 'MQTT/TLS 8883'})")
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
            cpu0, t0 = ps.cpu_times(), time.monotonic()
            time.sleep(args.seconds)
            cpu1, t1 = ps.cpu_times(), time.monotonic()
            busy = (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)
            with open(f"/proc/{proc.pid}/status") as f:
                hwm_kb = next(int(line.split()[1]) for line in f if line.startswith("VmHWM"))
            rss_mb = ps.memory_info().rss / 2**20
            cyc = status(endpoint)["cycle"]
            print(f"  node CPU          {100 * busy / (t1 - t0):.1f} % of one core over {args.seconds:g} s "
                  f"(1 s telemetry)")
            print(f"  node RSS          {rss_mb:.1f} MB now, peak {hwm_kb / 1024:.1f} MB (goal < 80 MB)")
            print(f"  node cycle        p50 {cyc['period_ms_p50']:.1f} ms  p99 {cyc['period_ms_p99']:.1f} ms  "
                  f"overruns {cyc['overruns']}")
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
            hub.stop()


if __name__ == "__main__":
    main()
