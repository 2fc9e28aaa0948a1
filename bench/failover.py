"""Leader failover after kill -9: consensus level (our Raft over ZMQ/CURVE vs stock pysyncobj) and site level.

    .venv/bin/python bench/failover.py [--kills N] [--skip-stock] [--skip-site] [--skip-consensus]
                                       [--target-w W] [--keep]

Consensus level. Three real processes (tests/cluster/consensus_peer.py) on loopback. For each
kill: wait until all three agree on one leader (with the lease), SIGKILL it, then poll both
survivors (every ~2 ms) until both name the same new leader at a higher term and that leader
reports the lease (stock pysyncobj has no lease: its leader role counts). The killed node is
started again (same journal) before the next kill. The reference is stock pysyncobj:
TCPTransport and SyncObjConf defaults (raftMinTimeout 0.4, raftMaxTimeout 1.4,
appendEntriesPeriod 0.1), measured in the same run.

Site level: the time from kill -9 of the leader until every surviving node executes a setpoint of
the new term. `scripts/run-sim --nodes 3 --free-ports` in a temporary directory (its own run
directory), cluster target `--target-w` (3000 W) through the Raft log. Each kill: wait until all
three nodes follow (status setpoint_source "cluster", one leader with the lease, every node's last
executed dispatch of the current term), note time.time() and SIGKILL the leader's pid, poll the two
survivors (~20 ms) until both report a new leader at a higher term and have executed a dispatch of
it, then wait until run-sim has restarted the killed node (after 1 s) and it follows again. After
the last kill the site is stopped (SIGTERM to run-sim: the nodes stop and write their journals,
then the simulator; whatever is left of its process group is killed) and the figure comes from the
nodes' own journals (<site>/var/<node>/dispatch.jsonl: a `start` line per executed term, first_wall =
time.time() of its first executed dispatch): per kill, max over the survivors of (first_wall of the
first term above the killed leader's term) - the wall time of the SIGKILL. The polled time (an upper bound, +~20 ms poll and request
latency) and the time until the killed node follows again (restart after 1 s included) are
printed beside it.

Prints median, p95 (nearest rank) and max per measurement and their ratios. Figures, not a test;
on a loaded 2-core machine (a test suite running beside it) they spread.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import selectors
import shutil
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

sys.path.insert(0, str(ROOT / "bench"))
from _site import Site, busy_percent, machine_ticks  # noqa: E402

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


SITE_POLL_S = 0.02


def run_site(kills: int, workdir: Path, target_w: float) -> tuple[list[dict], int, float]:
    """Kill the site's leader `kills` times; returns one record per kill (journal figure included),
    the number of failed kills and the wall time the whole site run took."""
    workdir.mkdir(parents=True)
    t_start = time.monotonic()
    site = Site(workdir)
    records, failures = [], 0
    try:
        site.start_cluster(target_w)
        for k in range(kills):
            before = site.wait_following(60.0)
            if before is None:
                print(f"  [site] the three nodes did not follow one leader before kill {k + 1}; stopping",
                      file=sys.stderr)
                failures += kills - k
                break
            leader, term, pid = before["leader"], before["term"], before["pids"][before["leader"]]
            survivors = [n for n in site.node_ids if n != leader]
            if not site.in_group(pid):
                raise RuntimeError(f"pid {pid} of {leader} is not in run-sim's process group")
            t_kill = time.time()
            os.kill(pid, signal.SIGKILL)
            m0 = time.monotonic()
            new = None
            while time.monotonic() - m0 < 15.0:
                cls = {n: site.ask(n, "cluster_status") for n in survivors}
                if all(c and c["leader"] not in (None, leader) and c["term"] > term and c.get("dispatch")
                       and c["dispatch"]["term"] > term for c in cls.values()):
                    new = {n: (c["leader"], c["term"], c["dispatch"]["term"]) for n, c in cls.items()}
                    break
                time.sleep(SITE_POLL_S)
            polled = time.monotonic() - m0
            rec = {"kill": k + 1, "leader": leader, "term": term, "pid": pid, "t_kill": t_kill,
                   "survivors": survivors, "polled_s": polled if new else None, "new": new}
            if new is None:
                failures += 1
                print(f"  [site] kill {k + 1}: {leader} (term {term}): survivors did not execute a new term "
                      f"within 15 s", file=sys.stderr)
            after = site.wait_following(60.0)  # run-sim restarts the killed node after 1 s; it follows again
            rec["rejoin_s"] = time.monotonic() - m0 if after and after["pids"][leader] != pid else None
            records.append(rec)
            if new:
                lead, nterm, _ = next(iter(new.values()))
                rj = "-" if rec["rejoin_s"] is None else f"{rec['rejoin_s']:.1f} s"
                print(f"  [site] kill {k + 1}: {leader} (term {term}) -> {lead} (term {nterm}): survivors "
                      f"execute it by {polled * 1000:.0f} ms (polled); killed node follows again after {rj}",
                      file=sys.stderr)
            if after is None:
                print(f"  [site] kill {k + 1}: the site did not come back to three following nodes in 60 s; "
                      f"stopping", file=sys.stderr)
                failures += kills - k - 1
                break
        if not site.stop(10.0):
            print("  [site] run-sim did not stop within 10 s of SIGTERM (journals may be incomplete)",
                  file=sys.stderr)
        journals = {n: site.journal(n) for n in site.node_ids}
    finally:
        site.kill()
    for rec in records:  # the figure, from the nodes' own journals
        firsts = {}
        for n in rec["survivors"]:  # the first term above the killed leader's that n started executing
            starts = [(w["term"], w["first_wall"]) for w in journals[n]
                      if w.get("event") == "start" and w["term"] > rec["term"]]
            if starts:
                term, wall = min(starts)
                firsts[n] = (term, wall - rec["t_kill"])
        rec["journal"] = firsts
        rec["site_s"] = max(v[1] for v in firsts.values()) if len(firsts) == len(rec["survivors"]) else None
        if rec["new"] and rec["site_s"] is None:
            print(f"  [site] kill {rec['kill']}: a survivor's journal has no term above {rec['term']}: "
                  f"{firsts}", file=sys.stderr)
    return records, failures, time.monotonic() - t_start


def summary(times):
    if not times:
        return None
    s = sorted(times)
    return {"n": len(s), "median": statistics.median(s), "p95": s[max(0, math.ceil(0.95 * len(s)) - 1)],
            "max": s[-1]}


def _row(name, s, failures, width=52):
    if s is None:
        return f"{name:<{width}} {0:>3} {'-':>9} {'-':>9} {'-':>9} {failures:>5}"
    return (f"{name:<{width}} {s['n']:>3} {s['median'] * 1000:>7.0f}ms {s['p95'] * 1000:>7.0f}ms "
            f"{s['max'] * 1000:>7.0f}ms {failures:>5}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--kills", type=int, default=10, help="kills per measurement (default 10)")
    ap.add_argument("--skip-stock", action="store_true", help="no stock pysyncobj reference")
    ap.add_argument("--skip-consensus", action="store_true", help="no consensus-level run (ours nor stock)")
    ap.add_argument("--skip-site", action="store_true", help="no site-level run (scripts/run-sim --nodes 3)")
    ap.add_argument("--target-w", type=float, default=3000.0, help="site level: the cluster target (default 3000)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory (logs, journals)")
    args = ap.parse_args(argv)
    if args.kills < 1:
        ap.error("--kills: at least 1")
    results, site, busy, site_error = {}, None, {}, None
    load0 = Path("/proc/loadavg").read_text().split()[:3]
    t0 = time.monotonic()
    tmp = tempfile.mkdtemp(prefix="failover-")
    try:
        variants = [] if args.skip_consensus else ["zmq"] + ([] if args.skip_stock else ["stock"])
        for v in variants:
            b0 = machine_ticks()
            times, failures = run(v, args.kills, Path(tmp) / v)
            results[v] = (summary(times), failures)
            busy[v] = busy_percent(b0, machine_ticks())
        if not args.skip_site:
            b0 = machine_ticks()
            try:
                site = run_site(args.kills, Path(tmp) / "site", args.target_w)
            except (RuntimeError, OSError, subprocess.SubprocessError) as exc:  # the figures so far still print
                print(f"  [site] the site run failed: {exc}" + ("" if args.keep else " (--keep keeps its log)"),
                      file=sys.stderr)
                site_error = str(exc).splitlines()[0]
            busy["site"] = busy_percent(b0, machine_ticks())
    finally:
        if args.keep:
            print(f"(kept {tmp})", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    print(f"failover after kill -9 of the leader, 3 nodes on loopback, {args.kills} kills each "
          f"(whole run {time.monotonic() - t0:.0f} s)")
    print(f"{'measurement':<52} {'n':>3} {'median':>9} {'p95':>9} {'max':>9} {'fail':>5}")
    names = {"zmq": "consensus: ZMQ+CURVE (election 0.30-0.45, hb 0.05 s)",
             "stock": "consensus: stock pysyncobj TCPTransport, defaults"}
    for v, (s, failures) in results.items():
        print(_row(names[v], s, failures))
    z, st = results.get("zmq", (None, 0))[0], results.get("stock", (None, 0))[0]
    ss = None
    if site_error:
        print(f"site: no figures ({site_error})")
    if site is not None:
        records, failures, took = site
        ss = summary([r["site_s"] for r in records if r["site_s"] is not None])
        polled = summary([r["polled_s"] for r in records if r["polled_s"] is not None])
        rejoin = summary([r["rejoin_s"] for r in records if r["rejoin_s"] is not None])
        lost = sum(1 for r in records if r["new"] and r["site_s"] is None)
        print(_row("site: kill -9 -> every survivor executes new term", ss, failures + lost))
        print(_row("  (same, polled over the control endpoints)", polled, failures))
        print(_row("  (kill -9 -> killed node restarted and follows)", rejoin,
                   sum(1 for r in records if r["rejoin_s"] is None)))
        print(f"  site run took {took:.0f} s; per-kill site figures (ms): "
              + " ".join(f"{r['site_s'] * 1000:.0f}" if r["site_s"] is not None else "-" for r in records))
        odd = [r for r in records if r["new"] and any(t != r["term"] + 1 for t, _ in r["journal"].values())]
        if odd:
            print(f"  note: {len(odd)} kill(s) where a survivor's first new term was not the killed term + 1 "
                  f"(an extra election round)")
    print(f"machine CPU busy (of {(os.cpu_count() or 1) * 100} %) per phase: "
          + ", ".join(f"{k} {v:.0f} %" for k, v in busy.items())
          + f"; load average {' '.join(load0)} -> {' '.join(Path('/proc/loadavg').read_text().split()[:3])}")
    if z and st:
        print(f"ratio stock/ZMQ (consensus): median {st['median'] / z['median']:.1f}x, "
              f"p95 {st['p95'] / z['p95']:.1f}x, max {st['max'] / z['max']:.1f}x")
    if ss and z:
        print(f"ratio site/consensus ZMQ: median {ss['median'] / z['median']:.1f}x, p95 {ss['p95'] / z['p95']:.1f}x, "
              f"max {ss['max'] / z['max']:.1f}x")
    if ss and st:
        print(f"ratio stock consensus/site: median {st['median'] / ss['median']:.1f}x, "
              f"p95 {st['p95'] / ss['p95']:.1f}x, max {st['max'] / ss['max']:.1f}x")


if __name__ == "__main__":
    main()
