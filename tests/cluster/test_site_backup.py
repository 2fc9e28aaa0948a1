"""Backup on `scripts/run-sim --nodes 3 --backup`, real processes over the real protocols: the
operator's `cluster backup-test` passes, and a blackout during which the leader is killed (-9)
stays carried on every sample — the inverters form the grid by themselves, so no election
interrupts them — and the mode resumes after the grid is back."""
import json
import os
import signal
import time

import pytest

from tests.cluster.test_site_cluster import running, status, view
from tests.e2e.test_site_sim import NODES, site  # noqa: F401  (the fixture)
from tests.util import wait_until

pytestmark = pytest.mark.slow

UNSERVED_W = 1.0
CARRY_S = 3.0  # the grid opens -> every inverter forms it and nothing is unserved
BLACKOUT_S = 8.0  # how long the grid stays lost around the leader kill
RESUME_S = 30.0  # the grid is back -> the mode resumes (the leader's resync time is 10 s)


def islanded(s):
    """The site while the grid is lost: every inverter forms it, nothing unserved, every node reports it."""
    plant = s.plant()
    forming = all(n["grid_forming"] and n["run_requested"] for n in plant["nodes"].values())
    c = view(s)
    reported = c is not None and all(m["island"] for m in c["members"])
    return plant if plant["grid_lost"] and forming and plant["unserved_w"] < UNSERVED_W and reported else None


def test_backup_test_passes_and_a_blackout_survives_a_leader_kill(site):  # noqa: F811
    s = site(3, "--backup")
    try:
        wait_until(running(s, lambda: (c := view(s)) and c["leader"] and c["backup"] and c), 40, 0.2,
                   "a leader of a backup site")
        r = s.cli("cluster", "mode", "self_consumption", timeout=15)
        assert r.returncode == 0, r.stdout + r.stderr
        wait_until(lambda: (c := view(s)) and c["mode_running"] == "self_consumption", 20, 0.2, "the mode runs")

        # the operator's backup test: a blackout on purpose, carried, and the mode back afterwards
        r = s.cli("cluster", "backup-test", "--seconds", "5", "--json", timeout=90)
        report = json.loads(r.stdout)
        assert r.returncode == 0 and report["passed"], (r.stdout, r.stderr)
        assert report["carried_after_s"] <= CARRY_S and report["mode_during"] == "grid_forming", report

        # a blackout, and the leader killed in the middle of it
        r = s.cli("sim", "fault", "grid", "lost", "true")
        assert r.returncode == 0, r.stdout + r.stderr
        wait_until(lambda: islanded(s), CARRY_S, 0.1, "the site carried by the inverters")
        before = wait_until(lambda: (c := view(s)) and c["mode_running"] == "grid_forming" and c, 5, 0.1,
                            "the leader runs the island")
        leader = before["leader"]
        os.kill(status(s, leader)["pid"], signal.SIGKILL)
        end, samples = time.monotonic() + BLACKOUT_S, 0
        while time.monotonic() < end:  # a "never": every sample of the window
            plant = s.plant()
            assert plant["grid_lost"] and plant["unserved_w"] < UNSERVED_W, (samples, plant)
            samples += 1
            time.sleep(0.05)
        survivor = next(n for n in NODES if n != leader)
        after = wait_until(lambda: (c := view(s, survivor)) and c["leader"] not in (None, leader)
                           and c["term"] > before["term"] and c["mode_running"] == "grid_forming" and c,
                           10, 0.2, "a new leader runs the island")
        r = s.cli("sim", "fault", "grid", "lost", "false")
        assert r.returncode == 0, r.stdout + r.stderr
        wait_until(lambda: (c := view(s, survivor)) and c["mode_running"] == "self_consumption"
                   and not c["grid_forming"], RESUME_S, 0.3, "self_consumption resumes after the resync")
        assert samples > 20 and after["mode"] == "self_consumption", (samples, after)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{view(s)}\n{s.output()[-3000:]}") from None
