"""`sitecontroller cluster backup-test --seconds N`: open the grid, watch the cluster carry the site, close it.

A backup test proves what a blackout would do: the site's grid connection opens, the nodes'
inverters form the grid and carry the load, and when the grid is back the cluster
resynchronises and its mode resumes. Here the grid relay is the simulated site's (`sim fault
grid lost`): this version has no driver for a real grid relay, and says so instead of pretending.

Steps (every step printed; `--json`: one object at the end):
1. checks, before anything is touched: a leader, the cluster able to form the grid (backup
   hardware on, or the `grid_forming` mode), every member online and running, the grid present;
2. opens the grid and watches for `seconds`: when the inverters carry the whole load (no unserved
   power at the site), and any unserved power after that;
3. closes the grid, always (also after Ctrl-C or an error), and waits for the mode to resume.

Passed: the load was carried within CARRY_LIMIT_S and never dropped after, and the mode resumed.
Exit status: 0 passed, 1 failed (or a check refused the test), 2 no simulated site to test.
"""
from __future__ import annotations

import json
import sys
import time

CARRY_LIMIT_S = 5.0  # the inverters must carry the site this soon after the grid opens
RESUME_LIMIT_S = 30.0  # after the grid closes: the leader's resync time (10 s by default) and some margin
POLL_S = 0.2
UNSERVED_W = 1.0  # unserved power below this is rounding, not a dropped load


class Refused(Exception):
    """A check before the test failed: nothing was touched."""


def preflight(cluster: dict, site: dict) -> None:
    if not cluster.get("leader"):
        raise Refused("the cluster has no leader")
    if not (cluster.get("backup") or cluster.get("mode") == "grid_forming"):
        raise Refused("the cluster cannot form the grid: features.BACKUP is off and the mode is not grid_forming "
                      "(a simulated site with backup: scripts/run-sim --nodes N --backup)")
    not_ready = [m["node_id"] for m in cluster["members"] if not m["online"] or m["state"] != "run"]
    if not_ready:
        raise Refused(f"members not online and running: {', '.join(not_ready)}")
    if site.get("grid_lost"):
        raise Refused("the grid is already lost")


def run(status, plant, set_grid_lost, seconds: float, say=print, clock=time.monotonic, sleep=time.sleep) -> dict:
    """The test. `status()`: the cluster status (a member's `cluster status --json`); `plant()`: the simulated
    site (`sim state --json`); `set_grid_lost(bool)`: the grid relay."""
    cluster, site = status(), plant()
    preflight(cluster, site)
    before = cluster.get("mode_running") or cluster["mode"]
    report = {"mode_before": before, "seconds": seconds, "load_w_max": 0.0, "carried_w_max": 0.0,
              "carried_after_s": None, "unserved_w_max_after_carried": 0.0, "resumed_after_s": None,
              "mode_during": None}
    say(f"backup test: mode {before}; opening the grid for {seconds:g} s")
    set_grid_lost(True)
    opened = clock()
    try:
        while (now := clock()) - opened < seconds:
            site, cluster = plant(), status()
            report["mode_during"] = cluster.get("mode_running") or report["mode_during"]
            report["load_w_max"] = max(report["load_w_max"], site["load_w"])
            report["carried_w_max"] = max(report["carried_w_max"], abs(site["nodes_p_w"]))
            if report["carried_after_s"] is None:  # every inverter forms the grid, nothing unserved
                forming = all(n["grid_forming"] and n["run_requested"] for n in site["nodes"].values())
                if site["grid_lost"] and forming and site["unserved_w"] < UNSERVED_W:
                    report["carried_after_s"] = round(now - opened, 2)
                    say(f"  carried after {now - opened:.1f} s: {site['nodes_p_w']:.0f} W, "
                        f"mode {report['mode_during']}")
            else:
                report["unserved_w_max_after_carried"] = max(report["unserved_w_max_after_carried"], site["unserved_w"])
            sleep(POLL_S)
    finally:
        set_grid_lost(False)
        closed = clock()
        say("  grid closed again; waiting for the cluster to resynchronise")
    while clock() - closed < RESUME_LIMIT_S:
        cluster = status()
        if cluster.get("mode_running") == before and not cluster.get("grid_forming"):
            report["resumed_after_s"] = round(clock() - closed, 2)
            break
        sleep(POLL_S)
    report["passed"] = (report["carried_after_s"] is not None and report["carried_after_s"] <= CARRY_LIMIT_S
                        and report["unserved_w_max_after_carried"] < UNSERVED_W
                        and report["resumed_after_s"] is not None)
    return report


def describe(r: dict) -> str:
    carried = ("never carried the load" if r["carried_after_s"] is None
               else f"carried within {r['carried_after_s']:.1f} s (limit {CARRY_LIMIT_S:g} s), "
                    f"up to {r['carried_w_max']:.0f} W (load up to {r['load_w_max']:.0f} W), unserved after that at most "
                    f"{r['unserved_w_max_after_carried']:.0f} W")
    resumed = ("did not resume" if r["resumed_after_s"] is None
               else f"{r['mode_before']} resumed {r['resumed_after_s']:.1f} s after the grid closed")
    return f"backup test {'PASSED' if r['passed'] else 'FAILED'}: {carried}; {resumed}"


def cmd_backup_test(args) -> int:
    from sitecontroller.cli import _ask
    from sitecontroller.sim.endpoint import SimUnreachable, sim_request
    from sitecontroller.sim.site_index import read_site_index

    if not 1 <= args.seconds <= 3600:
        print(f"sitecontroller cluster backup-test: --seconds must be from 1 to 3600, got {args.seconds:g}",
              file=sys.stderr)
        return 2
    endpoint = args.sim_endpoint or (read_site_index() or {}).get("sim_endpoint")
    if not endpoint:
        print("sitecontroller cluster backup-test: no simulated site running (scripts/run-sim --nodes N --backup), "
              "and no --sim-endpoint; this version has no driver for a real grid relay", file=sys.stderr)
        return 2

    def sim(payload: dict) -> dict:
        reply = sim_request(endpoint, payload, timeout_s=2.0)
        if not reply.get("ok"):
            raise SimUnreachable(reply.get("error"))
        return reply

    def set_grid_lost(lost: bool) -> None:
        sim({"op": "set", "device": "grid", "knob": "lost", "value": "true" if lost else "false"})

    say = (lambda _text: None) if args.json else print
    try:
        report = run(lambda: _ask(args, {"op": "cluster_status"})["cluster"], lambda: sim({"op": "plant"})["plant"],
                     set_grid_lost, args.seconds, say)
    except Refused as exc:
        print(f"sitecontroller cluster backup-test: not started: {exc}", file=sys.stderr)
        return 1
    except SimUnreachable as exc:
        print(f"sitecontroller cluster backup-test: the simulator: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(report) if args.json else describe(report))
    return 0 if report["passed"] else 1
