"""Raft over ZeroMQ/CURVE (mastercontroller/consensus.py) with real OS processes on loopback.

Each node is tests/cluster/consensus_peer.py in its own process; the test talks to it over a
JSON line protocol. Kills are SIGKILL; partitions cut a TCP proxy that sits on every
directed link (src -> dst). Every wait polls with a deadline; every "never" assertion checks
every sample of its window.
"""
from __future__ import annotations

import json
import os
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from mastercontroller import keys
from mastercontroller.consensus import ClusterConsensus, ConsensusError, Member
from tests.cluster.proxy import Proxy
from tests.util import free_tcp_port

PEER = Path(__file__).with_name("consensus_peer.py")
LEASE_S = 1.5


# --------------------------------------------------------------------------- harness
class Peer:
    """One consensus_peer.py process and its control connection."""

    def __init__(self, node_id: str, config: dict, workdir: Path):
        self.node_id = node_id
        cfg_path = workdir / f"{node_id}.json"
        cfg_path.write_text(json.dumps(config))
        self.log_path = workdir / f"{node_id}.log"
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([sys.executable, str(PEER), str(cfg_path)], stdout=subprocess.PIPE,
                                     stderr=self._log, stdin=subprocess.DEVNULL)
        self.sock = None
        self._lock = threading.Lock()
        try:
            port = self._read_ready(10.0)
            self.sock = socket.create_connection(("127.0.0.1", port), timeout=5.0)
            self._file = self.sock.makefile("rwb", buffering=0)
        except BaseException:
            self.kill()
            raise

    def _read_ready(self, timeout_s):
        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + timeout_s
        buf = b""
        try:
            while b"\n" not in buf:
                left = deadline - time.monotonic()
                if left <= 0 or self.proc.poll() is not None:
                    raise AssertionError(f"{self.node_id} did not start: {self.log_path.read_text()[-2000:]}")
                if sel.select(left):
                    chunk = os.read(self.proc.stdout.fileno(), 256)
                    if not chunk:
                        continue
                    buf += chunk
        finally:
            sel.close()
        line = buf.split(b"\n", 1)[0].decode()
        assert line.startswith("READY "), line
        return int(line.split()[1])

    @property
    def alive(self):
        return self.proc.poll() is None

    def call(self, op, **kw):
        with self._lock:
            self._file.write((json.dumps({"op": op, **kw}) + "\n").encode())
            line = self._file.readline()
        if not line:
            raise ConnectionError(f"{self.node_id}: control connection closed")
        resp = json.loads(line)
        if not resp.pop("ok"):
            raise RuntimeError(f"{self.node_id}: {resp['error']}")
        return resp

    def status(self):
        return self.call("status")

    def log_text(self):
        return self.log_path.read_text(errors="replace")

    def _close_io(self):
        for f in (getattr(self, "_file", None), self.sock, self.proc.stdout):
            try:
                if f is not None:
                    f.close()
            except OSError:
                pass
        self._log.close()

    def kill(self):
        if self.alive:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(5)
        self._close_io()

    def stop(self):
        if self.alive:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(3)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._close_io()


class Cluster:
    def __init__(self, workdir: Path, ids, proxied=False):
        self.workdir = workdir
        self.ids = list(ids)
        self.ports = {i: free_tcp_port() for i in self.ids}
        self.public = {i: keys.generate(workdir / "keys" / i) for i in self.ids}
        self.peers: dict[str, Peer] = {}
        self.proxies: dict[tuple[str, str], Proxy] = {}
        if proxied:
            for src in self.ids:
                for dst in self.ids:
                    if src != dst:
                        self.proxies[(src, dst)] = Proxy(self.ports[dst])

    def member(self, node_id, view=None) -> dict:
        port = self.ports[node_id]
        if view is not None and (view, node_id) in self.proxies:
            port = self.proxies[(view, node_id)].port
        return {"node_id": node_id, "address": f"127.0.0.1:{port}", "public_key": self.public[node_id]}

    def config(self, node_id, members=None, key_dir=None) -> dict:
        return {"self_id": node_id, "members": [self.member(m, view=node_id) for m in (members or self.ids)],
                "data_dir": str(self.workdir / "data" / node_id), "lease_s": LEASE_S,
                "key_dir": str(key_dir or self.workdir / "keys" / node_id)}

    def start(self, node_id, config=None) -> Peer:
        assert node_id not in self.peers or not self.peers[node_id].alive
        peer = Peer(node_id, config or self.config(node_id), self.workdir)
        self.peers[node_id] = peer
        return peer

    def start_all(self):
        for i in self.ids:
            self.start(i)

    def live(self):
        return {i: p for i, p in self.peers.items() if p.alive}

    def statuses(self, ids=None) -> dict:
        out = {}
        for i, p in self.live().items():
            if ids is not None and i not in ids:
                continue
            try:
                out[i] = p.status()
            except (OSError, ConnectionError):
                pass
        return out

    def cut(self, node_id):
        for (src, dst), proxy in self.proxies.items():
            if node_id in (src, dst):
                proxy.cut()

    def heal(self):
        for proxy in self.proxies.values():
            proxy.heal()

    def close(self):
        errors = []
        for p in self.peers.values():
            try:
                p.stop()
            except Exception as e:  # noqa: BLE001 - keep cleaning up
                errors.append(e)
        for proxy in self.proxies.values():
            proxy.close()
        if errors:
            raise errors[0]


def lease_holders(sts: dict) -> list[str]:
    return sorted(i for i, s in sts.items() if s["lease"])


def agreed_leader(sts: dict, expect_ids) -> tuple[str, int] | None:
    """(leader, term) if every node in expect_ids answered, exactly one is leader with the lease,
    and all of them name it at the same term."""
    if set(sts) != set(expect_ids):
        return None
    leaders = [i for i, s in sts.items() if s["role"] == "leader"]
    if len(leaders) != 1 or not sts[leaders[0]]["lease"]:
        return None
    lid, term = leaders[0], sts[leaders[0]]["term"]
    if all(s["leader"] == lid and s["term"] == term for s in sts.values()):
        return lid, term
    return None


def poll(cluster: Cluster, predicate, timeout_s, what, ids=None, never_two_leases=True):
    """Sample all live nodes until predicate(statuses) is truthy; every sample must show at most
    one lease holder. Returns (value, elapsed_s)."""
    t0 = time.monotonic()
    while True:
        sts = cluster.statuses(ids)
        if never_two_leases:
            holders = lease_holders(sts)
            assert len(holders) <= 1, f"two lease holders at once: {holders} ({sts})"
        value = predicate(sts)
        if value:
            return value, time.monotonic() - t0
        if time.monotonic() - t0 > timeout_s:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}: "
                                 f"{ {i: (s['role'], s['term'], s['leader'], s['lease']) for i, s in sts.items()} }")
        time.sleep(0.01)


@pytest.fixture
def clusters(tmp_path):
    made = []

    def make(ids=("n1", "n2", "n3"), proxied=False, start=True):
        c = Cluster(tmp_path / f"c{len(made)}", ids, proxied=proxied)
        made.append(c)
        if start:
            c.start_all()
        return c

    try:
        yield make
    finally:
        for c in made:
            c.close()


def wait_leader(c: Cluster, ids=None, timeout_s=5.0):
    ids = ids or list(c.live())
    return poll(c, lambda s: agreed_leader(s, ids), timeout_s, f"one agreed leader among {ids}", ids=ids)[0]


def wait_version(c: Cluster, version, ids=None, timeout_s=5.0):
    ids = ids or list(c.live())
    return poll(c, lambda s: set(s) == set(ids) and all(x["state"]["version"] >= version for x in s.values())
                and len({json.dumps(x["state"], sort_keys=True) for x in s.values()}) == 1,
                timeout_s, f"state version {version} on {ids}", ids=ids)[0]


# --------------------------------------------------------------------------- tests
def test_three_nodes_elect_one_leader_and_converge(clusters):
    c = clusters()
    leader, term = wait_leader(c, timeout_s=5.0)
    assert term >= 1
    follower = next(i for i in c.ids if i != leader)
    resp = c.peers[follower].call("propose", change={"mode": "load_matching", "target_w": 1500,
                                                     "limits": {"charge_w": 5000, "discharge_w": 6000},
                                                     "mode_params": {"import_limit_w": 8000}})
    assert resp["version"] == 1
    wait_version(c, 1)
    st = c.peers[leader].status()["state"]
    assert st == {"mode": "load_matching", "mode_params": {"import_limit_w": 8000}, "target_w": 1500.0,
                  "limits": {"charge_w": 5000.0, "discharge_w": 6000.0}, "version": 1}
    # a bad change is refused with the field named, and changes nothing
    with pytest.raises(RuntimeError, match="target_w: must be finite"):
        c.peers[follower].call("propose", change={"target_w": float("inf")})
    with pytest.raises(RuntimeError, match="unknown key"):
        c.peers[follower].call("propose", change={"speed": 3})
    assert all(s["state"]["version"] == 1 for s in c.statuses().values())


@pytest.mark.slow
def test_kill_leader_new_leader_within_2s_and_never_two_leases(clusters):
    c = clusters()
    version = 0
    for round_ in range(3):
        leader, term = wait_leader(c, ids=c.ids, timeout_s=5.0)
        version = c.peers[leader].call("propose", change={"target_w": 100.0 * (round_ + 1)})["version"]
        wait_version(c, version, ids=c.ids)
        c.peers[leader].kill()
        survivors = [i for i in c.ids if i != leader]
        (new, new_term), elapsed = poll(
            c, lambda s: (r := agreed_leader(s, survivors)) and r[0] != leader and r[1] > term and r,
            2.0, f"a new leader after killing {leader}", ids=survivors)
        assert new_term > term
        # the new leader has the committed state, and accepts changes
        version = c.peers[new].call("propose", change={"target_w": float(round_)})["version"]
        c.start(leader)  # the killed node comes back with its journal
        wait_leader(c, ids=c.ids, timeout_s=5.0)
        wait_version(c, version, ids=c.ids)


@pytest.mark.slow
def test_restarted_nodes_keep_state_from_journal(clusters):
    c = clusters()
    leader, _ = wait_leader(c)
    for w in (1.0, 2.0, 3.0):
        c.peers[leader].call("propose", change={"target_w": w})
    follower = next(i for i in c.ids if i != leader)
    c.peers[follower].kill()
    v = c.peers[leader].call("propose", change={"mode": "charge_only"})["version"]
    c.start(follower)
    wait_version(c, v, ids=c.ids)
    # the whole cluster stops and comes back: the state comes from each node's journal
    for p in c.peers.values():
        p.stop()
    for i in c.ids:
        c.start(i)
    wait_leader(c, ids=c.ids)
    sts = wait_version(c, v, ids=c.ids)
    assert sts and all(s["state"]["mode"] == "charge_only" and s["state"]["target_w"] == 3.0
                       for s in c.statuses().values())


@pytest.mark.slow
def test_peer_with_wrong_key_is_refused_and_cannot_disturb(clusters):
    c = clusters()
    leader, term = wait_leader(c)
    rogue_keys = c.workdir / "keys" / "rogue"
    rogue_pub = keys.generate(rogue_keys)
    rogue_port = free_tcp_port()
    rogue_cfg = {"self_id": "rogue", "data_dir": str(c.workdir / "data" / "rogue"), "lease_s": LEASE_S,
                 "key_dir": str(rogue_keys),
                 "members": [c.member(i) for i in c.ids]
                 + [{"node_id": "rogue", "address": f"127.0.0.1:{rogue_port}", "public_key": rogue_pub}]}
    rogue = Peer("rogue", rogue_cfg, c.workdir)
    try:
        poll(c, lambda s: all(x["stats"]["refused"] > 0 for x in s.values()) and s, 5.0,
             "every member refused the rogue key", ids=c.ids)
        # for 1.5 s (several election timeouts and many rogue reconnects) every sample shows
        # the same single leader at the same term
        t_end = time.monotonic() + 1.5
        while time.monotonic() < t_end:
            assert agreed_leader(c.statuses(c.ids), c.ids) == (leader, term)
            time.sleep(0.02)
        rs = rogue.status()
        assert rs["stats"]["connected"] == [] and rs["role"] != "leader"
        sts = c.statuses(c.ids)
        for i, s in sts.items():
            assert s["stats"]["refused_keys"] == [rogue_pub]
            lines = [ln for ln in c.peers[i].log_text().splitlines() if "refused peer" in ln]
            assert len(lines) == 1, (i, lines)
            assert rogue_pub in lines[0]
        # the rogue keeps trying: the counter grows, the log line stays one
        poll(c, lambda s: min(x["stats"]["refused"] for x in s.values()) >= 2, 3.0,
             "a second refused attempt on every member", ids=c.ids)
        for i in c.ids:
            assert sum("refused peer" in ln for ln in c.peers[i].log_text().splitlines()) == 1
    finally:
        rogue.stop()


@pytest.mark.slow
def test_partitioned_leader_loses_lease_majority_elects_then_heals(clusters):
    c = clusters(proxied=True)
    leader, term = wait_leader(c, timeout_s=5.0)
    v = c.peers[leader].call("propose", change={"target_w": 11.0})["version"]
    wait_version(c, v, ids=c.ids)
    majority = [i for i in c.ids if i != leader]
    c.cut(leader)
    t0 = time.monotonic()
    # sample everyone (the isolated leader included) until it lost the lease AND the
    # majority agreed on a new leader; never two lease holders in any sample
    (new, new_term), _ = poll(
        c, lambda s: not s[leader]["lease"] and (r := agreed_leader({i: s[i] for i in majority}, majority))
        and r[0] != leader and r, LEASE_S + 0.5, "lease lost by the isolated leader and a new majority leader")
    assert new_term > term
    assert time.monotonic() - t0 <= LEASE_S + 0.5
    # the isolated node steps down (pysyncobj leaderFallbackTimeout = lease_s)
    poll(c, lambda s: s[leader]["role"] != "leader", LEASE_S + 0.5, "the isolated leader steps down")
    v = c.peers[new].call("propose", change={"mode": "local", "target_w": -2000})["version"]
    c.heal()
    wait_leader(c, ids=c.ids, timeout_s=5.0)
    wait_version(c, v, ids=c.ids)
    # right after a heal pysyncobj may lose a forwarded command; propose() proposes it again itself
    v = c.peers[leader].call("propose", change={"mode": "grid_forming"})["version"]
    sts = wait_version(c, v, ids=c.ids)
    assert all(s["state"]["mode"] == "grid_forming" for s in c.statuses().values()) and sts


@pytest.mark.slow
def test_add_and_remove_a_fourth_member(clusters):
    c = clusters(ids=("n1", "n2", "n3", "n4"), start=False)
    first = ["n1", "n2", "n3"]
    for i in first:
        c.start(i, c.config(i, members=first))
    leader, _ = wait_leader(c, ids=first)
    v = c.peers[leader].call("propose", change={"mode": "passive", "target_w": 300})["version"]
    c.start("n4")  # knows all four; the three refuse it until it is added
    follower = next(i for i in first if i != leader)
    c.peers[follower].call("add_member", member=c.member("n4"))
    wait_version(c, v, ids=c.ids, timeout_s=5.0)
    wait_leader(c, ids=c.ids, timeout_s=5.0)
    v = c.peers["n4"].call("propose", change={"target_w": 4.0})["version"]
    wait_version(c, v, ids=c.ids)
    assert all("n4" in s["stats"]["peers"] for i, s in c.statuses(first).items())
    some = next(i for i in first)
    c.peers[some].call("remove_member", node_id="n4")
    poll(c, lambda s: all("n4" not in s[i]["stats"]["peers"] for i in first), 5.0, "n4 removed", ids=first)
    c.peers["n4"].stop()
    wait_leader(c, ids=first)
    v = c.peers[follower].call("propose", change={"target_w": 33.0})["version"]
    wait_version(c, v, ids=first)


def test_key_files_damaged_or_missing_give_clear_errors(tmp_path):
    pub = keys.generate(tmp_path / "k")
    assert keys.check_public(pub) == pub
    assert oct((tmp_path / "k" / keys.SECRET_FILE).stat().st_mode & 0o777) == "0o600"
    assert keys.load(tmp_path / "k")[0] == pub
    (tmp_path / "k" / keys.PUBLIC_FILE).write_text(pub[:-3] + "\n")
    with pytest.raises(ValueError, match=r"cluster\.key.*40 Z85 characters, got 37"):
        keys.load(tmp_path / "k")
    (tmp_path / "k" / keys.PUBLIC_FILE).write_text("~" * 40)
    with pytest.raises(ValueError, match="not Z85"):
        keys.load(tmp_path / "k")
    other = keys.generate(tmp_path / "other")
    (tmp_path / "k" / keys.PUBLIC_FILE).write_text(other)
    with pytest.raises(ValueError, match="do not match"):
        keys.load(tmp_path / "k")
    (tmp_path / "k" / keys.SECRET_FILE).unlink()
    with pytest.raises(KeyError, match="cluster.key_secret.*missing"):
        keys.load(tmp_path / "k")
    with pytest.raises(ValueError, match="40 Z85 characters"):
        keys.check_public("short")


def test_bad_configuration_and_busy_port_give_clear_errors(tmp_path):
    pub = keys.generate(tmp_path / "a")
    pub, sec = keys.load(tmp_path / "a")
    other = keys.generate(tmp_path / "b")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        members = [Member("a", f"127.0.0.1:{port}", pub), Member("b", f"127.0.0.1:{free_tcp_port()}", other)]
        with pytest.raises(ValueError, match="not in"):
            ClusterConsensus("x", members, tmp_path / "d", secret_key=sec, public_key=pub)
        with pytest.raises(ValueError, match="does not belong"):
            ClusterConsensus("a", members, tmp_path / "d", secret_key=sec, public_key=other)
        with pytest.raises(ValueError, match="address"):
            ClusterConsensus("a", [Member("a", "localhost", pub)], tmp_path / "d", secret_key=sec, public_key=pub)
        node = ClusterConsensus("a", members, tmp_path / "d", secret_key=sec, public_key=pub)
        t0 = time.monotonic()
        with pytest.raises(ConsensusError, match=f"cannot bind 127.0.0.1:{port}"):
            node.start()
        assert time.monotonic() - t0 < 3.0
        with pytest.raises(ValueError, match="target_w"):
            node.propose({"target_w": "high"})
