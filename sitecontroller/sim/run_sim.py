"""`scripts/run-sim`: a simulator process and a node process, as in the field.

    scripts/run-sim [--params FILE] [--soc FRACTION] [--no-restart] [other `sitecontroller run` options]
    scripts/run-sim --nodes N [--params TEMPLATE] [--soc FRACTION] [--site-dir DIR] [--free-ports] [--no-restart]

1. starts the simulator (`python -m sitecontroller.sim --params FILE [--soc X]`)
   and waits until its endpoint answers: its devices are then listening;
2. starts the node (`sitecontroller run --params FILE --summary ...`), which
   reaches the devices over their real protocols (BMS over SLCAN/TCP, inverter
   and meter over Modbus TCP/HTTP), exactly as it would reach hardware;
3. when the node dies (killed, or exit 75/76 after a commanded restart/reboot),
   the simulator keeps running — battery SOC and all — and the node is started
   again after RESTART_DELAY_S, as a service manager would (`--no-restart`:
   leave it down; the simulator keeps serving until Ctrl-C). A node that
   exits 0, 1 or 2 by itself (a stop, or a start that failed) ends run-sim;
4. Ctrl-C / SIGTERM: the node stops first (its orderly stop still reaches the
   devices), then the simulator; exit status is the node's.

A file whose devices are all `inproc` has nothing to serve over a protocol:
then the node runs alone with `--simulate` (in-process plant).

--nodes N (N > 1) runs a site: ONE simulator process for the site's shared
physics (load, PV, one grid meter at the connection point) and a BMS and an
inverter per node, and N node processes, each with its own parameter file
generated into the site directory (default var/site-N/nodeK.json) from a
template (default: the three examples in turn; --params TEMPLATE: that file
for every node): distinct node ids (node1..nodeN), control endpoints, device
ports, data directories (DIR/var/nodeK) and starting SOCs (spread from 0.3 to
0.9; --soc: one for all). Every node reads the one meter of the first template.
The ports are the examples' (node K: control 5550+K-1, devices 15020+10(K-1)..,
simulator 5560), or, with --free-ports, free ones the OS picks. run-sim prints
one summary line a second for the whole site (`site_summary_line`), and writes
the site index (`site_index_path()`: node id -> control endpoint, parameter
file; the simulator's endpoint) that `sitecontroller ... --node ID` reads; it
removes it when it stops. Each node is restarted by itself as above; SIGTERM
stops every node (together), then the simulator.

Both children get SIGTERM if this supervisor dies (Linux parent-death signal),
and the simulator ignores the terminal's SIGINT so that it outlives the node's
orderly stop.
"""
from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_PARAMS = ROOT / "site_parameters" / "sim_node1.json"
# --nodes N: node K's template is these in turn (bess_sim/SunSpec, Pylontech/LuxPower, bess_sim/Indevolt)
SITE_TEMPLATES = [ROOT / "site_parameters" / name
                  for name in ("sim_node1.json", "sim_node2_pylontech_lux_p1.json", "sim_node3_indevolt_em340.json")]
RESTART_DELAY_S = 1.0
READY_TIMEOUT_S = 20.0
NODE_STOP_S = 5.0  # the node's orderly stop takes < 2 s
SIM_STOP_S = 3.0
RESTART_CODES = (75, 76)  # restart / reboot requested: a service manager starts it again


def say(text: str) -> None:
    print(f"run-sim: {text}", file=sys.stderr, flush=True)


def _child_setup(ignore_sigint: bool):
    def setup() -> None:
        try:  # PR_SET_PDEATHSIG = 1: SIGTERM when the supervisor dies, so nothing is left running
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM, 0, 0, 0)
        except (OSError, AttributeError):
            pass
        if ignore_sigint:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
    return setup


def _status(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit status {code}"


class Supervisor:
    def __init__(self, params_file: Path, params, soc: float | None, restart: bool, node_args: list[str]):
        self.params_file, self.params, self.soc = params_file, params, soc
        self.restart, self.node_args = restart, node_args
        self.sim: subprocess.Popen | None = None
        self.node: subprocess.Popen | None = None
        self.stopping = False

    def _on_signal(self, signum, frame) -> None:
        self.stopping = True

    def _start_sim(self) -> bool:
        from .endpoint import SimUnreachable, sim_request

        cmd = [sys.executable, "-m", "sitecontroller.sim", "--params", str(self.params_file)]
        if self.soc is not None:
            cmd += ["--soc", str(self.soc)]
        self.sim = subprocess.Popen(cmd, cwd=ROOT, preexec_fn=_child_setup(ignore_sigint=True))
        endpoint = self.params.simulation.endpoint
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline and not self.stopping:
            if self.sim.poll() is not None:
                return False  # it said why
            try:
                reply = sim_request(endpoint, {"op": "ping"}, timeout_s=0.5)
            except SimUnreachable:
                time.sleep(0.1)
                continue
            if reply.get("pid") == self.sim.pid and reply.get("ready"):
                say(f"simulator running (pid {self.sim.pid}); fault knobs: sitecontroller sim faults")
                return True
            time.sleep(0.1)
        if not self.stopping:
            say(f"the simulator did not answer on {endpoint} within {READY_TIMEOUT_S:g} s")
        return False

    def _start_node(self, simulate: bool = False) -> None:
        cmd = [sys.executable, "-m", "sitecontroller.cli", "run", "--params", str(self.params_file), "--summary"]
        cmd += (["--simulate"] if simulate else []) + self.node_args
        self.node = subprocess.Popen(cmd, cwd=ROOT, preexec_fn=_child_setup(ignore_sigint=False))
        say(f"node running (pid {self.node.pid})")

    @staticmethod
    def _stop(proc: subprocess.Popen | None, timeout_s: float, what: str) -> int | None:
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                say(f"{what} did not stop within {timeout_s:g} s: killing it")
                proc.kill()
                proc.wait()
        return proc.returncode

    def run(self) -> int:
        signal.signal(signal.SIGINT, self._on_signal)
        signal.signal(signal.SIGTERM, self._on_signal)
        try:
            return self._run()
        finally:
            self._stop(self.node, NODE_STOP_S, "the node")
            self._stop(self.sim, SIM_STOP_S, "the simulator")

    def _run(self) -> int:
        if not self._has_simulators():
            self._start_node(simulate=True)
            return self._wait_node_only()
        if not self._start_sim():
            return 0 if self.stopping else (self.sim.poll() or 1)
        self._start_node()
        while True:
            if self.stopping:
                code = self._stop(self.node, NODE_STOP_S, "the node")
                return code if code is not None and code >= 0 else 0  # a node already down: a clean stop
            if self.sim.poll() is not None:
                say(f"the simulator exited ({_status(self.sim.returncode)}): stopping the node")
                self._stop(self.node, NODE_STOP_S, "the node")
                return 1
            code = self.node.poll() if self.node else None
            if code is not None:
                self.node = None
                if code >= 0 and code not in RESTART_CODES:  # a stop, or a start that failed
                    say(f"node exited ({_status(code)}); stopping the simulator")
                    return code
                if not self.restart:
                    say(f"node exited ({_status(code)}); the simulator keeps running (--no-restart): start the "
                        f"node by hand with `sitecontroller run --params {self.params_file}`; Ctrl-C stops the simulator")
                    continue
                say(f"node exited ({_status(code)}); the simulator keeps running; "
                    f"starting the node again in {RESTART_DELAY_S:g} s")
                self._sleep(RESTART_DELAY_S)
                if not self.stopping:
                    self._start_node()
            time.sleep(0.05)

    def _wait_node_only(self) -> int:
        while not self.stopping and self.node.poll() is None:
            time.sleep(0.05)
        code = self._stop(self.node, NODE_STOP_S, "the node")
        return code if code >= 0 else 1

    def _sleep(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while not self.stopping and time.monotonic() < end:
            time.sleep(0.05)

    def _has_simulators(self) -> bool:
        dev = self.params.devices
        return (dev.bms.model != "inproc" or dev.inverter.model != "inproc"
                or (dev.meter is not None and dev.meter.model != "inproc"))


# ----------------------------------------------------------------------------------------------
# --nodes N: a site of N nodes behind one meter
# ----------------------------------------------------------------------------------------------
MAX_NODES = 20
SIM_ENDPOINT_PORT = 5560  # the examples' layout: the simulator, node K's control endpoint and devices
CONTROL_PORT = 5550
DEVICE_PORT = 15020  # node K: inverter DEVICE_PORT + 10 (K-1), BMS (SLCAN) + 2; the site meter: + 1 of node 1
SITE_STOP_S = 3.0  # Ctrl-C/SIGTERM: every node and the simulator gone within this
SITE_NODE_STOP_S = 2.2  # of which the nodes' orderly stops (each takes < 2 s); then they are killed
SUMMARY_TIMEOUT_S = 0.3  # each status request of the summary line


def _node_count(text: str) -> int:
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
                     socs: list[float] | None = None, cluster: bool = True) -> list[Path]:
    """Write node1.json .. nodeN.json into `site_dir` from `templates` (node K: template K mod len) and return them.

    Each node: node id `nodeK` (the first template's site id), its own control endpoint, inverter port and
    BMS bus (SLCAN on TCP), data directory `site_dir/var/nodeK`, starting SOC and seed; all share the
    first template's meter (the site's one meter) and the simulator endpoint. With `cluster` (the default)
    the nodes form one cluster: `features.CLUSTER` on, each node's key pair in its data directory (made
    once, kept across runs), and the same member list (Raft and data-plane ports, public keys) in every
    file; without it each node runs alone.
    """
    from mastercontroller import keys

    socs = socs or default_socs(n)
    first = json.loads(templates[0].read_text())
    port = (lambda _k, _i: _free_port()) if free_ports else (lambda k, i: DEVICE_PORT + 10 * k + i)
    sim_endpoint = f"tcp://127.0.0.1:{_free_port() if free_ports else SIM_ENDPOINT_PORT}"
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
                           "endpoint": f"tcp://127.0.0.1:{_free_port() if free_ports else CONTROL_PORT + k}"}
        data["storage"] = {**data.get("storage", {}), "data_dir": str((site_dir / "var" / node_id).resolve())}
        devices = data["devices"]
        if devices["inverter"].get("port"):
            devices["inverter"]["port"] = port(k, 0)
        can = devices["bms"].get("can")
        if can is not None:
            can.update(interface="slcan", channel=f"socket://127.0.0.1:{port(k, 2)}")
        devices["meter"] = meter
        data["features"] = {**data.get("features", {}), "CLUSTER": cluster}
        if cluster:
            data["cluster"] = {**data.get("cluster", {}), "members": members}
        data["simulation"] = {**(data.get("simulation") or {}), **{key: (first.get("simulation") or {})[key] for key in
                              ("pv_peak_w", "load_avg_w") if key in (first.get("simulation") or {})},
                              "initial_soc": socs[k], "seed": k + 1, "endpoint": sim_endpoint}
        path = site_dir / f"{node_id}.json"
        path.write_text(json.dumps(data, indent=2) + "\n")
        files.append(path)
    return files


# --- the site index: which node answers where (sitecontroller ... --node ID reads it) ------------
def site_index_path() -> Path:
    """`site.json` in a folder of the run directory (running.run_dir(): $SITECONTROLLER_RUN_DIR,
    $XDG_RUNTIME_DIR/sitecontroller or /tmp/sitecontroller-UID), where every running node is listed too."""
    from ..running import run_dir

    return run_dir() / "site" / "site.json"


def write_site_index(nodes: list[dict], sim_endpoint: str, site_dir: Path) -> Path:
    from ..running import _started_at

    path = site_index_path()
    data = {"pid": os.getpid(), "started_at": _started_at(os.getpid()), "sim_endpoint": sim_endpoint,
            "site_dir": str(site_dir), "nodes": nodes}
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".site.json.{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=2))
    tmp.replace(path)
    return path


def remove_site_index() -> None:
    """Remove the index if this process wrote it (another run-sim may have written its own since)."""
    path = site_index_path()
    with contextlib.suppress(OSError, ValueError):
        if json.loads(path.read_text()).get("pid") == os.getpid():
            path.unlink()


def read_site_index() -> dict | None:
    """The index of the site that runs now: {"pid", "sim_endpoint", "nodes": [{"node_id", "endpoint",
    "params"}, ...]}, or None (none, unreadable, or its run-sim is gone)."""
    from ..running import _alive

    try:
        data = json.loads(site_index_path().read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("nodes"), list) or not _alive(data):
        return None
    return data


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
    parts = [site]
    if cluster is not None:
        parts.append(f"leader {cluster['leader'] or 'none'} term {cluster['term']} target {cluster['target_w']:.0f} W "
                     f"actual {cluster['actual_w']:.0f} W")
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
        self.sim = subprocess.Popen(cmd, cwd=ROOT, preexec_fn=_child_setup(ignore_sigint=True))
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
        node.proc = subprocess.Popen(cmd, cwd=ROOT, preexec_fn=_child_setup(ignore_sigint=False))
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

    templates = [Path(args.params).expanduser().resolve()] if args.params else SITE_TEMPLATES
    site_dir = Path(args.site_dir).expanduser().resolve() if args.site_dir else ROOT / "var" / f"site-{args.nodes}"
    socs = [args.soc] * args.nodes if args.soc is not None else None
    try:
        files = make_site_params(args.nodes, site_dir, templates, args.free_ports, socs, args.cluster)
    except (OSError, ValueError, KeyError) as exc:
        say(f"cannot write the node parameter files into {site_dir}: {exc}")
        return 2
    params_list = []
    for f in files:
        try:
            params_list.append(load(f))
        except ParamsError as exc:
            for line in exc.problems:
                print(f"{exc.source}: {line}", file=sys.stderr)
            return 2
    say(f"site of {args.nodes} nodes: parameter files in {site_dir}")
    return SiteSupervisor(files, params_list, args.restart, node_args, site_dir).run()


def fraction(text: str) -> float:
    """argparse type of --soc: a number from 0 to 1."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"found {text!r}; allowed: a number from 0 to 1") from None
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"found {text}; allowed: a number from 0 to 1 (0.3 = 30 %)")
    return value


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="scripts/run-sim", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Any other option goes to `sitecontroller run` (e.g. --log-level DEBUG).")
    ap.add_argument("--params", metavar="FILE",
                    help="site parameter file, relative to the current directory "
                         "(default: site_parameters/sim_node1.json); with --nodes N: the template of every node "
                         "(default: the three sim_node examples in turn)")
    ap.add_argument("--soc", metavar="FRACTION", type=fraction,
                    help="battery SOC the simulator starts from, 0..1 (default: the file's simulation.initial_soc)")
    ap.add_argument("--no-restart", dest="restart", action="store_false",
                    help="leave the node down when it dies or asks for a restart (the simulator keeps running)")
    ap.add_argument("--nodes", type=_node_count, default=1, metavar="N",
                    help="run a site of N nodes behind one grid meter: one simulator process and N node processes "
                         f"(1 to {MAX_NODES}; default 1: one node, as above)")
    ap.add_argument("--site-dir", metavar="DIR",
                    help="--nodes N: where the node parameter files and data directories go "
                         "(default var/site-N in the repository)")
    ap.add_argument("--no-cluster", dest="cluster", action="store_false",
                    help="--nodes N: every node runs alone (local setpoints) instead of as one Raft cluster")
    ap.add_argument("--free-ports", action="store_true",
                    help="--nodes N: free loopback ports the OS picks instead of the examples' ports "
                         "(`sitecontroller ... --node ID` finds them in the site index)")
    return ap


def main(argv=None) -> int:
    ap = build_parser()
    args, node_args = ap.parse_known_args(argv)
    if args.nodes > 1:
        return site_main(args, node_args)
    if args.site_dir or args.free_ports:
        ap.error("--site-dir and --free-ports go with --nodes N (N > 1)")
    from ..params import ParamsError, load

    params_file = Path(args.params or DEFAULT_PARAMS).expanduser().resolve()  # against the caller's directory
    try:
        params = load(params_file)
    except ParamsError as exc:
        for line in exc.problems:
            print(f"{exc.source}: {line}", file=sys.stderr)
        return 2
    sup = Supervisor(params_file, params, args.soc, args.restart, node_args)
    if args.soc is not None and not sup._has_simulators():
        say("--soc needs a parameter file with simulated devices (this one is all 'inproc'); "
            "set simulation.initial_soc instead")
        return 2
    return sup.run()


if __name__ == "__main__":
    sys.exit(main())
