"""Frequency step -> full power at the inverter, through the real protocol path: p50/p95/max.

    .venv/bin/python bench/frequency.py [--steps 100] [--kills 10] [--capacity-w 3000]

`scripts/run-sim --nodes 3 --free-ports` in a temporary directory (the three example nodes:
SunSpec, LuxPower and Indevolt inverters), the cluster holding FCR-D up (`--capacity-w`, full at
49.5 Hz; it has no blocking time, so steps can follow each other; the path is FFR's: frequency
register -> driver -> node cycle -> controller -> inverter write -> simulated inverter). The
simulator plays a profile of `--steps` steps (50.0 Hz for 1.5 s, then 49.5 Hz for 1.5 s) and
records each inverter's power at its physics step (50 ms: the resolution of every figure).
Per node and step: the time from the step to 95 % of the node's allocation at its inverter.

Then `--kills` steps 8 s apart, at each of which the current leader is killed (-9): the same
figure for the surviving nodes (the killed node is left out of that step; run-sim restarts it).
Goal printed beside: full power within 200 ms. Figures, not a test.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import tempfile
import time
from pathlib import Path

from _site import Site

from sitecontroller.sim.endpoint import sim_request  # noqa: E402  (_site puts the repository on sys.path)

GOAL_MS = 200.0
FULL = 0.95


def steps_profile(n: int, low_s: float, high_s: float) -> tuple[dict, list[float]]:
    points, steps, t = [[0.0, 50.0]], [], 0.0
    for _ in range(n):
        t += high_s
        points += [[t, 50.0], [t, 49.5]]
        steps.append(t)
        t += low_s
        points += [[t, 49.5], [t, 50.0]]
    points.append([t + high_s, 50.0])
    return {"description": f"{n} steps 50.0 -> 49.5 Hz", "points": points}, steps


def play_and_trace(site: Site, profile: dict, steps: list[float], kill: bool) -> tuple[dict, set]:
    """Play the profile; with `kill`, kill -9 the leader at every step. The trace, and (step, node) killed."""
    endpoint = site.index()["sim_endpoint"]
    started = time.time()
    sim_request(endpoint, {"op": "frequency", "profile": profile, "name": "bench"})
    killed = set()
    for i, t in enumerate(steps if kill else []):
        time.sleep(max(0.0, started + t - time.time()))
        cl = next((c for n in site.node_ids if (c := site.ask(n, "cluster_status"))), None)
        leader = cl and cl["leader"]
        st = leader and site.ask(leader, "status")
        if st:
            os.kill(st["pid"], signal.SIGKILL)
            killed.add((i, leader))
    end = started + profile["points"][-1][0] + 1.0
    time.sleep(max(0.0, end - time.time()))
    return sim_request(endpoint, {"op": "trace"}, 10.0)["trace"], killed


def times_to_full(trace: dict, steps: list[float], alloc: dict[str, float], killed: set, window_s: float) -> dict:
    t_s, out = trace["t_s"], {n: [] for n in alloc}
    for node, cap in alloc.items():
        p = trace["p_w"][node]
        for i, t0 in enumerate(steps):
            if (i, node) in killed:
                continue
            hit = next((t for t, w in zip(t_s, p) if t0 <= t <= t0 + window_s and w is not None and w >= FULL * cap),
                       None)
            out[node].append(None if hit is None else (hit - t0) * 1000.0)
    return out


def summary(ms: list) -> str:
    got = sorted(x for x in ms if x is not None)
    missed = len(ms) - len(got)
    if not got:
        return f"n {len(ms)}: none reached full power"
    p95 = got[min(len(got) - 1, round(0.95 * (len(got) - 1)))]
    return (f"n {len(ms):3d}  p50 {statistics.median(got):6.0f} ms  p95 {p95:6.0f} ms  max {got[-1]:6.0f} ms"
            + (f"  missed {missed}" if missed else ""))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--kills", type=int, default=10)
    ap.add_argument("--capacity-w", type=float, default=3000.0)
    args = ap.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="bench-frequency-"))
    site = Site(workdir)
    try:
        site.wait_index(60)
        if site.wait_following(90.0) is None:
            raise RuntimeError(f"no leader with three following nodes:\n{site.tail()}")
        r = site.cli("cluster", "service", "fcr_d_up", "--capacity-w", f"{args.capacity_w:g}")
        if r.returncode != 0:
            raise RuntimeError(r.stdout + r.stderr)
        deadline, alloc = time.monotonic() + 20, {}
        while time.monotonic() < deadline and len(alloc) < 3:
            for n in site.node_ids:
                gs = (site.ask(n, "status") or {}).get("grid_services") or {}
                if "fcr_d_up" in gs.get("services", {}):
                    alloc[n] = gs["services"]["fcr_d_up"]["capacity_w"]
            time.sleep(0.3)
        print(f"FCR-D up {args.capacity_w:.0f} W allocated: {json.dumps({k: round(v) for k, v in alloc.items()})}")
        results = {}
        for label, n, high, kill in (("steps", args.steps, 1.5, False), ("leader killed at the step", args.kills,
                                                                          8.0, True)):
            if n <= 0:
                continue
            profile, steps = steps_profile(n, 1.5, high)
            trace, killed = play_and_trace(site, profile, steps, kill)
            results[label] = times_to_full(trace, steps, alloc, killed, 1.4)
            print(f"\n{label} ({n}): frequency step -> {FULL:.0%} of the allocation at the inverter")
            every = []
            for node, ms in results[label].items():
                print(f"  {node:<6} {summary(ms)}")
                every += ms
            print(f"  {'all':<6} {summary(every)}   goal < {GOAL_MS:.0f} ms")
        return 0
    finally:
        site.stop()
        site.kill()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
