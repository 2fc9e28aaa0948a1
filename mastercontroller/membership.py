"""Who is in the cluster and how each member is doing: the cluster process image (DESIGN §5).

Every node publishes a `StatusMessage` each cycle; `Membership` keeps the latest one
per configured member with its arrival time. A member whose latest status is older
than `stale_s` is offline, exactly like a stale device reading is absent on a node.
A status from a node that is not a member is ignored and counted.

Pure in time: `now` (monotonic seconds of this process) is passed in.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from .messages import StatusMessage


@dataclass(frozen=True, slots=True)
class MemberView:
    node_id: str
    online: bool
    age_s: float | None  # since its latest status (None: never heard)
    status: StatusMessage | None  # the latest, even when stale (for reporting)


class Membership:
    def __init__(self, member_ids, stale_s: float):
        self.stale_s = stale_s
        self._latest: dict[str, tuple[float, StatusMessage] | None] = {m: None for m in member_ids}
        self.ignored: Counter[str] = Counter()

    @property
    def member_ids(self) -> list[str]:
        return list(self._latest)

    def add(self, node_id: str) -> None:
        self._latest.setdefault(node_id, None)

    def remove(self, node_id: str) -> None:
        self._latest.pop(node_id, None)

    def update(self, msg: StatusMessage, now: float) -> None:
        if msg.node_id not in self._latest:
            self.ignored["not a member"] += 1
            return
        self._latest[msg.node_id] = (now, msg)

    def image(self, now: float) -> list[MemberView]:
        views = []
        for node_id, entry in self._latest.items():
            if entry is None:
                views.append(MemberView(node_id, False, None, None))
                continue
            t, msg = entry
            views.append(MemberView(node_id, now - t <= self.stale_s, now - t, msg))
        return views
