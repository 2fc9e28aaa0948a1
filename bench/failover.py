"""Leader failover time after kill -9: our Raft over ZMQ/CURVE vs stock pysyncobj.

    python bench/failover.py [--kills N] [--skip-stock]

Three real processes (tests/cluster/consensus_peer.py) on loopback. For each kill: wait until
all three agree on one leader (with the lease), SIGKILL it, then poll both survivors (every
~2 ms) until both name the same new leader at a higher term and that leader reports the lease
(stock pysyncobj has no lease: its leader role counts). The killed node is started again
(same journal) before the next kill. The reference is stock pysyncobj: TCPTransport and
SyncObjConf defaults (raftMinTimeout 0.4, raftMaxTimeout 1.4, appendEntriesPeriod 0.1).
Prints median, p95 (nearest rank) and max per variant and their ratios. Figures, not a test.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import selectors
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mastercontroller import keys  # noqa: E402

PEER = ROOT / "tests" / "cluster" / "consensus_peer.py"
IDS = ("n1", "n2", "n3")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Proc:
    def __init__(self, name, cfg, workdir: Path):
        path = workdir / f"{name}.json"
        path.write_text(json.dumps(cfg))
        self.log = open(workdir / f"{name}.log", "ab")
        self.p = subprocess.Popen([sys.executable, str(PEER), str(path)], stdout=subprocess.PIPE,
                                  stderr=self.log, stdin=subprocess.DEVNULL)
        sel = selectors.DefaultSelector()
        sel.register(self.p.stdout, selectors.EVENT_READ)
        buf, deadline = b"", time.monotonic() + 10
        while b"\n" not in buf:
            if time.monotonic() > deadline or self.p.poll() is not None:
                self.kill()
                raise RuntimeError(f"{name} did not start (see {workdir / (name + '.log')})")
            if sel.select(0.1):
                buf += os.read(self.p.stdout.fileno(), 256)
        sel.close()
        port = int(buf.split(b"\n")[0].split()[1])
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.f = self.sock.makefile("rwb", buffering=0)

    def status(self):
        try:
            self.f.write(b'{"op": "status"}\n')
            line = self.f.readline()
        except OSError:
            return None
        return json.loads(line) if line else None

    def kill(self):
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGKILL)
        self.p.wait(5)
        self.close_io()

    def stop(self):
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(3)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait(5)
        self.close_io()

    def close_io(self):
        for f in (getattr(self, "f", None), getattr(self, "sock", None), self.p.stdout, self.log):
            try:
                if f is not None:
                    f.close()
            except OSError:
                pass


def agreed(sts: dict, ids):
    if any(sts.get(i) is None for i in ids):
        return None
    leaders = [i for i in ids if sts[i]["role"] == "leader"]
    if len(leaders) != 1 or not sts[leaders[0]]["lease"]:
        return None
    lid, term = leaders[0], sts[leaders[0]]["term"]
    name = sts[lid]["self"]  # stock pysyncobj names nodes by address
    if all(sts[i]["leader"] == name and sts[i]["term"] == term for i in ids):
        return lid, term
    return None


def run(variant: str, kills: int, workdir: Path) -> tuple[list[float], int]:
    workdir.mkdir(parents=True)
    ports = {i: free_port() for i in IDS}
    if variant == "zmq":
        pubs = {i: keys.generate(workdir / "keys" / i) for i in IDS}
        members = [{"node_id": i, "address": f"127.0.0.1:{ports[i]}", "public_key": pubs[i]} for i in IDS]
        cfgs = {i: {"self_id": i, "members": members, "data_dir": str(workdir / "data" / i),
                    "key_dir": str(workdir / "keys" / i)} for i in IDS}
    else:
        addr = {i: f"127.0.0.1:{ports[i]}" for i in IDS}
        cfgs = {i: {"stock": True, "self_address": addr[i], "other_addresses": [addr[j] for j in IDS if j != i],
                    "data_dir": str(workdir / "data" / i)} for i in IDS}
    procs = {i: Proc(i, cfgs[i], workdir) for i in IDS}
    times, failures = [], 0

    def wait_agreed(ids, timeout_s):
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            r = agreed({i: procs[i].status() for i in ids}, ids)
            if r:
                return r
            time.sleep(0.01)
        return None

    try:
        for k in range(kills):
            r = wait_agreed(IDS, 20.0)
            if r is None:
                print(f"  [{variant}] no stable leader before kill {k + 1}; stopping", file=sys.stderr)
                failures += kills - k
                break
            leader, term = r
            survivors = [i for i in IDS if i != leader]
            procs[leader].p.send_signal(signal.SIGKILL)
            t0 = time.monotonic()
            got = None
            while time.monotonic() - t0 < 15.0:
                got = agreed({i: procs[i].status() for i in survivors}, survivors)
                if got and got[0] != leader and got[1] > term:
                    break
                got = None
                time.sleep(0.002)
            if got:
                times.append(time.monotonic() - t0)
                print(f"  [{variant}] kill {k + 1}: {leader} (term {term}) -> {got[0]} (term {got[1]}) "
                      f"in {times[-1] * 1000:.0f} ms", file=sys.stderr)
            else:
                failures += 1
                print(f"  [{variant}] kill {k + 1}: no new leader within 15 s", file=sys.stderr)
            procs[leader].kill()
            procs[leader] = Proc(leader, cfgs[leader], workdir)
    finally:
        for p in procs.values():
            p.stop()
    return times, failures


def summary(times):
    if not times:
        return None
    s = sorted(times)
    return {"n": len(s), "median": statistics.median(s), "p95": s[max(0, math.ceil(0.95 * len(s)) - 1)],
            "max": s[-1]}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--skip-stock", action="store_true", help="only our ZMQ transport")
    args = ap.parse_args(argv)
    results = {}
    with tempfile.TemporaryDirectory(prefix="failover-") as tmp:
        variants = ["zmq"] + ([] if args.skip_stock else ["stock"])
        for v in variants:
            times, failures = run(v, args.kills, Path(tmp) / v)
            results[v] = (summary(times), failures)
    print(f"failover after kill -9 of the leader, 3 nodes on loopback, {args.kills} kills each")
    print(f"{'variant':<44} {'n':>3} {'median':>9} {'p95':>9} {'max':>9} {'fail':>5}")
    names = {"zmq": "ZMQ+CURVE (election 0.30-0.45 s, hb 0.05 s)",
             "stock": "stock pysyncobj TCPTransport, defaults"}
    for v, (s, failures) in results.items():
        if s is None:
            print(f"{names[v]:<44} {0:>3} {'-':>9} {'-':>9} {'-':>9} {failures:>5}")
        else:
            print(f"{names[v]:<44} {s['n']:>3} {s['median'] * 1000:>7.0f}ms {s['p95'] * 1000:>7.0f}ms "
                  f"{s['max'] * 1000:>7.0f}ms {failures:>5}")
    z, st = results.get("zmq", (None, 0))[0], results.get("stock", (None, 0))[0]
    if z and st:
        print(f"ratio stock/ZMQ: median {st['median'] / z['median']:.1f}x, p95 {st['p95'] / z['p95']:.1f}x, "
              f"max {st['max'] / z['max']:.1f}x")


if __name__ == "__main__":
    main()
