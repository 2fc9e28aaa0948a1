"""Which cluster setpoints a node executes (DESIGN §5: leadership is a lease).

A node executes a dispatch only when its term is not lower than the highest term it
has seen (a deposed leader's late dispatch is ignored) and, within a term, only a
newer sequence number (a reordered or repeated message is ignored). Each ignored
message is counted by its reason. Validity is the receiver's business: the setpoint
goes into the node's cluster inbox valid for `valid_s` from its arrival, so clocks of
different nodes never have to agree.

Pure: no clock, no I/O.
"""
from __future__ import annotations

from collections import Counter

from .messages import DispatchMessage


class TermFence:
    def __init__(self, node_id: str, highest_term: int = 0):
        self.node_id = node_id
        self.highest_term = highest_term  # seen in any dispatch (or Raft, via `observe_term`)
        self._last: tuple[int, int] | None = None  # (term, seq) last executed
        self.ignored: Counter[str] = Counter()

    def observe_term(self, term: int) -> None:
        """A term learnt elsewhere (the node's own Raft state) also fences older dispatches."""
        self.highest_term = max(self.highest_term, term)

    def admit(self, msg: DispatchMessage) -> float | None:
        """This node's setpoint from `msg` when it may execute it, else None (counted)."""
        if msg.term < self.highest_term:
            return self._ignore("older term")
        if self._last is not None and msg.term == self._last[0] and msg.seq <= self._last[1]:
            return self._ignore("not newer")
        if self.node_id not in msg.setpoints:
            return self._ignore("not for this node")
        self.highest_term = msg.term
        self._last = (msg.term, msg.seq)
        return msg.setpoints[self.node_id]

    def _ignore(self, reason: str) -> None:
        self.ignored[reason] += 1
        return None
