"""Run a simulated node for a while and print its cycle timing, CPU and memory.

    .venv/bin/python bench/cycle.py [--seconds 60] [--params sim_node1.json]

The node runs as a real process (`sitecontroller run --simulate`, in-process
plant) with a 2 kW request so the whole cycle does real work. Figures are the
node's own period statistics over its last 3000 cycles (start-to-start).
"""
from __future__ import annotations

import argparse

from _node import measure_node


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--params", default="sim_node1.json", help="example file in site_parameters/")
    args = ap.parse_args()
    m = measure_node(args.params, args.seconds)
    c = m["cycle"]
    print(f"node cycle over {args.seconds:g} s ({args.params}), period target 100 ms")
    print(f"  cycles            {c['cycles']}")
    print(f"  period p50        {c['period_ms_p50']:.2f} ms")
    print(f"  period p99        {c['period_ms_p99']:.2f} ms   (p99/p50 = {c['period_ms_p99'] / c['period_ms_p50']:.3f})")
    print(f"  period max        {c['period_ms_max']:.2f} ms")
    print(f"  overruns          {c['overruns']} (missed slots {c['missed_slots']})")
    print(f"  CPU               {m['cpu_percent']:.1f} % of one core")
    print(f"  peak RSS          {m['peak_rss_mb']:.1f} MB")
    print(f"  errors at end     {', '.join(m['errors']) or 'none'}; p_w {m['p_w']} W")


if __name__ == "__main__":
    main()
