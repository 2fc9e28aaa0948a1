"""Cluster consensus: pysyncobj Raft over the ZeroMQ/CURVE transport (transport.py).

The replicated state (``state.ClusterState``: mode, mode parameters, cluster target, cluster
limits, a version bumped by every change; ``state.py``) lives in a pysyncobj consumer (``StateMachine``); every change goes
through the Raft log (``propose`` works on any node: a follower forwards to the leader).
The journal and the full dump live in ``data_dir``, so a restarted node comes back with its
state, term and vote.

Timeouts (loopback / LAN; all in seconds)
    ``appendEntriesPeriod`` 0.05   heartbeat: 6 per minimum election timeout
    ``raftMinTimeout``     0.30    a follower waits U(0.30, 0.45) after the last heartbeat
    ``raftMaxTimeout``     0.45    before it stands; with 2+ followers the first one usually
                                   wins, so failover after ``kill -9`` of the leader is
                                   ~0.30-0.45 s (+ one round trip); the 150 ms spread keeps split
                                   votes rare (they cost one more round)
    ``autoTickPeriod``     0.02    upper bound of the tick loop's sleep; sockets wake it earlier
    ``leaderFallbackTimeout`` = ``lease_s`` (default 1.5): a leader that hears from no quorum
                                   for that long steps down (pysyncobj's own check)
    ZMQ: reconnect every 0.1 s, ZMTP heartbeat 0.1 s / timeout 0.4 s (links stay up, a
    dead peer is noticed; stock TCP transport's lazy links cost a second election round)

Leadership lease (``has_lease``)
    True while this node is leader and a quorum (itself included) acknowledged a heartbeat
    that this leader *sent* less than ``lease_window_s`` ago, where
    ``lease_window_s = min(lease_s, raftMinTimeout - 0.07)`` (0.23 s by default). The window is
    shorter than ``lease_s`` on purpose: followers refuse to vote for ``raftMinTimeout - 0.05``
    after hearing from the leader (vote stickiness, in the transport), so a lease anchored at a
    heartbeat's send time always ends before any other node can win an election: two nodes
    never hold the lease at the same time, even with a partitioned old leader (which, in
    addition, steps down after ``lease_s``). A partitioned minority leader loses the lease
    within ``lease_window_s`` (+ one tick).

Threads: pysyncobj's autoTick thread runs Raft and owns every ZMQ socket; ``state``,
``role``, ``term``, ``leader_id``, ``has_lease`` and ``stats`` read plain values and are safe
from any thread; ``propose``/``add_member``/``remove_member`` block the caller (never call them
from a pysyncobj callback).
"""
from __future__ import annotations

import functools
import itertools
import ipaddress
import logging
import math
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import _socket
import socket

import pysyncobj.win_inet_pton  # noqa: F401  (see below)
import zmq
from pysyncobj import SyncObj, SyncObjConf, SyncObjConsumer, replicated
from pysyncobj.config import FAIL_REASON

from mastercontroller import keys
from mastercontroller.state import ClusterState, ConsensusError, apply, validate_change  # noqa: F401 (ConsensusError: re-exported)
from mastercontroller.transport import ZmqNode, ZmqTransport

# pysyncobj 0.3.17 replaces `socket.inet_ntop` with a Windows-only version on every OS
# (pysyncobj/win_inet_pton.py, last line), which breaks anything else in the process that formats an
# IPv4/IPv6 address (psutil's socket listing, for one): put the real one back. pysyncobj is imported
# here only, so a node that is no cluster member never loads it (nor the `cryptography` it pulls in).
socket.inet_ntop = _socket.inet_ntop

log = logging.getLogger(__name__)

HEARTBEAT_S = 0.05
DEFAULT_ELECTION_S = (0.30, 0.45)
TICK_S = 0.02
STICK_MARGIN_S = 0.05      # vote stickiness = raftMinTimeout - this
LEASE_MARGIN_S = 0.02      # lease window = stickiness - this
CLOSE_TIMEOUT_S = 1.0
RETRY_AFTER_S = 1.0        # propose: an attempt not committed this soon is proposed again
RETRY_PAUSE_S = 0.05
_FAIL_NAMES = {v: k for k, v in vars(FAIL_REASON).items() if k.isupper()}


class StateMachine(SyncObjConsumer):
    """The replicated state: pysyncobj serializes the attributes set after __init__ (state)."""

    def __init__(self):
        super().__init__()
        self.state = ClusterState()

    @replicated
    def apply_change(self, change):
        try:
            change = validate_change(change)  # deterministic: the same on every node
        except ValueError as e:
            return ("error", str(e))
        self.state = apply(self.state, change)
        return self.state


@dataclass(frozen=True)
class Member:
    node_id: str
    address: str      # "127.0.0.1:PORT" of its Raft ROUTER socket
    public_key: str   # Z85 CURVE public key (40 characters)
    data: str | None = None  # "127.0.0.1:PORT" of its data-plane publisher (service.py)


def _check_address(address: str, what: str):
    host, sep, port = str(address).rpartition(":")
    try:
        ipaddress.ip_address(host)
        ok = sep and 0 < int(port) < 65536
    except ValueError:
        ok = False
    if not ok:
        raise ValueError(f"{what}: address {address!r} must be 'IP:PORT'")


class ClusterConsensus:
    def __init__(self, self_id: str, members: list[Member], data_dir: Path, *, secret_key: str,
                 public_key: str, lease_s: float = 1.5,
                 election_s: tuple[float, float] | None = None):
        ids = [m.node_id for m in members]
        if len(set(ids)) != len(ids):
            raise ValueError(f"members: duplicate node ids in {ids}")
        if self_id not in ids:
            raise ValueError(f"members: this node {self_id!r} is not in {ids}")
        for m in members:
            if not m.node_id or not isinstance(m.node_id, str):
                raise ValueError(f"members: bad node id {m.node_id!r}")
            _check_address(m.address, f"member {m.node_id}")
            keys.check_public(m.public_key)
        public_key = keys.check_public(public_key)
        try:
            derived = zmq.curve_public(secret_key.encode("ascii")).decode("ascii")
        except Exception:  # noqa: BLE001
            raise ValueError("secret_key: not a Z85 CURVE secret key") from None
        if derived != public_key:
            raise ValueError("secret_key does not belong to public_key")
        me = next(m for m in members if m.node_id == self_id)
        if me.public_key != public_key:
            raise ValueError(f"members: the public key listed for {self_id} is not this node's key")
        lo, hi = election_s or DEFAULT_ELECTION_S
        if not (3 * HEARTBEAT_S < lo < hi):
            raise ValueError(f"election_s: need {3 * HEARTBEAT_S} < min < max, got {(lo, hi)}")
        lease_s = float(lease_s)
        if not lease_s > HEARTBEAT_S:
            raise ValueError(f"lease_s: must be > {HEARTBEAT_S}")
        self.self_id = self_id
        self._members = list(members)
        self._data_dir = Path(data_dir)
        self._secret = secret_key
        self._public = public_key
        self.lease_s = lease_s
        self.election_s = (float(lo), float(hi))
        self.stick_s = lo - STICK_MARGIN_S
        self.lease_window_s = min(lease_s, self.stick_s - LEASE_MARGIN_S)
        self._sm = StateMachine()
        self._obj: SyncObj | None = None
        self._transport: ZmqTransport | None = None
        self._leader_since = math.inf
        self._change_lock = threading.Lock()

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        if self._obj is not None:
            raise ConsensusError("already started")
        self._data_dir.mkdir(parents=True, exist_ok=True)
        conf = SyncObjConf(
            autoTick=True,
            autoTickPeriod=TICK_S,
            appendEntriesPeriod=HEARTBEAT_S,
            raftMinTimeout=self.election_s[0],
            raftMaxTimeout=self.election_s[1],
            connectionTimeout=max(3.5, self.election_s[1]),
            leaderFallbackTimeout=self.lease_s,
            dynamicMembershipChange=True,
            journalFile=str(self._data_dir / "raft.journal"),
            fullDumpFile=str(self._data_dir / "raft.dump"),
            useFork=False,              # never fork a process that holds a ZMQ context
            onStateChanged=self._on_state_changed,
        )
        nodes = {m.node_id: ZmqNode(m.node_id, m.address, m.public_key, m.data) for m in self._members}
        self_node = nodes.pop(self.self_id)
        holder = {}

        def make_transport(sync_obj, self_node_, other_nodes):
            t = ZmqTransport(sync_obj, self_node_, other_nodes, secret_key=self._secret,
                             public_key=self._public, stick_s=self.stick_s)
            holder["t"] = t
            return t

        obj = SyncObj(self_node, list(nodes.values()), conf=conf, consumers=[self._sm],
                      nodeClass=functools.partial(ZmqNode), transportClass=make_transport)
        # pysyncobj ends its tick thread when the thread that built it ends: tie it to the
        # process's main thread instead, so start() may be called from any thread.
        obj._SyncObj__mainThread = threading.main_thread()
        self._obj, self._transport = obj, holder["t"]
        if not self._transport.wait_ready(2.0):
            err = self._transport.bind_error or "transport not ready after 2 s"
            self.close()
            raise ConsensusError(f"cluster node {self.self_id}: {err}")

    def close(self) -> None:
        obj, self._obj = self._obj, None
        if obj is None:
            return
        thread = getattr(obj, "_SyncObj__thread", None)
        obj.destroy()
        if thread is not None and thread is not threading.current_thread():
            thread.join(CLOSE_TIMEOUT_S)
            if thread.is_alive():
                log.error("cluster node %s: the Raft thread did not stop within %.1f s", self.self_id, CLOSE_TIMEOUT_S)

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.close()

    def _on_state_changed(self, old, new):  # tick thread
        if new == 2:  # _RAFT_STATE.LEADER
            if self._transport is not None:
                self._transport.lease.reset_acks()
            self._leader_since = time.monotonic()
        else:
            self._leader_since = math.inf

    # ------------------------------------------------------------------ queries
    @property
    def role(self) -> str:
        obj = self._obj
        if obj is None:
            return "follower"
        return {2: "leader", 1: "candidate"}.get(getattr(obj, "_SyncObj__raftState", 0), "follower")

    @property
    def term(self) -> int:
        obj = self._obj
        return obj.raftCurrentTerm if obj is not None else 0

    @property
    def leader_id(self) -> str | None:
        obj = self._obj
        leader = obj._getLeader() if obj is not None else None
        return leader.id if leader is not None else None

    def lease_remaining(self) -> float:
        """Seconds this node still holds the lease (0: it does not). The lease ends
        ``lease_window_s`` after the send time of the newest heartbeat that a quorum (this
        node included) acknowledged, and never reaches back before this node became leader."""
        obj, t = self._obj, self._transport
        if obj is None or t is None or not obj._isLeader():
            return 0.0
        now = time.monotonic()
        need = (len(t.peer_ids) + 1) // 2  # peers that must have acknowledged, besides this node
        acks = t.newest_acks()
        if need == 0:
            anchor = now  # a cluster of one
        elif len(acks) < need:
            return 0.0
        else:
            anchor = acks[need - 1]
        if anchor < self._leader_since:
            return 0.0
        return max(0.0, anchor + self.lease_window_s - now)

    def has_lease(self) -> bool:
        return self.lease_remaining() > 0

    def members(self) -> list[Member]:
        """The members as the Raft log has them now (the configured list, then every add/remove
        applied from the log, also after a restart): this node first."""
        obj = self._obj
        me = next(m for m in self._members if m.node_id == self.self_id)
        if obj is None:
            return [me] + [m for m in self._members if m is not me]
        others = sorted(obj.otherNodes, key=lambda n: n.id)
        return [me] + [Member(n.id, n.address, n.public_key, getattr(n, "data", None)) for n in others]

    def state(self) -> ClusterState:
        return self._sm.state.copy()

    def stats(self) -> dict:
        obj, t = self._obj, self._transport
        return {
            "node_id": self.self_id,
            "role": self.role,
            "term": self.term,
            "leader": self.leader_id,
            "has_lease": self.has_lease(),
            "commit_index": obj.raftCommitIndex if obj else 0,
            "last_applied": obj.raftLastApplied if obj else 0,
            "version": self._sm.state.version,
            "peers": t.peer_ids if t else [],
            "connected": t.connected if t else [],
            "refused": sum(t.allowed.refused.values()) if t else 0,
            "refused_keys": sorted(t.allowed.refused) if t else [],
            "auth_failures": t.auth_failures if t else 0,
            "dropped": t.dropped if t else 0,
            "votes_dropped": t.lease.votes_dropped if t else 0,
            "lease_window_s": self.lease_window_s,
        }

    # ------------------------------------------------------------------ changes
    def _wait(self, what: str, start_call, timeout_s: float):
        if self._obj is None:
            raise ConsensusError(f"{what}: cluster consensus is not started")
        done = threading.Event()
        box = {}

        def callback(result, error):
            box["r"], box["e"] = result, error
            done.set()

        start_call(callback)
        if not done.wait(timeout_s):
            leader = self.leader_id
            raise ConsensusError(f"{what}: not committed within {timeout_s:g} s "
                                 f"({'leader ' + leader if leader else 'no leader'}; it may still be applied later)")
        if box["e"] != FAIL_REASON.SUCCESS:
            raise ConsensusError(f"{what}: failed ({_FAIL_NAMES.get(box['e'], box['e'])}, "
                                 f"leader {self.leader_id})")
        return box["r"]

    def propose(self, change: dict, timeout_s: float = 2.0) -> ClusterState:
        """Apply `change` (keys among mode, mode_params, target_w, limits) through the Raft log;
        return the committed state (version bumped). Raises ValueError for a bad change,
        ConsensusError on no leader/timeout.

        pysyncobj never retries a command forwarded to the leader whose request or reply was
        lost (seen right after a partition heals), so an attempt that is not committed within
        ``RETRY_AFTER_S`` is proposed again until ``timeout_s``. A change sets values, so
        applying it twice is harmless (the version then rises by two)."""
        change = validate_change(change)
        deadline = time.monotonic() + timeout_s
        for attempt in itertools.count(1):
            left = deadline - time.monotonic()
            try:
                result = self._wait("propose", lambda cb: self._sm.apply_change(change, callback=cb),
                                    max(0.01, min(RETRY_AFTER_S, left)))
                break
            except ConsensusError as e:
                if deadline - time.monotonic() < RETRY_PAUSE_S + 0.05:
                    raise ConsensusError(f"{e} [{attempt} attempt(s) in {timeout_s:g} s]") from None
                log.info("cluster node %s: %s; proposing again", self.self_id, e)
                time.sleep(RETRY_PAUSE_S)
        if isinstance(result, tuple) and result and result[0] == "error":
            raise ValueError(result[1])
        return result.copy()

    def add_member(self, member: Member, timeout_s: float = 5.0) -> None:
        """Add a node (started beforehand with the full member list) to the cluster."""
        _check_address(member.address, f"member {member.node_id}")
        if member.data is not None:
            _check_address(member.data, f"member {member.node_id} data")
        keys.check_public(member.public_key)
        for m in self.members():
            if m.node_id == member.node_id:
                raise ValueError(f"add member: {member.node_id!r} is already a member")
            clash = {member.address, member.data} & {m.address, m.data}
            if clash - {None}:
                raise ValueError(f"add member: address {', '.join(sorted(clash - {None}))} is {m.node_id}'s")
            if m.public_key == member.public_key:
                raise ValueError(f"add member: that public key is {m.node_id}'s")
        node = ZmqNode(member.node_id, member.address, member.public_key, member.data)
        with self._change_lock:
            self._wait(f"add member {member.node_id}",
                       lambda cb: self._obj.addNodeToCluster(node, callback=cb), timeout_s)

    def remove_member(self, node_id: str, timeout_s: float = 5.0) -> None:
        obj = self._obj
        if obj is None:
            raise ConsensusError("remove member: cluster consensus is not started")
        if node_id == self.self_id:
            raise ValueError("remove member: a node cannot remove itself; ask another member")
        node = next((n for n in obj.otherNodes if n.id == node_id), None)
        if node is None:
            raise ValueError(f"remove member: {node_id!r} is not a member")
        with self._change_lock:
            self._wait(f"remove member {node_id}",
                       lambda cb: obj.removeNodeFromCluster(node, callback=cb), timeout_s)
