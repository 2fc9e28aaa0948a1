"""`scripts/run-sim --nodes N`: one site simulator (one grid meter) and N node processes, as in the field.

The fast tests check the site physics and the site checks in-process; the slow one starts
`scripts/run-sim --nodes 3` as a real process (free ports, its own run directory so that its
site index is its own) and talks to it with the real command line.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sitecontroller.params import load, parse
from sitecontroller.preflight import port_in_use
from sitecontroller.sim.endpoint import SimUnreachable, sim_request
from sitecontroller.sim.site_plant import SitePlant
from sitecontroller.sim.run_sim import SITE_TEMPLATES
from sitecontroller.sim.run_site import default_socs, make_site_params, site_summary_line
from sitecontroller.sim.site import check_site
from tests.e2e.run_sim import alive
from tests.util import REPO, isolated_example, wait_until

CLI = [sys.executable, "-m", "sitecontroller.cli"]


# --- the site, in-process (fast) ---------------------------------------------------------------
def _site_params(tmp_path, n=3, free_ports=True):
    files = make_site_params(n, tmp_path / "site", SITE_TEMPLATES, free_ports=free_ports)
    return files, [load(f) for f in files]


def test_generated_node_files_are_distinct_nodes_behind_one_meter(tmp_path):
    files, params = _site_params(tmp_path, free_ports=False)
    assert [f.name for f in files] == ["node1.json", "node2.json", "node3.json"]
    assert [p.identity.node_id for p in params] == ["node1", "node2", "node3"]
    assert [p.simulation.initial_soc for p in params] == [0.3, 0.6, 0.9] == default_socs(3)
    assert [p.devices.bms.model for p in params] == ["bess_sim", "pylontech", "bess_sim"]
    assert [p.devices.inverter.model for p in params] == ["sunspec", "luxpowertek", "indevolt"]
    assert len({p.control.endpoint for p in params}) == 3 and params[0].control.endpoint == "tcp://127.0.0.1:5550"
    assert len({p.storage.data_dir for p in params}) == 3
    assert len({p.devices.inverter.port for p in params}) == 3 and len({p.devices.bms.can.channel for p in params}) == 3
    meters = {(p.devices.meter.model, p.devices.meter.host, p.devices.meter.port) for p in params}
    assert meters == {("em24", "127.0.0.1", 15021)}  # every node reads the one site meter
    assert {p.simulation.endpoint for p in params} == {"tcp://127.0.0.1:5560"}
    assert all(p.features.CLUSTER for p in params)  # one cluster: the same members in every file
    assert len({tuple(p.cluster.members) for p in params}) == 1 and len(params[0].cluster.members) == 3
    for p in params:  # each node's own key pair, made once, in its data directory
        from mastercontroller import keys
        own = next(m for m in p.cluster.members if m.node_id == p.identity.node_id)
        assert keys.load(p.data_dir)[0] == own.public_key
    from sitecontroller.preflight import cluster_key_problems
    assert not any(cluster_key_problems(p) for p in params)
    check_site(params)  # the site simulator takes them
    again = make_site_params(3, tmp_path / "site", SITE_TEMPLATES)  # a second run keeps the keys
    assert [load(f).cluster.members for f in again] == [p.cluster.members for p in params]


def test_the_one_meter_measures_load_minus_pv_minus_every_node(tmp_path):
    _, params = _site_params(tmp_path)
    site = SitePlant.from_params(params, wall_s=12 * 3600)  # noon: PV produces
    powers = {"node1": 2000.0, "node2": 0.0, "node3": -1500.0}
    for node_id, plant in site.nodes.items():
        plant.inverter.run_requested, plant.inverter.setpoint_p_w = True, powers[node_id]
    for _ in range(40):
        site.step(0.05)
    assert {n: p.inverter.p_w for n, p in site.nodes.items()} == pytest.approx(powers)
    assert site.pv_w > 0 and site.load_w > 0
    assert site.grid_p_w == pytest.approx(site.load_w - site.pv_w - 500.0)
    assert all(p.grid_p_w == site.grid_p_w for p in site.nodes.values())  # one meter, whoever asks
    assert all(p.grid is site.grid and p.load is site.load for p in site.nodes.values())
    socs = [p.battery.soc for p in site.nodes.values()]
    assert socs[0] < 0.3 and socs[1] == 0.6 and socs[2] > 0.9  # each node moves its own battery


@pytest.mark.parametrize("change, says", [
    (lambda d: d[1]["identity"].update(node_id="node1"), "identity.node_id: found node1 in more than one file"),
    (lambda d: d[2]["devices"].update(meter={"model": "em340", "transport": "tcp", "host": "127.0.0.1", "port": 1502}),
     "node3: devices.meter: found em340 at 127.0.0.1:1502; a site has one grid meter: em24 at 127.0.0.1:"),
    (lambda d: d[1]["devices"]["inverter"].update(port=d[0]["devices"]["inverter"]["port"]),
     "node2: $.devices.inverter.port: found 127.0.0.1:"),
])
def test_a_site_that_cannot_be_is_one_line(tmp_path, change, says):
    files, _ = _site_params(tmp_path)
    data = [json.loads(f.read_text()) for f in files]
    change(data)
    with pytest.raises(ValueError, match=re.escape(says)):
        check_site([parse(d) for d in data])


def test_a_node_without_meter_is_allowed_and_the_summary_names_every_node(tmp_path):
    files, _ = _site_params(tmp_path)
    data = [json.loads(f.read_text()) for f in files]
    data[1]["devices"]["meter"] = None
    check_site([parse(d) for d in data])
    line = site_summary_line({"node1": {"state": "run", "soc": 0.3, "p_w": 2000.0}, "node2": None},
                             {"grid_p_w": -1500.0, "load_w": 600.0, "pv_w": 100.0, "nodes_p_w": 2000.0})
    assert line == "site grid -1500 W (load 600 W, pv 100 W, nodes +2000 W) | node1 run 30.0% +2000 W | node2 down"
    # a member that has not executed a dispatch yet has no target: the line says so (and does not fail)
    line = site_summary_line({"node1": None}, None, {"leader": None, "term": 0, "mode": "passive", "mode_running": None,
                                                    "target_w": None, "actual_w": 0.0})
    assert line == "site: simulator not answering | leader none term 0 mode passive target n/a actual 0 W | node1 down"


# --- scripts/run-sim --nodes 3, real processes (slow) --------------------------------------------
class Site:
    def __init__(self, tmp_path: Path, nodes: int, *extra: str):
        self.tmp_path = tmp_path
        self.env = {**os.environ, "SITECONTROLLER_RUN_DIR": str(tmp_path / "run")}
        self.site_dir = tmp_path / "site"
        self.log = tmp_path / "run-sim.log"
        self._log_f = open(self.log, "w")
        self.proc = subprocess.Popen(
            ["bash", str(REPO / "scripts" / "run-sim"), "--nodes", str(nodes), "--free-ports",
             "--site-dir", str(self.site_dir), *extra],
            stdout=self._log_f, stderr=subprocess.STDOUT, cwd=REPO, env=self.env, start_new_session=True)

    def output(self) -> str:
        self._log_f.flush()
        return self.log.read_text()

    def cli(self, *args: str, timeout: float = 10) -> subprocess.CompletedProcess:
        return subprocess.run(CLI + list(args), capture_output=True, text=True, cwd=REPO, env=self.env,
                              timeout=timeout)

    def index(self) -> dict | None:
        try:
            return json.loads((self.tmp_path / "run" / "site" / "site.json").read_text())
        except (OSError, ValueError):
            return None

    def status(self, node: str) -> dict | None:
        r = self.cli("status", "--json", "--node", node)
        return json.loads(r.stdout) if r.returncode == 0 else None

    def plant(self, node: str | None = None) -> dict:
        return sim_request(self.index()["sim_endpoint"], {"op": "plant", **({"node": node} if node else {})})["plant"]

    def kill(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)  # run-sim, its simulator and its nodes: one group
            except ProcessLookupError:
                pass
            self.proc.wait(5)
        self._log_f.close()


@pytest.fixture
def site(tmp_path):
    started: list[Site] = []

    def start(nodes: int = 3, *extra: str) -> Site:
        started.append(Site(tmp_path, nodes, *extra))
        return started[-1]

    try:
        yield start
    finally:
        for s in started:
            s.kill()


NODES = ["node1", "node2", "node3"]


@pytest.mark.slow
def test_run_sim_nodes_3_one_meter_per_node_faults_and_a_stop_within_3_s(site, tmp_path):
    s = site(3, "--no-cluster")  # nodes alone: local setpoints per node
    wait_until(lambda: s.index() is not None, 30, 0.1, "the site index")
    files = [Path(n["params"]) for n in s.index()["nodes"]]
    params = [json.loads(f.read_text()) for f in files]

    def all_running():
        out = {n: s.status(n) for n in NODES}
        return out if all(st is not None and st["state"] == "run" and st["soc"] is not None
                          for st in out.values()) else None
    try:
        statuses = wait_until(all_running, 40, 0.2, "3 nodes in run")
    except AssertionError:
        raise AssertionError(s.output()[-4000:]) from None
    assert [statuses[n]["node_id"] for n in NODES] == NODES  # --node reaches each node
    assert [round(statuses[n]["soc"], 2) for n in NODES] == [0.3, 0.6, 0.9]  # over CAN, from each node's BMS
    node_pids = {n: statuses[n]["pid"] for n in NODES}
    sim_pid = sim_request(s.index()["sim_endpoint"], {"op": "ping"})["pid"]
    assert len(set(node_pids.values()) | {sim_pid, s.proc.pid}) == 5

    # no --node: the first node of the site that answers; an unknown node: one line naming the known ones
    r = s.cli("status", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["node_id"] == "node1", r.stderr
    r = s.cli("status", "--node", "node7")
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr.startswith("sitecontroller: unknown node 'node7'; known nodes: node1, node2, node3")
    assert len(r.stderr.strip().splitlines()) == 1

    # a setpoint on two nodes: the one meter measures load - PV - the sum of every node's power
    for node, w in (("node1", "2000"), ("node3", "-1500")):
        r = s.cli("setpoint", "--node", node, "--w", w, "--hold", "120")
        assert r.returncode == 0, r.stdout + r.stderr
    wait_until(lambda: s.plant("node1")["p_w"] > 1990 and s.plant("node3")["p_w"] < -1490, 10, 0.1,
               "node1 discharging 2 kW and node3 charging 1.5 kW")
    site_state = s.plant()
    assert site_state["nodes_p_w"] == pytest.approx(500, abs=20)
    assert site_state["grid_p_w"] == pytest.approx(
        site_state["load_w"] - site_state["pv_w"] - sum(p["p_w"] for p in site_state["nodes"].values()), abs=1e-6)

    def meter_read_by_every_node():
        sts = {n: s.status(n) for n in NODES}
        grid = s.plant()["grid_p_w"]
        node_sum = sum(sts[n]["p_w"] or 0 for n in NODES)  # each node's inverter power, over its protocol
        ok = (all(sts[n]["grid_p_w"] is not None and abs(sts[n]["grid_p_w"] - grid) < 250 for n in NODES)
              and abs(node_sum - 500) < 60)
        return (sts, grid) if ok else None
    sts, grid = wait_until(meter_read_by_every_node, 10, 0.2, "every node reading the one meter")
    assert sts["node2"]["p_w"] == pytest.approx(0, abs=30)

    # a fault on node2's battery reaches node2 only
    r = s.cli("sim", "fault", "--node", "node2", "battery", "cell_v_fault_v", "0.5")
    assert (r.returncode, r.stdout.strip()) == (0, "node2 battery cell_v_fault_v = 0.5"), r.stderr
    st2 = wait_until(lambda: (st := s.status("node2")) and st["state"] == "error" and st, 10, 0.1, "node2 in error")
    assert "CELL_OVERVOLTAGE" in {e["id"] for e in st2["errors"]}
    for node in ("node1", "node3"):
        st = s.status(node)
        # nothing of node2's fault, nothing critical (a transient bus warning of a loaded machine is not it)
        assert st["state"] == "run" and not [e for e in st["errors"] if e["severity"] == "critical"
                                             or e["id"].startswith("CELL_")], st
    assert s.plant("node1")["p_w"] > 1990 and s.plant("node3")["p_w"] < -1490
    r = s.cli("sim", "fault", "battery", "cell_v_fault_v", "0.5")  # a per-node device needs --node
    assert r.returncode == 1 and "battery is one per node: give --node ID" in r.stderr
    r = s.cli("sim", "fault", "--node", "node9", "bms", "silent")
    assert r.returncode == 1 and "unknown node 'node9'; this simulator's nodes: node1, node2, node3" in r.stderr
    r = s.cli("sim", "fault", "--node", "node2", "--clear")
    assert (r.returncode, r.stdout.strip()) == (0, "cleared: node2 battery cell_v_fault_v"), r.stderr

    # a node killed is started again by itself; the others and the simulator carry on
    os.kill(node_pids["node3"], signal.SIGKILL)
    wait_until(lambda: (st := s.status("node3")) and st["pid"] != node_pids["node3"] and st["state"] == "run",
               30, 0.2, "node3 started again and in run")
    assert "node node3 exited (killed by SIGKILL); the simulator keeps running" in s.output()
    assert s.status("node1")["pid"] == node_pids["node1"] and alive(sim_pid)
    pids = [sim_pid] + [s.status(n)["pid"] for n in NODES]

    # the site prints one summary line a second: the meter and every node
    lines = [ln for ln in s.output().splitlines() if ln.startswith("site grid ")]
    assert lines and all(n in lines[-1] for n in NODES), lines[-3:]

    # SIGTERM: nodes first, then the simulator; everything gone and every port free within 3 s
    ports = [int(re.search(r":(\d+)$", p["control"]["endpoint"])[1]) for p in params]
    ports += [p["devices"]["inverter"]["port"] for p in params] + [params[0]["devices"]["meter"]["port"]]
    ports += [int(p["devices"]["bms"]["can"]["channel"].rsplit(":", 1)[1]) for p in params]
    ports.append(int(params[0]["simulation"]["endpoint"].rsplit(":", 1)[1]))
    t0 = time.monotonic()
    s.proc.send_signal(signal.SIGTERM)
    assert s.proc.wait(10) == 0, s.output()[-3000:]
    took = time.monotonic() - t0
    gone = wait_until(lambda: not any(alive(p) for p in pids), 1, 0.02, "every child gone")
    assert gone and took < 3.0, f"stopping the site took {took:.2f} s"
    assert not [p for p in ports if port_in_use("127.0.0.1", p)]
    out = s.output()
    assert out.index("node node1 stopped (exit status 0)") < out.index("simulator stopped"), "the nodes stop first"
    assert "Traceback" not in out and s.index() is None  # the index is gone with the site
    with pytest.raises(SimUnreachable):
        sim_request(params[0]["simulation"]["endpoint"], {"op": "ping"}, timeout_s=0.3)


def test_node_flag_without_a_site_is_one_line(tmp_path):
    env = {**os.environ, "SITECONTROLLER_RUN_DIR": str(tmp_path / "run")}
    r = subprocess.run(CLI + ["status", "--node", "node2"], capture_output=True, text=True, cwd=REPO, env=env,
                       timeout=20)
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1
    assert r.stderr.startswith("sitecontroller: unknown node 'node2'; known nodes: none"), r.stderr


def test_isolated_single_node_example_still_simulates_alone(tmp_path):
    """--nodes 1 keeps one node's simulator exactly as it was: its own meter, its own grid."""
    from sitecontroller.clock import RealClock
    from sitecontroller.sim.site import SimulatedSite

    one = SimulatedSite(parse(isolated_example("sim_node2_pylontech_lux_p1.json", tmp_path)), RealClock())
    assert one.site_plant is None and one.plant.site is None and set(one.sims) == {"bms_bus", "bms", "inverter", "meter"}
    assert one.knobs.devices == ["bms", "inverter", "meter", "battery", "grid"]


def test_free_ports_of_a_site_are_never_handed_out_twice(tmp_path, monkeypatch):
    from sitecontroller.sim import run_site

    handed = iter([40001, 40001, 40001] + list(range(40002, 40200)))  # the OS may give a closed port again
    monkeypatch.setattr(run_site, "_free_port", lambda: next(handed))
    data = [json.loads(f.read_text()) for f in make_site_params(3, tmp_path / "site", SITE_TEMPLATES, free_ports=True)]

    def port(text):
        return int(str(text).rsplit(":", 1)[1])
    listeners = [port(m[kind]) for m in data[0]["cluster"]["members"] for kind in ("raft", "data")]
    listeners += [data[0]["devices"]["meter"]["port"], port(data[0]["simulation"]["endpoint"])]
    for d in data:
        listeners += [port(d["control"]["endpoint"]), d["devices"]["inverter"]["port"]]
        listeners += [port(d["devices"]["bms"]["can"]["channel"])] if d["devices"]["bms"].get("can") else []
    assert 40001 in listeners and len(set(listeners)) == len(listeners), sorted(listeners)
