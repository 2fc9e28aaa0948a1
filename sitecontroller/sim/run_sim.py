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
the site index (`site_index.site_index_path()`: node id -> control endpoint, parameter
file; the simulator's endpoint) that `sitecontroller ... --node ID` reads; it
removes it when it stops. Each node is restarted by itself as above; SIGTERM
stops every node (together), then the simulator.

Both children get SIGTERM if this supervisor dies (Linux parent-death signal),
and the simulator ignores the terminal's SIGINT so that it outlives the node's
orderly stop.
"""
from __future__ import annotations

import argparse
import ctypes
import os
import signal
import subprocess
import sys
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


def _child_setup(own_session: bool):
    """`own_session` (the simulator): out of the site's process group, so Ctrl-C or a SIGTERM to
    the group (a service manager's stop) reaches the nodes only, and they can still stop their
    simulated devices in order; the supervisor stops the simulator after them."""
    def setup() -> None:
        if own_session:
            os.setsid()
        try:  # PR_SET_PDEATHSIG = 1: SIGTERM when the supervisor dies, so nothing is left running
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM, 0, 0, 0)
        except (OSError, AttributeError):
            pass
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
        self.sim = subprocess.Popen(cmd, cwd=ROOT, preexec_fn=_child_setup(own_session=True))
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
        self.node = subprocess.Popen(cmd, cwd=ROOT, preexec_fn=_child_setup(own_session=False))
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
    from .run_site import MAX_NODES, node_count

    ap.add_argument("--nodes", type=node_count, default=1, metavar="N",
                    help="run a site of N nodes behind one grid meter: one simulator process and N node processes "
                         f"(1 to {MAX_NODES}; default 1: one node, as above)")
    ap.add_argument("--site-dir", metavar="DIR",
                    help="--nodes N: where the node parameter files and data directories go "
                         "(default var/site-N in the repository)")
    ap.add_argument("--no-cluster", dest="cluster", action="store_false",
                    help="--nodes N: every node runs alone (local setpoints) instead of as one Raft cluster")
    ap.add_argument("--backup", action="store_true",
                    help="--nodes N: every node has backup hardware (features.BACKUP) and a SunSpec inverter that can "
                         "form the grid (every node from the sim_node1 example unless --params); try a blackout with "
                         "`sitecontroller sim fault grid lost true` or `sitecontroller cluster backup-test`")
    ap.add_argument("--keep-params", action="store_true",
                    help="--nodes N: run the node files already in --site-dir (node1.json .. nodeN.json) as they are, "
                         "e.g. after editing one, instead of writing them anew")
    ap.add_argument("--free-ports", action="store_true",
                    help="--nodes N: free loopback ports the OS picks instead of the examples' ports "
                         "(`sitecontroller ... --node ID` finds them in the site index)")
    return ap


def main(argv=None) -> int:
    ap = build_parser()
    args, node_args = ap.parse_known_args(argv)
    if args.nodes > 1:
        from .run_site import site_main

        return site_main(args, node_args)
    if args.site_dir or args.free_ports or args.keep_params or args.backup:
        ap.error("--site-dir, --keep-params, --free-ports and --backup go with --nodes N (N > 1)")
    from ..params import ParamsError, load

    params_file = Path(args.params or DEFAULT_PARAMS).expanduser().resolve()  # against the caller's directory
    try:
        params = load(params_file)
    except ParamsError as exc:
        exc.report()
        return 2
    sup = Supervisor(params_file, params, args.soc, args.restart, node_args)
    if args.soc is not None and not sup._has_simulators():
        say("--soc needs a parameter file with simulated devices (this one is all 'inproc'); "
            "set simulation.initial_soc instead")
        return 2
    return sup.run()


if __name__ == "__main__":
    sys.exit(main())
