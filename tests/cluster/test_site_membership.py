"""A node added to a running cluster, and removed again, end to end with real processes.

`scripts/run-sim --nodes 4 --keep-params` runs four nodes behind one site meter, but only
node1..node3 start as the cluster: their files list three members, node4's lists all four
(the way a technician brings a new node up). node4 runs, is refused by the members and gets
no setpoint, until `sitecontroller cluster add --member-params node4.json` adds it through the
Raft log: then it is heard and dispatched to. A member restarted with its old three-member
file still knows node4 (from its Raft journal). `cluster remove node4` drops it again: it
gets no more setpoints and ramps to 0 W.
"""
import json

import pytest

from sitecontroller.sim.run_sim import SITE_TEMPLATES
from sitecontroller.sim.run_site import make_site_params
from tests.cluster.test_site_cluster import cluster
from tests.e2e.test_site_sim import site  # noqa: F401  (the fixture)
from tests.util import wait_until

pytestmark = pytest.mark.slow
FIRST = ["node1", "node2", "node3"]


def members(c):
    return sorted(m["node_id"] for m in c["members"]) if c else None


def online(c):
    return sorted(m["node_id"] for m in c["members"] if m["online"]) if c else None


def test_a_node_added_at_run_time_gets_setpoints_and_a_removed_one_ramps_to_zero(site, tmp_path):  # noqa: F811
    site_dir = tmp_path / "site"  # the Site fixture's --site-dir
    files = make_site_params(4, site_dir, SITE_TEMPLATES, free_ports=True)
    for f in files[:3]:  # the first three know only each other
        data = json.loads(f.read_text())
        data["cluster"]["members"] = [m for m in data["cluster"]["members"] if m["node_id"] != "node4"]
        f.write_text(json.dumps(data, indent=2))
    s = site(4, "--keep-params")
    try:
        wait_until(lambda: (c := cluster(s, "node1")) and c["leader"] in FIRST and online(c) == FIRST, 40, 0.2,
                   "a leader of node1..node3")
    except AssertionError:
        raise AssertionError(s.output()[-3000:]) from None
    r = s.cli("cluster", "setpoint", "--w", "6000", "--node", "node2")
    assert r.returncode == 0, r.stdout + r.stderr
    wait_until(lambda: abs(cluster(s, "node1")["actual_w"] - 6000) < 150, 15, 0.2, "6000 W from three nodes")
    st4 = wait_until(lambda: s.status("node4"), 20, 0.2, "node4 answers")
    assert st4["setpoint_source"] != "cluster" and abs(st4["p_w"] or 0) < 50, st4  # refused: no setpoint
    assert cluster(s, "node4")["leader"] is None

    r = s.cli("cluster", "add", "--member-params", str(files[3]), "--node", "node3")
    assert r.returncode == 0 and "cluster_add_member done: node4 added" in r.stdout, r.stdout + r.stderr
    every = FIRST + ["node4"]
    wait_until(lambda: all(members(cluster(s, n)) == every for n in every), 10, 0.2, "four members everywhere")
    try:
        wait_until(lambda: (st := s.status("node4")) and st["setpoint_source"] == "cluster" and st["p_w"] > 300,
                   15, 0.2, "node4 takes its share")
    except AssertionError:
        raise AssertionError(s.output()[-3000:]) from None
    wait_until(lambda: (c := cluster(s, "node4")) and online(c) == every and abs(c["actual_w"] - 6000) < 150,
               15, 0.2, "6000 W from four nodes")
    r = s.cli("cluster", "add", "--member-params", str(files[3]), "--node", "node1")  # twice: one clear refusal
    assert r.returncode == 1 and "already a member" in r.stdout, r.stdout + r.stderr

    # a member restarted from its three-member file still knows node4: the Raft journal has the change
    follower = next(n for n in FIRST if n != cluster(s, "node1")["leader"])
    pid = s.status(follower)["pid"]
    r = s.cli("restart", "--node", follower)
    assert r.returncode == 0, r.stdout + r.stderr
    wait_until(lambda: (st := s.status(follower)) and st["pid"] != pid and st["setpoint_source"] == "cluster",
               30, 0.2, f"{follower} restarted and follows")
    assert members(cluster(s, follower)) == every

    r = s.cli("cluster", "remove", "node4", "--node", "node1")
    assert r.returncode == 0 and "node4 removed" in r.stdout, r.stdout + r.stderr
    wait_until(lambda: all(members(cluster(s, n)) == FIRST for n in FIRST), 10, 0.2, "three members again")
    wait_until(lambda: (st := s.status("node4")) and st["setpoint_source"] != "cluster" and abs(st["p_w"]) < 50,
               10, 0.2, "node4 ramps to 0 W")
    try:  # what their limits allow of it: the leader reports the rest as unplaced
        wait_until(lambda: (c := cluster(s, "node1")) and abs(c["actual_w"] + (c["unplaced_w"] or 0) - 6000) < 150,
                   15, 0.2, "the three carry 6000 W")
    except AssertionError:
        raise AssertionError(f"{cluster(s, 'node1')}\n{s.output()[-3000:]}") from None
    r = s.cli("cluster", "remove", "node9", "--node", "node1")
    assert r.returncode == 1 and "'node9' is not a member" in r.stdout, r.stdout + r.stderr
