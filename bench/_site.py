"""Shared by the site benchmarks: `scripts/run-sim --nodes N` as a real process group, and /proc readings.

`Site` starts run-sim in its own session (free loopback ports, its own site directory and run
directory, so its site index is its own) and talks to its nodes over their control endpoints.
`stop()` sends SIGTERM to the whole process group (run-sim stops the nodes, then the simulator,
within 3 s: the nodes close their dispatch journals); `kill()` is the SIGKILL of last resort that
every caller runs in `finally`.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from sitecontroller.control_endpoint import NodeUnreachable, request  # noqa: E402
from sitecontroller.sim.endpoint import SimUnreachable, sim_request  # noqa: E402

CLI = [sys.executable, "-m", "sitecontroller.cli"]
REQUEST_TIMEOUT_S = 0.5
CLK_TCK = os.sysconf("SC_CLK_TCK")


class Site:
    def __init__(self, workdir: Path, nodes: int = 3, *extra: str):
        self.workdir = workdir
        self.n = nodes
        self.site_dir = workdir / "site"
        self.run_dir = workdir / "run"
        self.env = {**os.environ, "SITECONTROLLER_RUN_DIR": str(self.run_dir)}
        self.log_path = workdir / "run-sim.log"
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            ["bash", str(ROOT / "scripts" / "run-sim"), "--nodes", str(nodes), "--free-ports",
             "--site-dir", str(self.site_dir), *extra],
            stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=ROOT, env=self.env,
            start_new_session=True)
        self.pgid = self.proc.pid  # start_new_session: run-sim leads its own process group
        self._index: dict | None = None

    # --- finding and asking ---------------------------------------------------------------------
    def index(self) -> dict | None:
        if self._index is None:
            try:
                data = json.loads((self.run_dir / "site" / "site.json").read_text())
            except (OSError, ValueError):
                return None
            if len(data.get("nodes", [])) == self.n:
                self._index = data
        return self._index

    def wait_index(self, timeout_s: float = 60.0) -> dict:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"run-sim exited ({self.proc.returncode}):\n{self.tail()}")
            if self.index() is not None:
                return self._index
            time.sleep(0.1)
        raise RuntimeError(f"no site index within {timeout_s:g} s:\n{self.tail()}")

    @property
    def node_ids(self) -> list[str]:
        return [n["node_id"] for n in self.index()["nodes"]]

    def endpoint(self, node: str) -> str:
        return next(n["endpoint"] for n in self.index()["nodes"] if n["node_id"] == node)

    def ask(self, node: str, op: str, timeout_s: float = REQUEST_TIMEOUT_S) -> dict | None:
        """`status` or `cluster_status` of one node, None when it does not answer."""
        try:
            reply = request(self.endpoint(node), {"op": op}, timeout_s)
        except NodeUnreachable:
            return None
        if not reply.get("ok"):
            return None
        return reply.get("status" if op == "status" else "cluster")

    def sim_pid(self) -> int | None:
        try:
            return sim_request(self.index()["sim_endpoint"], {"op": "ping"}, REQUEST_TIMEOUT_S).get("pid")
        except SimUnreachable:
            return None

    def cli(self, *args: str, timeout: float = 15.0) -> subprocess.CompletedProcess:
        return subprocess.run(CLI + list(args), capture_output=True, text=True, cwd=ROOT, env=self.env,
                              timeout=timeout)

    def start_cluster(self, target_w: float, timeout_s: float = 60.0) -> None:
        """Wait for the site index and a leader, then set the cluster target (through the Raft log)."""
        self.wait_index(timeout_s)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            cl = self.ask(self.node_ids[0], "cluster_status")
            if cl and cl["leader"] and cl["term"] > 0:
                break
            time.sleep(0.2)
        self.set_target(target_w)

    def set_target(self, w: float, timeout_s: float = 30.0) -> None:
        """The cluster target through the Raft log (`sitecontroller cluster setpoint`), retried until committed."""
        deadline, last = time.monotonic() + timeout_s, None
        while time.monotonic() < deadline:
            r = self.cli("cluster", "setpoint", "--w", f"{w:g}")
            if r.returncode == 0 and "cluster target" in r.stdout:
                return
            last = (r.stdout + r.stderr).strip()
            time.sleep(0.5)
        raise RuntimeError(f"cluster setpoint --w {w:g} not committed within {timeout_s:g} s: {last}")

    def following(self) -> dict | None:
        """Every node up and executing the cluster's current term, one leader holding the lease:
        {"leader", "term", "pids": {node: pid}, "status": {node: status}, "cluster": {node: cluster}}."""
        sts, cls = {}, {}
        for n in self.node_ids:
            st = self.ask(n, "status")
            if st is None or st.get("setpoint_source") != "cluster":
                return None
            cl = self.ask(n, "cluster_status")
            if cl is None:
                return None
            sts[n], cls[n] = st, cl
        leaders = [n for n in cls if cls[n]["role"] == "leader"]
        if len(leaders) != 1 or not cls[leaders[0]]["has_lease"]:
            return None
        leader, term = leaders[0], cls[leaders[0]]["term"]
        for c in cls.values():
            d = c.get("dispatch")
            if c["leader"] != leader or c["term"] != term or not d or d["term"] != term or d["leader"] != leader:
                return None
        pids = {n: sts[n]["pid"] for n in sts}
        if len(set(pids.values())) != len(pids):
            return None
        return {"leader": leader, "term": term, "pids": pids, "status": sts, "cluster": cls}

    def wait_following(self, timeout_s: float, poll_s: float = 0.1) -> dict | None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"run-sim exited ({self.proc.returncode}):\n{self.tail()}")
            got = self.following()
            if got:
                return got
            time.sleep(poll_s)
        return None

    def in_group(self, pid: int | None) -> bool:
        """Whether `pid` belongs to this run-sim's process group (we only ever signal our own processes)."""
        if pid is None:
            return False
        try:
            return os.getpgid(pid) == self.pgid
        except ProcessLookupError:
            return False

    def journal(self, node: str) -> list[dict]:
        path = self.site_dir / "var" / node / "dispatch.jsonl"
        try:
            return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        except OSError:
            return []

    def tail(self, chars: int = 3000) -> str:
        self._log.flush()
        try:
            return self.log_path.read_text()[-chars:]
        except OSError:
            return ""

    # --- stopping ----------------------------------------------------------------------------
    def stop(self, timeout_s: float = 10.0) -> bool:
        """SIGTERM to run-sim (an orderly stop: the nodes first, which write their journals, then the
        simulator); True if it ended. Not to the whole group: the simulator would stop at the same
        time as the nodes, before their orderly stops reach its devices."""
        if self.proc.poll() is None:
            try:
                os.kill(self.proc.pid, signal.SIGTERM)  # bash exec's python: the supervisor itself
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                return False
        return True

    def kill(self) -> None:
        """Whatever is left of the group: SIGKILL (always called in `finally`)."""
        try:
            os.killpg(self.pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            pass
        self._log.close()


# --- /proc ------------------------------------------------------------------------------------
def ppid(pid: int) -> int | None:
    """The parent of `pid` (None: it is gone)."""
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def cpu_ticks(pid: int) -> int | None:
    """utime + stime of a process (all its threads), in clock ticks."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()  # after "pid (comm) ": state is fields[0]
    return int(fields[11]) + int(fields[12])  # stat fields 14 and 15


def rss_kb(pid: int, key: str = "VmRSS") -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def machine_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    total = sum(fields[:8])  # guest time is already in user
    return total - idle, total


def busy_percent(before: tuple[int, int], after: tuple[int, int]) -> float:
    """CPU busy between two machine_ticks(), in % of one core (2 cores: up to 200 %)."""
    return (after[0] - before[0]) / max(1, after[1] - before[1]) * 100 * (os.cpu_count() or 1)


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""
