"""The lease guard that the Raft transport (transport.py) applies to every Raft message; the
lease itself is computed in consensus.py (``lease_remaining``).

pysyncobj lacks two things a lease needs:

* a lease anchor: each ``append_entries`` carries the leader's send time (``_ls``), a follower
  echoes the newest one it received in its ``next_node_idx`` reply (``_le``); the leader thus
  knows, per follower, the send time of the newest heartbeat that follower acknowledged (same
  monotonic clock, no cross-host clock assumption);
* vote stickiness (Raft thesis §4.2.3): a follower that heard from a current leader less than
  ``stick_s`` ago drops ``request_vote``. With ``lease window <= stick_s`` no new leader can be
  elected while the old one still holds a lease.

The tick thread calls ``stamp`` and ``admit``; ``newest_acks`` is safe from any thread.
"""
from __future__ import annotations

import threading
import time


class LeaseGuard:
    def __init__(self, stick_s: float):
        self.stick_s = stick_s
        self._lock = threading.Lock()
        self._echo: dict[str, float] = {}    # leader id -> newest `_ls` received from it
        self._acked: dict[str, float] = {}   # follower id -> newest echoed send time
        self._last_leader_msg = 0.0          # monotonic time of the last accepted append_entries
        self.votes_dropped = 0

    def stamp(self, node_id: str, message):
        """The message to send to `node_id`: a heartbeat gets its send time, a reply its echo."""
        mtype = message.get("type") if isinstance(message, dict) else None
        if mtype == "append_entries":
            return dict(message, _ls=time.monotonic())
        if mtype == "next_node_idx":
            echo = self._echo.get(node_id)
            if echo is not None:
                return dict(message, _le=echo)
        return message

    def admit(self, node_id: str, message: dict, current_term: int, is_leader: bool) -> bool:
        """Lease bookkeeping and vote stickiness for a received message; False drops it."""
        mtype = message["type"]
        now = time.monotonic()
        if mtype == "append_entries":
            if message.get("term", -1) >= current_term:
                self._last_leader_msg = now
                ls = message.get("_ls")
                if isinstance(ls, float):
                    self._echo[node_id] = ls
        elif mtype == "next_node_idx":
            le = message.get("_le")
            if isinstance(le, float):
                with self._lock:
                    if le > self._acked.get(node_id, 0.0):
                        self._acked[node_id] = le
        elif mtype == "request_vote" and self.stick_s > 0:
            if not is_leader and now - self._last_leader_msg < self.stick_s:
                self.votes_dropped += 1
                return False
        return True

    def newest_acks(self, peer_ids) -> list[float]:
        """Per peer of `peer_ids`, the send time of the newest heartbeat it acknowledged: newest first."""
        with self._lock:
            return sorted((t for nid, t in self._acked.items() if nid in peer_ids), reverse=True)

    def reset_acks(self) -> None:
        with self._lock:
            self._acked.clear()

    def forget(self, node_id: str) -> None:
        with self._lock:
            self._acked.pop(node_id, None)
            self._echo.pop(node_id, None)
