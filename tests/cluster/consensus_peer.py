"""One cluster node as its own OS process, for tests/cluster/test_consensus.py and bench/failover.py.

    python tests/cluster/consensus_peer.py CONFIG.json

CONFIG: {"self_id", "members": [{"node_id", "address", "public_key"}], "data_dir", "key_dir",
"lease_s"?} — or {"stock": true, "self_address", "other_addresses", "data_dir"} for a stock
pysyncobj node (TCPTransport, SyncObjConf defaults: the benchmark's reference).

It binds a control port on 127.0.0.1 (port 0), prints ``READY <port>`` on stdout and then
answers one JSON object per line: {"op": "status"} | {"op": "propose", "change": {...}} |
{"op": "add_member", "member": {...}} | {"op": "remove_member", "node_id": ...}.
It exits on SIGTERM (closing the node) and dies with its parent (PR_SET_PDEATHSIG).
"""
from __future__ import annotations

import ctypes
import json
import logging
import os
import signal
import socket
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

PR_SET_PDEATHSIG = 1


def _die_with_parent():
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except OSError:
        pass
    if os.getppid() == 1:  # the parent died before prctl
        os._exit(1)


class StockNode:
    """Stock pysyncobj (TCPTransport, default timeouts) with the same control protocol."""

    def __init__(self, cfg):
        from pysyncobj import SyncObj, SyncObjConf
        data = Path(cfg["data_dir"])
        data.mkdir(parents=True, exist_ok=True)
        conf = SyncObjConf(journalFile=str(data / "raft.journal"), useFork=False)
        self.obj = SyncObj(cfg["self_address"], cfg["other_addresses"], conf=conf)

    def status(self):
        leader = self.obj._getLeader()
        role = {2: "leader", 1: "candidate"}.get(self.obj._SyncObj__raftState, "follower")
        return {"self": self.obj.selfNode.id, "role": role, "term": self.obj.raftCurrentTerm,
                "leader": leader.id if leader else None, "lease": role == "leader"}

    def handle(self, req):
        if req["op"] == "status":
            return self.status()
        raise ValueError(f"unsupported op {req['op']!r} on a stock node")

    def close(self):
        self.obj.destroy_synchronous()


class ZmqPeer:
    def __init__(self, cfg):
        from mastercontroller import keys
        from mastercontroller.consensus import ClusterConsensus, Member
        self.Member = Member
        public, secret = keys.load(cfg["key_dir"])
        members = [Member(**m) for m in cfg["members"]]
        self.node = ClusterConsensus(cfg["self_id"], members, Path(cfg["data_dir"]), secret_key=secret,
                                     public_key=public, lease_s=cfg.get("lease_s", 1.5))
        self.node.start()

    def status(self):
        n = self.node
        st = n.state()
        return {"self": n.self_id, "role": n.role, "term": n.term, "leader": n.leader_id, "lease": n.has_lease(),
                "state": {"mode": st.mode, "mode_params": st.mode_params, "target_w": st.target_w,
                          "limits": st.limits, "version": st.version},
                "stats": n.stats()}

    def handle(self, req):
        op = req["op"]
        if op == "status":
            return self.status()
        if op == "propose":
            st = self.node.propose(req["change"], timeout_s=req.get("timeout_s", 2.0))
            return {"version": st.version}
        if op == "add_member":
            self.node.add_member(self.Member(**req["member"]), timeout_s=req.get("timeout_s", 5.0))
            return {}
        if op == "remove_member":
            self.node.remove_member(req["node_id"], timeout_s=req.get("timeout_s", 5.0))
            return {}
        raise ValueError(f"unknown op {op!r}")

    def close(self):
        self.node.close()


def _serve(conn, peer):
    with conn:
        f = conn.makefile("rwb", buffering=0)
        for line in f:
            try:
                req = json.loads(line)
                resp = {"ok": True, **peer.handle(req)}
            except Exception as e:  # noqa: BLE001 - the test reads the error
                resp = {"ok": False, "error": f"{type(e).__name__}: {e}"}
            try:
                f.write((json.dumps(resp) + "\n").encode())
            except OSError:
                return


def main():
    _die_with_parent()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cfg = json.loads(Path(sys.argv[1]).read_text())
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    peer = StockNode(cfg) if cfg.get("stock") else ZmqPeer(cfg)
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    srv.settimeout(0.1)

    def accept_loop():
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            threading.Thread(target=_serve, args=(conn, peer), daemon=True).start()

    threading.Thread(target=accept_loop, daemon=True).start()
    print(f"READY {srv.getsockname()[1]}", flush=True)
    while not stop.wait(0.2):
        pass
    srv.close()
    peer.close()
    logging.getLogger(__name__).info("stopped")
    os._exit(0)


if __name__ == "__main__":
    main()
