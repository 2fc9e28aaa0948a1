"""`sitecontroller simulate`: run a deterministic simulated day of the cluster.

Exit status: 0 done, 2 bad input (an unknown scenario, a bad scenario file, a bad argument),
1 the run failed.
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

EPILOG = """\
The run uses the code the cluster runs in the field (node decisions and limiter, the cluster
mode, dispatch) against the plant physics, on virtual time: a 24 h day of 3 nodes at 1 s steps
takes about 20 s, and the same scenario and seed give the same metrics.json (apart from wall_s).
Without --out only the summary line is printed.

examples:
  sitecontroller simulate --list
  sitecontroller simulate --scenario sunny_self_consumption --out out/sunny
  sitecontroller simulate --scenario my_site.json --hours 6 --step-s 0.5 --seed 7 --out out/mine
  sitecontroller simulate --scenario peak_shaving --nodes 5 --no-plots --out out/peak

Scenario files: see mastercontroller/simulate/scenarios/*.json for the format.
"""


def _number(kind: type, low: float, high: float, what: str):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"found {text!r}; allowed: {what}") from None
        if isinstance(value, float) and not math.isfinite(value) or not low <= value <= high:
            raise argparse.ArgumentTypeError(f"found {text!r}; allowed: {what}")
        return value
    return parse


def add_simulate_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("simulate", help="run a deterministic simulated day of the cluster (metrics.json, PNG plots)",
                       description="Run a simulated day of the cluster on virtual time and write its metrics "
                                   "and plots.", epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--list", action="store_true", help="list the packaged scenarios, one line each, and exit")
    p.add_argument("--scenario", metavar="NAME|FILE", help="a packaged scenario's name (see --list) or a scenario file")
    p.add_argument("--nodes", type=_number(int, 1, 64, "a whole number of nodes from 1 to 64"), metavar="N",
                   help="number of nodes (default: the scenario's; more than it lists repeats its nodes)")
    p.add_argument("--hours", type=_number(float, 0.01, 336, "hours from 0.01 to 336"), default=24.0, metavar="H",
                   help="simulated hours (default 24; profiles repeat daily)")
    p.add_argument("--step-s", type=_number(float, 0.1, 10, "seconds from 0.1 to 10"), default=1.0, metavar="S",
                   help="control step of the nodes and the leader, s (default 1)")
    p.add_argument("--seed", type=_number(int, 0, 2**32 - 1, "a whole number from 0 to 4294967295"), metavar="N",
                   help="random seed for load noise and clouds (default: the scenario's)")
    p.add_argument("--out", metavar="DIR", help="write metrics.json and the plots here (created if needed); "
                                                "without it only the summary is printed")
    p.add_argument("--no-plots", action="store_true", help="write metrics.json only (faster)")
    p.set_defaults(func=cmd_simulate)
    return p


def cmd_simulate(args) -> int:
    from .scenario import ScenarioError, list_scenarios, load_scenario

    if args.list:
        scenarios = list_scenarios()
        width = max((len(name) for name, _ in scenarios), default=0)
        for name, description in scenarios:
            print(f"{name:<{width}}  {description}")
        return 0
    if not args.scenario:
        print("sitecontroller simulate: give --scenario NAME|FILE (or --list to see the names)", file=sys.stderr)
        return 2
    try:
        scenario = load_scenario(args.scenario)
    except ScenarioError as exc:
        print(f"sitecontroller simulate: {exc}", file=sys.stderr)
        return 2
    if args.seed is not None:
        scenario = scenario.model_copy(update={"seed": args.seed})

    from . import metrics
    from .engine import simulate

    try:
        run = simulate(scenario, nodes=args.nodes, hours=args.hours, step_s=args.step_s)
    except ValueError as exc:
        print(f"sitecontroller simulate: {exc}", file=sys.stderr)
        return 2
    m = metrics.compute(run)
    print(metrics.summary_line(m))
    if args.out:
        out = Path(args.out)
        try:
            out.mkdir(parents=True, exist_ok=True)
            metrics.write(m, out / "metrics.json")
            written = [out / "metrics.json"]
            if not args.no_plots:
                from .plots import plot_all

                written += plot_all(run, out)
        except OSError as exc:
            print(f"sitecontroller simulate: cannot write {out}: {exc.strerror or exc}", file=sys.stderr)
            return 1
        print("wrote " + ", ".join(str(p) for p in written))
    return 0
