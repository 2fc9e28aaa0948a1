"""SCADA on a cluster (`scripts/run-sim --nodes 3`, real processes): every node serves the cluster
values (leader, term, cluster SoC and power); a mode or a cluster target written to a follower's
SCADA server goes through the Raft log to the whole cluster; a node setpoint on a cluster member is
refused (04); when the heartbeat stops the cluster returns to the mode it ran before SCADA."""
import json

import pytest

from tests.cluster.test_site_cluster import cluster, running, view
from tests.e2e.test_site_sim import NODES, site  # noqa: F401  (the fixture)
from tests.protocol.scada_rig import ScadaClient, exception_in
from tests.util import REPO, wait_until

pytestmark = pytest.mark.slow
TIMEOUT_S = 3.0


def scada_site(site, tmp_path):  # noqa: F811
    template = json.loads((REPO / "site_parameters" / "sim_node1.json").read_text())
    template["scada"] = {"enabled": True, "heartbeat_timeout_s": TIMEOUT_S, "fallback": "previous_mode"}
    path = tmp_path / "scada_template.json"
    path.write_text(json.dumps(template))
    s = site(3, "--params", str(path))
    try:
        c = wait_until(running(s, lambda: (c := cluster(s)) and c["leader"] and c), 60, 0.2, "a leader")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{s.output()[-3000:]}") from None
    clients = {n: ScadaClient(json.loads((s.site_dir / f"{n}.json").read_text())["scada"]["port"]) for n in NODES}
    return s, c, clients


def test_cluster_values_from_any_node_and_cluster_writes_through_raft(site, tmp_path):  # noqa: F811
    s, c, clients = scada_site(site, tmp_path)
    leader = c["leader"]
    roles = {n: clients[n].read("Role")[0] for n in NODES}
    assert sorted(roles.values()) == [1, 1, 3] and roles[leader] == 3, roles  # two followers, one leader
    for n in NODES:
        m = clients[n]
        assert m.read("CtlMode") == [2]  # cluster control
        assert m.read_text("LeaderId") == leader
        assert m.read("Term")[0] == view(s, n)["term"]
        assert m.read("ModeSel") == [1]  # passive
        socs = [x["soc"] for x in view(s, n)["members"] if x["online"]]
        assert m.read("ClSoC")[0] / 10 == pytest.approx(100 * sum(socs) / len(socs), abs=0.5)

    follower = next(n for n in NODES if n != leader)
    m = clients[follower]
    assert m.write("WrEna", 1)[0] == 0
    rc, out = m.write("NodeWSet", 1000)  # a cluster member takes power from the leader only
    assert rc != 0 and exception_in(out) == "04", out
    # a mode with its parameter: self_consumption holding the grid at 0 W
    assert m.write("ModeParW", 0)[0] == 0
    assert m.write("ModeSel", 2)[0] == 0  # answered once the Raft log has committed it
    # committed: every member applies it (a follower learns the commit with the leader's next message)
    assert wait_until(lambda: all(view(s, n)["mode"] == "self_consumption" for n in NODES), 3, 0.1,
                      "every member in self_consumption")
    assert wait_until(lambda: clients[leader].read("ModeSel") == [2], 3, 0.1, "the leader's map shows it")
    # a cluster target: mode local, 3000 W
    beat = 0
    assert m.write("ClTgtWSet", 3000)[0] == 0
    c = view(s, leader)
    assert c["mode"] == "local" and c["request_w"] == 3000
    # beats keep it ...
    for _ in range(3):
        beat += 1
        assert m.write("Hb", beat)[0] == 0
        wait_until(lambda: clients[leader].read("ClTgtW")[0] != 0, 10, 0.5, "the leader's target")
    # ... and when they stop, the cluster returns to what ran before SCADA's first write (passive)
    c = wait_until(lambda: (v := view(s, leader)) and v["mode"] == "passive" and v, TIMEOUT_S + 6, 0.2,
                   "the previous mode back")
    st = s.status(follower)
    assert any(e["id"] == "SCADA_HEARTBEAT_LOST" for e in st["errors"])
    wait_until(lambda: m.read("CtlSt") == [2], 3, 0.1, "CtlSt fallback (the bank refreshes once per cycle)")
