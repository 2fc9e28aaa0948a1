"""`scripts/run-sim --nodes N` (N > 1): one site simulator and N node processes (see run_sim.py).

The node parameter files of the site (`make_site_params`), the site index that
`sitecontroller ... --node ID` reads, the summary line, and `SiteSupervisor`, which
runs the simulator and the nodes and restarts each node by itself.
"""
from __future__ import annotations

import argparse
import json
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from .run_sim import (READY_TIMEOUT_S, RESTART_CODES, RESTART_DELAY_S, ROOT, SITE_TEMPLATES, Supervisor, _child_setup,
                      _status, say)
from .site_index import remove_site_index, write_site_index

MAX_NODES = 20
SIM_ENDPOINT_PORT = 5560  # the examples' layout: the simulator, node K's control endpoint and devices
CONTROL_PORT = 5550
DEVICE_PORT = 15020  # node K: inverter DEVICE_PORT + 10 (K-1), BMS (SLCAN) + 2; the site meter: + 1 of node 1
SITE_STOP_S = 3.0  # Ctrl-C/SIGTERM: every node and the simulator gone within this
SITE_NODE_STOP_S = 2.2  # of which the nodes' orderly stops (each takes < 2 s); then they are killed
SUMMARY_TIMEOUT_S = 0.3  # each status request of the summary line


def node_count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"found {text!r}; allowed: a whole number from 1 to {MAX_NODES}") from None
    if not 1 <= value <= MAX_NODES:
        raise argparse.ArgumentTypeError(f"found {value}; allowed: 1 to {MAX_NODES}")
    return value


def default_socs(n: int) -> list[float]:
    """Starting SOCs spread from 0.3 to 0.9 (3 nodes: 0.3, 0.6, 0.9)."""
    return [0.6] if n == 1 else [round(0.3 + 0.6 * k / (n - 1), 3) for k in range(n)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_site_params(n: int, site_dir: Path, templates: list[Path], free_ports: bool = False,
                     socs: list[float] | None = None, cluster: bool = True, backup: bool = False) -> list[Path]:
    """Write node1.json .. nodeN.json into `site_dir` from `templates` (node K: template K mod len) and return them.

    Each node: node id `nodeK` (the first template's site id), its own control endpoint, inverter port and
    BMS bus (SLCAN on TCP), data directory `site_dir/var/nodeK`, starting SOC and seed; all share the
    first template's meter (the site's one meter) and the simulator endpoint. With `cluster` (the default)
    the nodes form one cluster: `features.CLUSTER` on, each node's key pair in its data directory (made
    once, kept across runs), and the same member list (Raft and data-plane ports, public keys) in every
    file; without it each node runs alone. With `backup` every node has backup hardware (`features.BACKUP`)
    and a SunSpec inverter gets the profile that can form the grid (`sunspec_backup`).
    """
    from mastercontroller import keys

    socs = socs or default_socs(n)
    first = json.loads(templates[0].read_text())
    taken: set[int] = set()

    def fresh_port() -> int:  # the OS may hand a just-closed port out again: never twice in one site
        while (p := _free_port()) in taken:
            pass
        taken.add(p)
        return p

    port = (lambda _k, _i: fresh_port()) if free_ports else (lambda k, i: DEVICE_PORT + 10 * k + i)
    sim_endpoint = f"tcp://127.0.0.1:{fresh_port() if free_ports else SIM_ENDPOINT_PORT}"
    meter = dict(first["devices"].get("meter") or {}) or None
    if meter and meter.get("port"):
        meter["port"] = port(0, 1)
    site_dir.mkdir(parents=True, exist_ok=True)
    members = []
    for k in range(n):
        data_dir = site_dir / "var" / f"node{k + 1}"
        try:
            public, _ = keys.load(data_dir)
        except (KeyError, ValueError):
            public = keys.generate(data_dir)
        members.append({"node_id": f"node{k + 1}", "raft": f"127.0.0.1:{port(k, 5)}",
                        "data": f"127.0.0.1:{port(k, 6)}", "public_key": public})
    files = []
    for k in range(n):
        data = json.loads(templates[k % len(templates)].read_text())
        node_id = f"node{k + 1}"
        data["identity"] = {**data.get("identity", {}), "node_id": node_id,
                            "site_id": first.get("identity", {}).get("site_id", "sim-site")}
        data["control"] = {**data.get("control", {}),
                           "endpoint": f"tcp://127.0.0.1:{fresh_port() if free_ports else CONTROL_PORT + k}"}
        data["storage"] = {**data.get("storage", {}), "data_dir": str((site_dir / "var" / node_id).resolve())}
        devices = data["devices"]
        if devices["inverter"].get("port"):
            devices["inverter"]["port"] = port(k, 0)
        can = devices["bms"].get("can")
        if can is not None:
            can.update(interface="slcan", channel=f"socket://127.0.0.1:{port(k, 2)}")
        devices["meter"] = meter
        if (data.get("scada") or {}).get("enabled"):  # a SCADA server per node: its own port
            data["scada"] = {**data["scada"], "port": fresh_port() if free_ports else port(k, 7)}
        data["features"] = {**data.get("features", {}), "CLUSTER": cluster}
        if backup:
            data["features"]["BACKUP"] = True
        if backup and devices["inverter"]["model"] == "sunspec":
            devices["inverter"]["model"] = "sunspec_backup"
        if cluster:
            data["cluster"] = {**data.get("cluster", {}), "members": members}
        data["simulation"] = {**(data.get("simulation") or {}), **{key: (first.get("simulation") or {})[key] for key in
                              ("pv_peak_w", "load_avg_w") if key in (first.get("simulation") or {})},
                              "initial_soc": socs[k], "seed": k + 1, "endpoint": sim_endpoint}
        path = site_dir / f"{node_id}.json"
        path.write_text(json.dumps(data, indent=2) + "\n")
        files.append(path)
    return files


# --- the site's summary line ---------------------------------------------------------------------
def _w(value) -> str:
    return "n/a" if value is None else f"{value:+.0f}"


def node_summary(node_id: str, status: dict | None) -> str:
    """One node's part of the site line: id, state, SOC, power (+ = discharge).

    Hook for the cluster: add what the node's status says about it here (e.g. its dispatched target)."""
    if status is None:
        return f"{node_id} down"
    soc = "n/a" if status.get("soc") is None else f"{status['soc'] * 100:.1f}%"
    return f"{node_id} {status.get('state')} {soc} {_w(status.get('p_w'))} W"


def site_summary_line(statuses: dict[str, dict | None], plant: dict | None, cluster: dict | None = None) -> str:
    """The line run-sim --nodes N prints every second: the one grid meter, then every node.

    `statuses`: node id -> its `status --json` (None: it did not answer); `plant`: the simulator's
    site state (`sim state --json`: grid_p_w, pv_w, load_w, nodes_p_w), None if it did not answer.
    With a cluster, its part (leader, term, target, actual) comes between the site and the nodes:
    `cluster` is one member's `cluster status --json` (None: no cluster, or no member answered)."""
    if plant is None:
        site = "site: simulator not answering"
    else:
        site = (f"site grid {_w(plant['grid_p_w'])} W (load {plant['load_w']:.0f} W, pv {plant['pv_w']:.0f} W, "
                f"nodes {_w(plant['nodes_p_w'])} W)")
        if plant.get("grid_lost"):
            site += f" GRID LOST (unserved {plant['unserved_w']:.0f} W)"
    parts = [site]
    if cluster is not None:
        target = "n/a" if cluster.get("target_w") is None else f"{cluster['target_w']:.0f} W"
        parts.append(f"leader {cluster['leader'] or 'none'} term {cluster['term']} mode {cluster.get('mode_running') or cluster['mode']} "
                     f"target {target} actual {cluster['actual_w']:.0f} W")
    return " | ".join(parts + [node_summary(node_id, st) for node_id, st in statuses.items()])


class _Node:
    def __init__(self, node_id: str, params_file: Path, endpoint: str):
        self.node_id, self.params_file, self.endpoint = node_id, params_file, endpoint
        self.proc: subprocess.Popen | None = None
        self.restart_at: float | None = None  # when a dead node is started again
        self.down = False  # --no-restart: left down


class SiteSupervisor:
    """The simulator of the site and one process per node; restarts each node by itself."""

    def __init__(self, params_files: list[Path], params_list: list, restart: bool, node_args: list[str],
                 site_dir: Path):
        self.params_files, self.params_list = params_files, params_list
        self.restart, self.node_args, self.site_dir = restart, node_args, site_dir
        self.sim_endpoint = params_list[0].simulation.endpoint
        self.nodes = [_Node(p.identity.node_id, f, p.control.endpoint) for p, f in zip(params_list, params_files)]
        self.sim: subprocess.Popen | None = None
        self.stopping = False
        self._summary_stop = threading.Event()

    def _on_signal(self, signum, frame) -> None:
        self.stopping = True

    def run(self) -> int:
        signal.signal(signal.SIGINT, self._on_signal)
        signal.signal(signal.SIGTERM, self._on_signal)
        printer = None
        try:
            if not self._start_sim():
                return 0 if self.stopping else (self.sim.poll() or 1)
            write_site_index([{"node_id": n.node_id, "endpoint": n.endpoint, "params": str(n.params_file)}
                              for n in self.nodes], self.sim_endpoint, self.site_dir)
            for node in self.nodes:
                self._start_node(node)
            printer = threading.Thread(target=self._print_summary, name="site-summary", daemon=True)
            printer.start()
            return self._watch()
        finally:
            self._summary_stop.set()
            t0 = time.monotonic()
            self._stop_nodes()
            Supervisor._stop(self.sim, max(0.3, SITE_STOP_S - 0.2 - (time.monotonic() - t0)), "the simulator")
            remove_site_index()
            if printer is not None:
                printer.join(1.0)  # it gives up between two requests of at most SUMMARY_TIMEOUT_S
            say(f"site stopped in {time.monotonic() - t0:.1f} s")

    def _start_sim(self) -> bool:
        from .endpoint import SimUnreachable, sim_request

        cmd = [sys.executable, "-m", "sitecontroller.sim"]
        for f in self.params_files:
            cmd += ["--params", str(f)]
        self.sim = subprocess.Popen(cmd, cwd=ROOT, preexec_fn=_child_setup(own_session=True))
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline and not self.stopping:
            if self.sim.poll() is not None:
                return False  # it said why
            try:
                reply = sim_request(self.sim_endpoint, {"op": "ping"}, timeout_s=0.5)
            except SimUnreachable:
                time.sleep(0.1)
                continue
            if reply.get("pid") == self.sim.pid and reply.get("ready"):
                say(f"site simulator running (pid {self.sim.pid}) for {len(self.nodes)} nodes behind one meter; "
                    f"fault knobs: sitecontroller sim faults --node ID")
                return True
            time.sleep(0.1)
        if not self.stopping:
            say(f"the simulator did not answer on {self.sim_endpoint} within {READY_TIMEOUT_S:g} s")
        return False

    def _start_node(self, node: _Node) -> None:
        cmd = [sys.executable, "-m", "sitecontroller.cli", "run", "--params", str(node.params_file)] + self.node_args
        node.proc = subprocess.Popen(cmd, cwd=ROOT, preexec_fn=_child_setup(own_session=False))
        node.restart_at = None
        say(f"node {node.node_id} running (pid {node.proc.pid}, {node.endpoint}, {node.params_file})")

    def _watch(self) -> int:
        while True:
            if self.stopping:
                return 0
            if self.sim.poll() is not None:
                say(f"the simulator exited ({_status(self.sim.returncode)}): stopping the nodes")
                return 1
            now = time.monotonic()
            for node in self.nodes:
                code = node.proc.poll() if node.proc else None
                if code is not None:
                    node.proc = None
                    if code >= 0 and code not in RESTART_CODES:  # a stop, or a start that failed
                        say(f"node {node.node_id} exited ({_status(code)}); stopping the site")
                        return code
                    if not self.restart:
                        node.down = True
                        say(f"node {node.node_id} exited ({_status(code)}); the simulator keeps running "
                            f"(--no-restart): start it by hand with `sitecontroller run --params {node.params_file}`")
                        continue
                    say(f"node {node.node_id} exited ({_status(code)}); the simulator keeps running; "
                        f"starting it again in {RESTART_DELAY_S:g} s")
                    node.restart_at = now + RESTART_DELAY_S
                elif node.proc is None and node.restart_at is not None and now >= node.restart_at:
                    self._start_node(node)
            time.sleep(0.05)

    def _stop_nodes(self) -> None:
        """SIGTERM to every node at once (each ramps to 0 W and opens its contactors), then wait for all."""
        running = [n for n in self.nodes if n.proc is not None and n.proc.poll() is None]
        for node in running:
            node.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + SITE_NODE_STOP_S
        for node in running:
            try:
                node.proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                say(f"node {node.node_id} did not stop within {SITE_NODE_STOP_S:g} s: killing it")
                node.proc.kill()
                node.proc.wait()

    def statuses(self) -> dict[str, dict | None]:
        from ..control_endpoint import NodeUnreachable, request

        out: dict[str, dict | None] = {}
        for node in self.nodes:
            try:
                stop = self._summary_stop.is_set()  # a stop: no more requests
                reply = request(node.endpoint, {"op": "status"}, SUMMARY_TIMEOUT_S) if node.proc and not stop else {}
            except NodeUnreachable:
                reply = {}
            out[node.node_id] = reply.get("status") if reply.get("ok") else None
        return out

    def cluster(self, statuses: dict[str, dict | None]) -> dict | None:
        """One member's view of the cluster (the first that answers as a member), None without a cluster."""
        from ..control_endpoint import NodeUnreachable, request

        for node in self.nodes:
            st = statuses.get(node.node_id)
            if st is None or st.get("role", "alone") == "alone" or self._summary_stop.is_set():
                continue
            try:
                reply = request(node.endpoint, {"op": "cluster_status"}, SUMMARY_TIMEOUT_S)
            except NodeUnreachable:
                continue
            if reply.get("ok"):
                return reply["cluster"]
        return None

    def plant(self) -> dict | None:
        from .endpoint import SimUnreachable, sim_request

        try:
            reply = sim_request(self.sim_endpoint, {"op": "plant"}, timeout_s=SUMMARY_TIMEOUT_S)
        except SimUnreachable:
            return None
        return reply.get("plant") if reply.get("ok") else None

    def _print_summary(self) -> None:
        nxt = time.monotonic()
        while True:
            nxt += 1.0
            if self._summary_stop.wait(max(0.0, nxt - time.monotonic())):
                return
            statuses = self.statuses()
            line = site_summary_line(statuses, self.plant(), self.cluster(statuses))
            if self._summary_stop.is_set():
                return
            try:
                print(line, flush=True)
            except (BrokenPipeError, ValueError):  # `run-sim | head` closed the pipe: the site runs on
                return


def site_main(args, node_args: list[str]) -> int:
    """run-sim --nodes N (N > 1)."""
    from ..params import ParamsError, load

    templates = [Path(args.params).expanduser().resolve()] if args.params else SITE_TEMPLATES[:1 if args.backup else None]
    site_dir = Path(args.site_dir).expanduser().resolve() if args.site_dir else ROOT / "var" / f"site-{args.nodes}"
    socs = [args.soc] * args.nodes if args.soc is not None else None
    if args.keep_params:
        files = [site_dir / f"node{k + 1}.json" for k in range(args.nodes)]
        missing = [str(f) for f in files if not f.is_file()]
        if missing:
            say(f"--keep-params: no node file {', '.join(missing)} (run once without --keep-params to write them)")
            return 2
    else:
        try:
            files = make_site_params(args.nodes, site_dir, templates, args.free_ports, socs, args.cluster, args.backup)
        except (OSError, ValueError, KeyError) as exc:
            say(f"cannot write the node parameter files into {site_dir}: {exc}")
            return 2
    params_list = []
    for f in files:
        try:
            params_list.append(load(f))
        except ParamsError as exc:
            exc.report()
            return 2
    say(f"site of {args.nodes} nodes: parameter files in {site_dir}")
    return SiteSupervisor(files, params_list, args.restart, node_args, site_dir).run()
