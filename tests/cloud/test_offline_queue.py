"""The offline queue: order, acknowledged removal, bounds (oldest dropped first, counted), a seq that
survives restarts, and `kill -9` at random moments losing nothing that was queued."""
import json
import os
import random
import signal
import subprocess
import sys

from sitecontroller.cloud.offline_queue import OfflineQueue
from tests.util import REPO


class FakeWall:
    def __init__(self, t=1_000_000.0):
        self.t = t

    def __call__(self):
        return self.t


def test_messages_leave_in_order_and_only_when_removed(tmp_path):
    q = OfflineQueue(tmp_path / "q.sqlite", 3600, 10_000_000)
    seqs = [q.put("SC_Spot_10s", {"type": "SC_Spot_10s"}, {"i": i}) for i in range(10)]
    assert seqs == list(range(1, 11))
    rows = q.peek(4)
    assert [json.loads(r.body)["i"] for r in rows] == [0, 1, 2, 3] and rows[0].properties == {"type": "SC_Spot_10s"}
    assert [json.loads(r.body)["seq"] for r in rows] == [1, 2, 3, 4]
    q.remove([r.id for r in rows[:2]])
    assert [json.loads(r.body)["i"] for r in q.peek(3)] == [2, 3, 4]
    assert q.stats()["queued"] == 8
    q.close()
    again = OfflineQueue(tmp_path / "q.sqlite", 3600, 10_000_000)  # a restart keeps the queue and the seq
    assert again.stats()["queued"] == 8 and again.put("x", {}, {}) == 11
    again.close()


def test_age_and_size_bounds_drop_the_oldest_first_and_count_them(tmp_path):
    wall = FakeWall()
    q = OfflineQueue(tmp_path / "q.sqlite", max_age_s=100, max_bytes=2_000, wall=wall)
    for i in range(5):
        q.put("e", {}, {"i": i})
        wall.t += 30
    # the first two are older than 100 s by now
    rows = q.peek(10)
    assert [json.loads(r.body)["i"] for r in rows] == [2, 3, 4] and q.stats()["dropped"] == 2
    for i in range(5, 60):
        q.put("e", {}, {"i": i, "pad": "x" * 50})
    stats = q.stats()
    assert stats["bytes"] <= 2_000 and stats["dropped"] > 2
    kept = [json.loads(r.body)["i"] for r in q.peek(1000)]
    assert kept == list(range(kept[0], 60))  # the newest kept, in order, no holes
    assert stats["queued"] == len(kept) and stats["dropped"] == 60 - len(kept)
    q.close()


_WRITER = """
import sys
from sitecontroller.cloud.offline_queue import OfflineQueue
q = OfflineQueue(sys.argv[1], 3600, 100_000_000)
i = 0
while True:
    seq = q.put("SC_Spot_10s", {"type": "SC_Spot_10s"}, {"i": i, "pad": "y" * 200})
    print("put", seq, flush=True)
    if i % 3 == 2:  # the sender's side: what the hub acknowledged is removed
        rows = q.peek(2)
        print("ack", *(__import__("json").loads(r.body)["seq"] for r in rows), flush=True)
        q.remove([r.id for r in rows])
    i += 1
"""


def test_kill_9_at_random_moments_loses_nothing_queued(tmp_path):
    """50 runs of a writer killed after a random time: every message whose `put` returned is still
    queued unless the hub acknowledged it; the seq never goes back, the order holds."""
    db = tmp_path / "q.sqlite"
    rng = random.Random(7)
    acked: set[int] = set()
    committed: list[int] = []
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for _ in range(50):
        proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(db)], stdout=subprocess.PIPE, text=True, env=env)
        first = proc.stdout.readline()
        assert first.startswith("put"), "the writer did not start"
        try:
            proc.wait(rng.uniform(0.0, 0.15))
        except subprocess.TimeoutExpired:
            pass
        proc.send_signal(signal.SIGKILL)
        out = proc.stdout.read()  # (not communicate(timeout=...): it would skip what readline buffered)
        proc.stdout.close()
        proc.wait(10)
        for line in (first + out).splitlines():
            words = line.split()
            if words and words[0] == "put" and len(words) == 2:
                committed.append(int(words[1]))
            elif words and words[0] == "ack":
                acked.update(int(w) for w in words[1:])
        q = OfflineQueue(db, 3600, 100_000_000)
        queued = [json.loads(r.body)["seq"] for r in q.peek(1_000_000)]
        lost = set(committed) - acked - set(queued)
        assert not lost, f"queued messages lost by kill -9: {sorted(lost)[:10]}; this run printed {first + out!r}"
        assert queued == sorted(queued)  # still in order
        assert q.put("probe", {}, {}) > max(committed)  # the seq never goes back
        q.remove([r.id for r in q.peek(1_000_000) if json.loads(r.body).get("i") is None])
        q.close()
    assert len(committed) > 100
