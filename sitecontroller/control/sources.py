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

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Mapping

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
