"""The node's cycle on a slow disk: synchronous state-file writes vs. the background writer.

    .venv/bin/python bench/slow_disk.py [--seconds 15] [--fsync-ms 50]

Builds a simulated node in this process (in-process plant and devices, the real
clock, the 100 ms deadline-scheduled cycle) and runs it three times while an
error is raised/cleared (errors.json: atomic replace) and a command is
submitted and carried out (audit.jsonl: two fsync'd appends) every 0.5 s:

  baseline    normal disk, background writer
  sync        every fsync sleeps --fsync-ms first; writes done in the cycle (as before the writer)
  background  the same slow disk; writes queued to the background writer

It prints the cycle period (start-to-start) and the time spent inside the
cycle, p50/p99/max and overruns, and their ratios to the baseline.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from sitecontroller import node as node_module  # noqa: E402
from sitecontroller import params as params_module  # noqa: E402
from sitecontroller.clock import RealClock  # noqa: E402
from sitecontroller.cycle import CycleStats, run_cycles  # noqa: E402
from sitecontroller.drivers.factory import make_devices  # noqa: E402
from sitecontroller.errors import register_codes  # noqa: E402
from sitecontroller.sim.plant import Plant  # noqa: E402
from sitecontroller.writer import BackgroundWriter, SyncWriter  # noqa: E402

EXAMPLE = REPO / "site_parameters" / "sim_node1_inproc.json"
CHURN_EVERY = 5  # cycles between disk-writing events (0.5 s at 100 ms)
register_codes({"BENCH_FLAP": ("warning", "raised and cleared by bench/slow_disk.py")})


def build_node(data_dir: Path, writer):
    data = json.loads(EXAMPLE.read_text())
    data["storage"] = {"data_dir": str(data_dir)}
    params = params_module.parse(data)
    clock = RealClock()
    plant = Plant.from_params(params, wall_s=clock.wall())
    devices = make_devices(params, clock, plant=plant)
    node = node_module.Node(params, clock, devices, writer=writer)
    return node, plant, clock, params.cycle.period_s


async def run_mode(seconds: float, writer, data_dir: Path) -> dict:
    node, plant, clock, period = build_node(data_dir, writer)
    stats, inside, k = CycleStats(), [], 0

    def step() -> None:
        nonlocal k
        k += 1
        t0 = time.perf_counter()
        if k % CHURN_EVERY == 0:  # an error comes and goes
            if node.errors.is_active("BENCH_FLAP"):
                node.errors.clear("BENCH_FLAP")
            else:
                node.errors.raise_("BENCH_FLAP", "bench")
        if k % CHURN_EVERY == 2:  # a command: accepted now, done in this cycle
            node.commands.submit({"type": "set_power", "p_w": 1000.0 if k % 2 else -1000.0, "source": "test"})
        node.step()
        inside.append(time.perf_counter() - t0)
        plant.step(period, clock.wall())

    stop = asyncio.Event()
    asyncio.get_running_loop().call_later(seconds, stop.set)
    await run_cycles(clock, period, step, stop, stats)
    t0 = time.perf_counter()
    writer.close(30.0)
    inside.sort()
    return {**stats.summary(), "inside_ms_p50": 1000 * statistics.median(inside),
            "inside_ms_p99": 1000 * inside[min(len(inside) - 1, int(0.99 * len(inside)))],
            "inside_ms_max": 1000 * inside[-1], "close_s": time.perf_counter() - t0, "state": node.states.state}


def slow_fsync(delay_s: float):
    real = os.fsync

    def fsync(fd):
        time.sleep(delay_s)
        real(fd)

    return fsync


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=15.0, help="run time of each of the three runs")
    ap.add_argument("--fsync-ms", type=float, default=50.0, help="extra time every fsync takes on the slow disk")
    args = ap.parse_args()
    logging.getLogger("sitecontroller").setLevel(logging.ERROR)  # the churn would log every change
    real_fsync = os.fsync
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for mode, writer_class, slow in (("baseline", BackgroundWriter, False), ("sync", SyncWriter, True),
                                         ("background", BackgroundWriter, True)):
            os.fsync = slow_fsync(args.fsync_ms / 1000) if slow else real_fsync
            try:
                results[mode] = asyncio.run(run_mode(args.seconds, writer_class(), Path(tmp) / mode))
            finally:
                os.fsync = real_fsync
    base = results["baseline"]
    print(f"node cycle, 100 ms period, {args.seconds:g} s per run; slow disk: +{args.fsync_ms:g} ms per fsync; "
          f"an error change and a command every {CHURN_EVERY} cycles")
    print(f"  {'run':<11}{'cycles':>7}{'period p50':>12}{'p99':>9}{'max':>9}{'overruns':>10}"
          f"{'in-cycle p50':>14}{'p99':>9}{'max':>9}{'p99/base':>10}{'max/base':>10}")
    for mode, r in results.items():
        print(f"  {mode:<11}{r['cycles']:>7}{r['period_ms_p50']:>12.1f}{r['period_ms_p99']:>9.1f}{r['period_ms_max']:>9.1f}"
              f"{r['overruns']:>10}{r['inside_ms_p50']:>14.2f}{r['inside_ms_p99']:>9.2f}{r['inside_ms_max']:>9.2f}"
              f"{r['period_ms_p99'] / base['period_ms_p99']:>10.2f}{r['period_ms_max'] / base['period_ms_max']:>10.2f}")
    closes = ", ".join(f"{m} {r['close_s']:.2f} s" for m, r in results.items())
    print(f"  (period in ms, start-to-start; in-cycle = time inside the cycle in ms; writer close: {closes})")


if __name__ == "__main__":
    main()
