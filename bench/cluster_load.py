"""A 3-node cluster with its site simulator under a cluster target: cycle timing, CPU and memory per process.

    .venv/bin/python bench/cluster_load.py [--seconds 60] [--warmup 10] [--target-w 3000]

`scripts/run-sim --nodes 3 --free-ports` runs in a temporary directory (its own run directory);
once a leader is elected the cluster target (`--target-w`) goes through the Raft log, and once
every node executes the leader's dispatch (setpoint source "cluster") the site warms up for
`--warmup` s, then is measured for `--seconds` s:

- per node, the cycle figures of its status (read at the end): period p50/p99 over the node's
  status window (its last 3000 periods, 300 s at 100 ms: for a run shorter than that, every period
  since the node started, start-up and warm-up included), the longest period since it started,
  and overruns / missed slots counted over the measuring window (their total since start beside);
- per process (each node, the simulator, the run-sim supervisor): CPU % of one core from
  /proc/<pid>/stat utime+stime over the measuring window, RSS from /proc/<pid>/status VmRSS sampled
  every 0.5 s (peak over the window and at its end; VmHWM, the kernel's peak since start, beside);
- the whole machine's CPU over the same window (/proc/stat), to see whether something else ran;
- per node, setpoint propagation: the age of each new cluster setpoint from the leader's decision to
  the node's inverter command (status `setpoint_age_ms`, the node's last 3000 setpoints).

Pids come from each node's status and the simulator's ping; the supervisor is the run-sim process
itself. Goals printed beside the figures: RSS < 80 MB per node, cycle p99 within 10 ms of the
period. Figures, not a test.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from _site import CLK_TCK, Site, busy_percent, cmdline, cpu_ticks, machine_ticks, ppid, rss_kb

from sitecontroller.cycle import CycleStats  # noqa: E402  (_site puts the repository on sys.path)

RSS_GOAL_MB = 80.0
P99_SLACK_MS = 10.0
STATUS_WINDOW = CycleStats().periods_s.maxlen  # the periods a node's status percentiles cover (3000)


def _own() -> float:
    t = os.times()
    return t.user + t.system


def run(args, workdir: Path) -> dict:
    site = Site(workdir)
    t_start = time.monotonic()
    try:
        site.start_cluster(args.target_w)
        first = site.wait_following(90.0)
        if first is None:
            raise RuntimeError(f"the three nodes did not follow one leader within 90 s:\n{site.tail()}")
        period_s = {}
        for n in site.node_ids:
            params = json.loads(Path(next(x["params"] for x in site.index()["nodes"] if x["node_id"] == n)).read_text())
            period_s[n] = float(params.get("cycle", {}).get("period_s", 0.1))
        print(f"  following: leader {first['leader']} term {first['term']}; warming up {args.warmup:g} s",
              file=sys.stderr)
        end_warm = time.monotonic() + args.warmup
        while time.monotonic() < end_warm:
            if site.proc.poll() is not None:
                raise RuntimeError(f"run-sim exited during the warm-up:\n{site.tail()}")
            time.sleep(0.2)

        start = site.following() or site.wait_following(10.0)
        if start is None:
            raise RuntimeError("the cluster did not follow one leader at the start of the window")
        sim_pid = site.sim_pid()
        sup_pid = site.proc.pid
        procs = {n: start["pids"][n] for n in site.node_ids}
        procs["simulator"] = sim_pid
        procs["run-sim supervisor"] = sup_pid
        for name, pid in procs.items():  # the simulator has its own session: its parent is in the group
            if pid is None or not site.in_group(pid if name != "simulator" else ppid(pid)):
                raise RuntimeError(f"{name}: pid {pid} is not a process of this run-sim")
        if "run_sim" not in cmdline(sup_pid):
            print(f"  note: the supervisor's command line is {cmdline(sup_pid)!r}", file=sys.stderr)
        cycle0 = {n: start["status"][n]["cycle"] for n in site.node_ids}
        m0, ticks0, mach0, own0 = time.monotonic(), {k: cpu_ticks(p) for k, p in procs.items()}, machine_ticks(), _own()
        load0 = Path("/proc/loadavg").read_text().split()[:3]
        peak = {k: 0 for k in procs}
        samples = 0
        while (now := time.monotonic()) < m0 + args.seconds:
            if site.proc.poll() is not None:
                raise RuntimeError(f"run-sim exited during the window:\n{site.tail()}")
            for k, p in procs.items():
                peak[k] = max(peak[k], rss_kb(p) or 0)
            samples += 1
            time.sleep(min(args.sample_s, max(0.0, m0 + args.seconds - now)))
        m1, ticks1, mach1, own1 = time.monotonic(), {k: cpu_ticks(p) for k, p in procs.items()}, machine_ticks(), _own()
        end_rss = {k: rss_kb(p) for k, p in procs.items()}
        hwm = {k: rss_kb(p, "VmHWM") for k, p in procs.items()}
        for k in procs:
            peak[k] = max(peak[k], end_rss[k] or 0)
        load1 = Path("/proc/loadavg").read_text().split()[:3]
        end_status = {n: site.ask(n, "status", 2.0) for n in site.node_ids}
        end = site.following()
        leader_cl = site.ask(start["leader"], "cluster_status", 2.0)
        site.stop(10.0)
    finally:
        site.kill()
    wall = m1 - m0
    out = {"wall": wall, "took": time.monotonic() - t_start, "period_s": period_s, "procs": procs,
           "start": start, "end": end, "leader_cl": leader_cl, "samples": samples, "load": (load0, load1),
           "machine": busy_percent(mach0, mach1),
           "own": (own1 - own0) / wall * 100, "rows": {}}
    for k, pid in procs.items():
        t0, t1 = ticks0[k], ticks1[k]
        row = {"pid": pid, "cpu": None if t0 is None or t1 is None else (t1 - t0) / CLK_TCK / wall * 100,
               "rss_peak": peak[k] / 1024, "rss_end": None if end_rss[k] is None else end_rss[k] / 1024,
               "hwm": None if hwm[k] is None else hwm[k] / 1024}
        if k in cycle0:
            st = end_status[k]
            row["restarted"] = st is None or st["pid"] != pid
            if st is not None:
                c0, c1 = cycle0[k], st["cycle"]
                row["cycle"] = c1
                row["age"] = st.get("setpoint_age_ms")
                row["window_cycles"] = c1["cycles"] - c0["cycles"]
                row["window_overruns"] = c1["overruns"] - c0["overruns"]
                row["window_missed"] = c1["missed_slots"] - c0["missed_slots"]
        out["rows"][k] = row
    return out


def report(args, r: dict) -> None:
    ncpu = os.cpu_count() or 1
    start, end, cl = r["start"], r["end"], r["leader_cl"]
    print(f"cluster load: 3 nodes + site simulator (scripts/run-sim --nodes 3), cluster target {args.target_w:g} W, "
          f"{r['wall']:.1f} s measured after {args.warmup:g} s warm-up (whole run {r['took']:.0f} s)")
    lead = f"leader {start['leader']} term {start['term']}"
    if end is None:
        lead += "; at the end: NOT every node following one leader"
    elif (end["leader"], end["term"]) != (start["leader"], start["term"]):
        lead += f"; at the end: leader {end['leader']} term {end['term']} (changed during the window)"
    else:
        lead += " throughout"
    if cl:
        lead += f"; target {cl['target_w']:.0f} W, actual {cl['actual_w']:.0f} W at the end"
    print(lead)
    print(f"{'process':<20} {'pid':>7} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'overruns':>12} {'CPU %':>6} "
          f"{'RSS peak':>9} {'RSS end':>8} {'VmHWM':>7}")
    for k, row in r["rows"].items():
        def mb(v):
            return "-" if v is None else f"{v:.1f}"
        cpu = "-" if row["cpu"] is None else f"{row['cpu']:.1f}"
        c = row.get("cycle")
        if c:
            ov = f"{row['window_overruns']} ({c['overruns']})"
            cyc = f"{c['period_ms_p50']:>8.2f} {c['period_ms_p99']:>8.2f} {c['period_ms_max']:>8.2f} {ov:>12}"
        else:
            cyc = f"{'':>8} {'':>8} {'':>8} {'':>12}"
        name = k + (" (leader)" if k == start["leader"] else "")
        print(f"{name:<20} {row['pid']:>7} {cyc} {cpu:>6} {mb(row['rss_peak']):>9} {mb(row['rss_end']):>8} "
              f"{mb(row['hwm']):>7}")
    total = sum(row["cpu"] or 0 for row in r["rows"].values())
    print(f"{'site total':<20} {'':>7} {'':>8} {'':>8} {'':>8} {'':>12} {total:>6.1f} "
          f"{sum(row['rss_peak'] for row in r['rows'].values()):>9.1f}")
    others = max(0.0, r["machine"] - total - r["own"])  # jiffy rounding can make it slightly negative
    print(f"machine: {r['machine']:.0f} % CPU busy of {ncpu * 100} % over the window (the site {total:.0f} %, this "
          f"bench {r['own']:.0f} %, other processes {others:.0f} %); load average {' '.join(r['load'][0])} -> "
          f"{' '.join(r['load'][1])}")
    nodes = {k: row for k, row in r["rows"].items() if "cycle" in row or "restarted" in row}
    cycles = [row.get("window_cycles") for row in nodes.values()]
    counted = [row["cycle"]["cycles"] for row in nodes.values() if row.get("cycle")]
    whole = all(c - 1 <= STATUS_WINDOW for c in counted)
    print(f"cycle columns: p50/p99 over each node's status window (its last <= {STATUS_WINDOW} periods: here "
          f"{', '.join(str(min(c - 1, STATUS_WINDOW)) for c in counted)}"
          f"{', every period since start: start-up and warm-up included' if whole else ''}), max since start; "
          f"overruns in the window ({', '.join(str(c) for c in cycles)} cycles), total since start in brackets; "
          f"RSS in MB ({r['samples']} samples)")
    ages = [(k, row["age"]) for k, row in nodes.items() if row.get("age")]
    for k, a in ages:
        print(f"setpoint propagation {k}: leader's decision -> this node's inverter command p50 {a['p50']:.1f} ms, "
              f"p99 {a['p99']:.1f} ms, max {a['max']:.1f} ms ({a['n']} setpoints, the node's last <= 3000)")
    if ages:
        worst = max(a["p99"] for _, a in ages)
        print(f"goal setpoint propagation p99 < 20 ms: {'met' if worst < 20 else 'MISSED'} (worst p99 {worst:.1f} ms; "
              f"the Modbus write itself adds bench/modbus_rtt.py's round trip)")
    restarted = [k for k, row in nodes.items() if row.get("restarted")]
    if restarted:
        print(f"WARNING: {', '.join(restarted)} restarted or did not answer at the end: its figures are not "
              f"one process")
    worst_rss = max((row["rss_peak"], k) for k, row in nodes.items())
    print(f"goal RSS < {RSS_GOAL_MB:.0f} MB per node: {'met' if worst_rss[0] < RSS_GOAL_MB else 'MISSED'} "
          f"(largest peak {worst_rss[0]:.1f} MB, {worst_rss[1]})")
    offs = []
    for k, row in nodes.items():
        c = row.get("cycle")
        if c and c["period_ms_p99"] is not None:
            offs.append((abs(c["period_ms_p99"] - r["period_s"][k] * 1000), k, c["period_ms_p99"]))
    if offs:
        worst = max(offs)
        period_ms = r["period_s"][worst[1]] * 1000
        print(f"goal cycle p99 within {P99_SLACK_MS:.0f} ms of the period ({period_ms:.0f} ms): "
              f"{'met' if worst[0] <= P99_SLACK_MS else 'MISSED'} (worst p99 {worst[2]:.2f} ms, {worst[1]})")
    if others > 20:
        print(f"note: {others:.0f} % of CPU went to other processes during the window: figures may be "
              f"disturbed")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=60.0, help="measuring window (default 60)")
    ap.add_argument("--warmup", type=float, default=10.0, help="after every node follows (default 10)")
    ap.add_argument("--target-w", type=float, default=3000.0, help="the cluster target (default 3000)")
    ap.add_argument("--sample-s", type=float, default=0.5, help="RSS sampling interval (default 0.5)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory (run-sim log, journals)")
    args = ap.parse_args(argv)
    if args.seconds <= 0 or args.warmup < 0 or args.sample_s <= 0:
        ap.error("--seconds and --sample-s must be positive, --warmup not negative")
    tmp = tempfile.mkdtemp(prefix="cluster-load-")
    try:
        r = run(args, Path(tmp))
    finally:
        if args.keep:
            print(f"(kept {tmp})", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    report(args, r)


if __name__ == "__main__":
    main()
