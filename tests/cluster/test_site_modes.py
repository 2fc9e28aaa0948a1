"""Every cluster mode on `scripts/run-sim --nodes 3`, real processes: one command switches the mode
(`sitecontroller cluster mode NAME --set ...`), the cluster acts on the simulated site, then the
leader is killed (-9) and the new leader resumes the same mode with the same parameters, and the
cluster acts again. A bad parameter is refused naming the field, and the running mode is untouched."""
import datetime as dt
import json
import os
import signal

import pytest

from tests.cluster.test_site_cluster import cluster, running, status, view
from tests.e2e.test_site_sim import NODES, site  # noqa: F401  (the fixture)
from tests.util import wait_until

pytestmark = pytest.mark.slow

ACT_S = 40.0  # a mode switched (or a new leader) -> the site shows the mode's effect


def _hour(offset_h: int = 0) -> str:
    now = dt.datetime.now(dt.timezone.utc).replace(minute=0, second=0, microsecond=0)
    return (now + dt.timedelta(hours=offset_h)).isoformat()


def _near(value, want, tol=200.0):
    return value is not None and abs(value - want) <= tol


def grid(s):
    return s.plant()["grid_p_w"]


# (mode, arguments, what the site shows when the mode acts: predicate(site, cluster view))
ROUNDS = [
    ("self_consumption", ["--set", "grid_target_w=0"], lambda s, c: abs(grid(s)) < 300),
    ("load_matching", ["--set", "import_limit_w=0", "--set", "export_limit_w=500"],
     lambda s, c: -800 < grid(s) < 300),
    ("charge_only", ["--set", "target_soc=0.95", "--set", "max_charge_w=1500"],
     lambda s, c: _near(c["actual_w"], -1500)),
    ("external_control", ["--params-json", json.dumps({"schedule": [
        {"start": _hour(-1), "end": _hour(3), "p_w": 2000, "q_var": 1000}]})],  # Q: node1's SunSpec inverter only
     lambda s, c: _near(c["actual_w"], 2000) and _near(sum(m["q_var"] or 0.0 for m in c["members"]), 1000)),
    ("cost_saving", ["--params-json", json.dumps({"prices": [
        {"start": _hour(h), "price": 0.05 + 0.25 * (h % 2)} for h in range(6)]})],
     lambda s, c: c["mode_note"].startswith("cost saving") and _near(c["actual_w"], c["target_w"], 300)),
    ("grid_forming", ["--set", "backup_reserve_soc=0.6", "--set", "charge_w=1000"],
     lambda s, c: _near(c["actual_w"], -1000)),
    ("passive", [], lambda s, c: _near(c["actual_w"], 0, 100)),
]


def acting(s, mode, check, node=None, not_leader=None, term_above=0):
    c = view(s, node)
    if c is None or c["leader"] in (None, not_leader) or c["term"] <= term_above or c["mode_running"] != mode \
            or c["dispatch"] is None or c["dispatch"]["term"] != c["term"]:
        return None
    return c if check(s, c) else None


def test_every_mode_acts_and_survives_a_leader_kill(site):  # noqa: F811
    s = site(3)
    try:
        wait_until(running(s, lambda: (c := cluster(s)) and c["leader"] and c), 40, 0.2, "a leader")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{s.output()[-3000:]}") from None
    done = []
    try:
        for mode, args, check in ROUNDS:
            r = s.cli("cluster", "mode", mode, *args, timeout=15)
            assert r.returncode == 0 and f"cluster_mode done: cluster mode {mode}" in r.stdout, r.stdout + r.stderr
            before = wait_until(lambda: acting(s, mode, check), ACT_S, 0.3, f"{mode} acts")
            leader, term = before["leader"], before["term"]
            survivor = next(n for n in NODES if n != leader)
            os.kill(status(s, leader)["pid"], signal.SIGKILL)
            after = wait_until(lambda: acting(s, mode, check, survivor, leader, term), ACT_S, 0.3,
                               f"{mode}: a new leader resumes it after {leader} was killed")
            assert after["mode"] == mode and after["mode_params"] == before["mode_params"], (before, after)
            done.append((mode, leader, after["leader"]))
            # the killed node is back (run-sim restarts it) before the next round
            wait_until(lambda: all((st := status(s, n)) and st["setpoint_source"] == "cluster" for n in NODES),
                       30, 0.3, "all three follow")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\nrounds done: {done}\n{view(s)}\n{s.output()[-2500:]}") from None

    # local: `cluster setpoint` is a local request with a heartbeat
    r = s.cli("cluster", "setpoint", "--w", "3000", "--hold", "120")
    assert r.returncode == 0, r.stdout + r.stderr
    wait_until(lambda: acting(s, "local", lambda s, c: _near(c["actual_w"], 3000)), ACT_S, 0.3, "local acts")

    # a bad parameter: refused with the field named, the running mode and its parameters untouched
    before = view(s)
    r = s.cli("cluster", "mode", "self_consumption", "--set", "deadband_w=-5", timeout=15)
    assert r.returncode == 1 and "deadband_w" in r.stdout and "greater than or equal to 0" in r.stdout, r.stdout
    r = s.cli("cluster", "mode", "self_consumption", "--set", "gain=3", timeout=15)
    assert r.returncode == 1 and "gain: Extra inputs are not permitted" in r.stdout, r.stdout
    r = s.cli("cluster", "mode", "warp", timeout=15)
    assert r.returncode == 2 and "unknown mode 'warp'" in r.stderr, r.stderr
    after = view(s)
    assert (after["mode"], after["mode_params"], after["version"]) == \
        (before["mode"], before["mode_params"], before["version"])
    r = s.cli("cluster", "mode", "--show")
    assert r.returncode == 0 and "mode local" in r.stdout and '"heartbeat_s": 120.0' in r.stdout, r.stdout

    # a mode change ends the local request: entering `local` again does not bring the old 3000 W back
    r = s.cli("cluster", "mode", "local", "--set", "heartbeat_s=3600", timeout=15)
    assert r.returncode == 0, r.stdout + r.stderr
    wait_until(lambda: acting(s, "local", lambda s, c: _near(c["actual_w"], 0, 100) and c["request_w"] == 0),
               ACT_S, 0.3, "local without a request: 0 W")
