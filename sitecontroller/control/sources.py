"""Setpoint sources: latest-value inboxes for power requests (DESIGN §4).

Every way power can be requested is a *source*: the local CLI, cluster
dispatch, SCADA, a cloud schedule. A source keeps only its latest value with
the time it arrived and how long it stays valid; the cycle freezes the fresh
ones into the process image like device readings (stale = absent). A
per-cycle stream such as cluster dispatch is a source, never a Command: no
audit line and no fsync per cycle.

Inboxes are written from the event loop's thread (an edge that lives on
another thread hands its value over with `loop.call_soon_threadsafe`).
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Mapping

from ..cycle import nearest_rank

# Every source the node knows, in the order the README documents them.
LOCAL, CLUSTER, SCADA, CLOUD = "local", "cluster", "scada", "cloud"
SOURCE_NAMES = (LOCAL, CLUSTER, SCADA, CLOUD)


@dataclass(frozen=True, slots=True)
class SetpointReading:
    """One source's latest request, as frozen into the process image."""

    source: str
    p_w: float  # positive = discharge
    t: float  # monotonic time it arrived
    valid_until: float  # monotonic; absent from the image from then on
    origin: str = ""  # who asked (a command id, "term 4 seq 881", a Modbus client)
    meta: Mapping[str, Any] = field(default_factory=dict)


class SetpointInbox:
    """The latest value of one source. `put` replaces, `withdraw` empties."""

    def __init__(self, name: str, default_valid_s: float):
        if name not in SOURCE_NAMES:
            raise ValueError(f"unknown setpoint source {name!r}; known: {', '.join(SOURCE_NAMES)}")
        self.name = name
        self.default_valid_s = default_valid_s
        self._latest: SetpointReading | None = None
        self.updates = 0

    def put(self, p_w: float, now: float, *, valid_s: float | None = None, origin: str = "",
            meta: Mapping[str, Any] | None = None) -> SetpointReading:
        valid = self.default_valid_s if valid_s is None else valid_s
        self._latest = SetpointReading(self.name, float(p_w), now, now + valid, origin, MappingProxyType(dict(meta or {})))
        self.updates += 1
        return self._latest

    def withdraw(self) -> None:
        self._latest = None

    def latest(self) -> SetpointReading | None:
        return self._latest


class SetpointAge:
    """How old each new setpoint is when the cycle hands it to the inverter driver (which
    writes at once): from its origin's decision (`meta["decided_wall"]`, the leader's clock
    for a cluster dispatch) to this node's clock at the write, in ms. One sample per new
    reading of the owning source; the last `window`. Across machines it includes their
    clock offset (NTP)."""

    def __init__(self, window: int = 3000):
        self.ms: deque[float] = deque(maxlen=window)
        self._last_t: float | None = None

    def observe(self, reading: SetpointReading | None, wall_now: float) -> None:
        if reading is None or reading.t == self._last_t or not reading.meta.get("decided_wall"):
            return
        self._last_t = reading.t
        self.ms.append((wall_now - reading.meta["decided_wall"]) * 1000)

    def summary(self) -> dict[str, float] | None:
        if not self.ms:
            return None
        return {"p50": round(nearest_rank(self.ms, 50), 2), "p99": round(nearest_rank(self.ms, 99), 2),
                "max": round(max(self.ms), 2), "n": len(self.ms)}


class SetpointSources:
    """The node's inboxes by name, frozen together once per cycle."""

    def __init__(self, default_valid_s: float, names=SOURCE_NAMES):
        self.inboxes = {n: SetpointInbox(n, default_valid_s) for n in names}

    def __getitem__(self, name: str) -> SetpointInbox:
        return self.inboxes[name]

    def withdraw_all(self) -> None:
        for inbox in self.inboxes.values():
            inbox.withdraw()

    def freeze(self, now: float) -> tuple[dict[str, SetpointReading], frozenset[str]]:
        """The fresh readings by source, and the names of those that expired."""
        fresh, expired = {}, set()
        for name, inbox in self.inboxes.items():
            r = inbox.latest()
            if r is None:
                continue
            if now < r.valid_until:
                fresh[name] = r
            else:
                expired.add(name)
        return fresh, frozenset(expired)
