"""A real network partition of `scripts/run-sim --nodes 3 --keep-params`: every cluster link (Raft and data
plane, each direction) goes through its own TCP proxy (tests/cluster/proxy.py), and cutting the proxies to
and from the leader isolates it while the site keeps running.

The isolated leader loses its lease within 2 s and its node ramps to 0 W; the two others elect a new
leader at a higher term, carry the cluster target and take a new one; after the heal there is one leader,
one state everywhere, the old leader follows again and three nodes share the power; and, from the nodes'
journals, no two terms were ever executed at the same time."""
import json
import os
import signal
import time
from pathlib import Path

import pytest

from sitecontroller.sim.run_sim import SITE_TEMPLATES
from sitecontroller.sim.run_site import make_site_params
from tests.cluster.journal import assert_terms_never_overlap, read_windows
from tests.cluster.proxy import Proxy
from tests.cluster.test_site_cluster import agreed, carried, cluster, running, sharing, since, status, view
from tests.e2e.test_site_sim import NODES, site  # noqa: F401  (the fixture)
from tests.util import wait_until

pytestmark = pytest.mark.slow

LEASE_LOST_S = 2.0  # the cut -> the isolated leader reports has_lease false
RAMP_S = 4.0  # the cut -> the isolated node's inverter at |p| < 50 W (lease, dispatch_valid_s 0.3 s, ramp)
NEW_LEADER_S = 5.0  # the cut -> the majority agrees on a new leader
STALE_S = 1.0  # cluster.status_stale_s: a member not heard for this long is offline


@pytest.fixture
def proxies():
    made: list[Proxy] = []
    try:
        yield made
    finally:
        for p in made:
            p.close()


def _port(address: str) -> int:
    return int(address.rsplit(":", 1)[1])


def _proxy(target_port: int, taken: set[int], made: list[Proxy]) -> Proxy:
    """A proxy to target_port on a port that no node file uses (those were free when written, not held)."""
    for _ in range(20):
        p = Proxy(target_port)
        made.append(p)  # closed by the fixture whatever happens
        if p.port not in taken:
            taken.add(p.port)
            return p
        p.close()
    raise AssertionError("no free port for a proxy")


def _ports(data: dict[str, dict]) -> list[int]:
    """Every port the site listens on, once per listener: each node's control endpoint, inverter and BMS bus,
    the members' Raft and data ports, the site meter and the simulator endpoint."""
    first = data["node1"]
    ports = [_port(m[kind]) for m in first["cluster"]["members"] for kind in ("raft", "data")]
    ports += [first["devices"]["meter"]["port"], _port(first["simulation"]["endpoint"])]
    for d in data.values():
        devices = d["devices"]
        ports.append(_port(d["control"]["endpoint"]))
        ports += [devices["inverter"]["port"]] if devices["inverter"].get("port") else []
        ports += [_port(devices["bms"]["can"]["channel"])] if devices["bms"].get("can") else []
    return ports


def partitioned_site(site_dir, made: list[Proxy]) -> dict[tuple[str, str, str], Proxy]:
    """Write the node files as run-sim would, then route every member's view of every OTHER member through
    one proxy per directed link and kind: (src, dst, "raft" | "data"). Each node's own entry stays its
    real address (it binds it)."""
    files = make_site_params(3, site_dir, SITE_TEMPLATES, free_ports=True)
    data = {f.stem: json.loads(f.read_text()) for f in files}
    ports = _ports(data)
    assert len(set(ports)) == len(ports), f"make_site_params gave the same port twice: {sorted(ports)}"
    taken = set(ports)
    real = {m["node_id"]: m for m in data["node1"]["cluster"]["members"]}
    links = {}
    for src, d in data.items():
        members = []
        for m in d["cluster"]["members"]:
            dst = m["node_id"]
            if dst != src:
                m = dict(m)
                for kind in ("raft", "data"):
                    links[(src, dst, kind)] = p = _proxy(_port(real[dst][kind]), taken, made)
                    m[kind] = f"127.0.0.1:{p.port}"
            members.append(m)
        d["cluster"]["members"] = members
        (site_dir / f"{src}.json").write_text(json.dumps(d, indent=2) + "\n")
    return links


def test_a_partitioned_leader_stops_the_majority_carries_on_and_the_heal_rejoins(site, proxies, tmp_path):  # noqa: F811
    links = partitioned_site(tmp_path / "site", proxies)
    assert len(links) == 12
    s = site(3, "--keep-params")
    assert s.site_dir == tmp_path / "site"
    timeline: dict[str, float] = {}

    def fail(msg: str) -> AssertionError:
        return AssertionError(f"{msg}\ntimeline: {timeline}\n{s.output()[-3000:]}")

    try:
        wait_until(running(s, lambda: agreed(s, NODES)), 40, 0.2, "one leader agreed by three nodes")
        files = {n["node_id"]: n["params"] for n in s.index()["nodes"]}
        for n in NODES:  # the site runs the proxied files as they are
            own = json.loads(Path(files[n]).read_text())["cluster"]["members"]
            assert {m["node_id"]: m["raft"] for m in own if m["node_id"] != n} == \
                {dst: f"127.0.0.1:{p.port}" for (src, dst, kind), p in links.items() if src == n and kind == "raft"}
        r = s.cli("cluster", "setpoint", "--w", "6000")
        assert r.returncode == 0 and "cluster target 6000 W" in r.stdout, r.stdout + r.stderr
        wait_until(lambda: sharing(s, 6000), 15, 0.2, "6000 W shared by three nodes")
        leader, views = wait_until(lambda: agreed(s, NODES, target_w=6000), 10, 0.1, "one leader")
        term = views[leader]["term"]
        majority = [n for n in NODES if n != leader]
        before_w = s.plant(leader)["p_w"]
    except AssertionError as exc:
        raise fail(str(exc)) from None

    # --- the partition: every link to and from the leader, Raft and data plane ------------------------
    for (src, dst, _), p in links.items():
        if leader in (src, dst):
            p.cut()
    t0 = time.monotonic()
    try:
        lost = since(t0, LEASE_LOST_S, lambda: (c := view(s, leader)) is not None and not c["has_lease"],
                     f"{leader} (isolated) reports has_lease false", interval_s=0.01)
        timeline["lease_lost_s"] = round(lost, 3)
        c = cluster(s, leader)  # the operator's command says so too
        assert c is not None and not c["has_lease"], c
        new, views = wait_until(lambda: (a := agreed(s, majority)) and a[0] != leader and a, NEW_LEADER_S, 0.02,
                                "a new leader agreed by the majority")
        timeline["new_leader_s"] = round(time.monotonic() - t0, 3)
        assert views[new]["term"] > term, (term, views)

        def at_zero():
            st, plant = status(s, leader), s.plant(leader)
            return st is not None and st["p_w"] is not None and abs(st["p_w"]) < 50 and abs(plant["p_w"]) < 50
        timeline["isolated_at_0_w_s"] = round(since(t0, RAMP_S, at_zero, f"{leader} (isolated, was at "
                                                    f"{before_w:.0f} W) at 0 W in its status and the simulator"), 3)
        st = status(s, leader)
        assert st["setpoint_source"] != "cluster", st
        wait_until(lambda: carried(s, 6000, new, majority), 10, 0.1, "the majority carries 6000 W")
        timeline["majority_6000_w_s"] = round(time.monotonic() - t0, 3)
        wait_until(lambda: not next(m for m in view(s, new)["members"] if m["node_id"] == leader)["online"],
                   STALE_S + 2, 0.1, f"{leader} offline in the new leader's view")
        timeline["offline_s"] = round(time.monotonic() - t0, 3)

        # a new target through a majority node (not necessarily its leader): applied by the majority only
        r = s.cli("cluster", "setpoint", "--w", "4000", "--node", majority[-1])
        assert r.returncode == 0 and "cluster target 4000 W" in r.stdout, r.stdout + r.stderr
        wait_until(lambda: agreed(s, majority, target_w=4000) and carried(s, 4000, new, majority), 10, 0.1,
                   "the majority carries 4000 W")
        timeline["majority_4000_w_s"] = round(time.monotonic() - t0, 3)
        wait_until(lambda: (c := view(s, leader)) and c["role"] != "leader", 5, 0.05, f"{leader} steps down")
        c = view(s, leader)
        assert c["target_w"] == 6000 and not c["has_lease"], c  # it heard nothing of the new target
        assert abs(s.plant(leader)["p_w"]) < 50
    except AssertionError as exc:
        raise fail(f"during the partition: {exc}") from None

    # --- the heal ------------------------------------------------------------------------------------
    for p in links.values():
        p.heal()
    t1 = time.monotonic()
    try:
        def one_state():
            a = agreed(s, NODES, target_w=4000)
            return a if a and len({v["version"] for v in a[1].values()}) == 1 else None
        healed, views = wait_until(one_state, 20, 0.1, "one leader and one state (target 4000 W) on all three")
        timeline["healed_one_leader_s"] = round(time.monotonic() - t1, 3)
        assert views[healed]["term"] > term
        wait_until(lambda: (st := status(s, leader)) and st["setpoint_source"] == "cluster"
                   and st["role"] in ("follower", "leader"), 15, 0.1, f"{leader} follows again")
        wait_until(lambda: (a := agreed(s, NODES, target_w=4000)) and sharing(s, 4000, a[0], online=3), 15, 0.1,
                   "three nodes share 4000 W")
        timeline["healed_4000_w_s"] = round(time.monotonic() - t1, 3)
    except AssertionError as exc:
        raise fail(f"after the heal: {exc}") from None
    print(f"partition of {leader} (term {term}): {timeline}")

    # stop the site (each node closes its journal), then compare every node's executed terms
    os.killpg(s.proc.pid, signal.SIGTERM)
    s.proc.wait(10)
    try:
        assert_terms_never_overlap(read_windows(s.site_dir, NODES), min_terms=2)
    except AssertionError as exc:
        raise fail(str(exc)) from None
