"""One rack's state as seen on the bus, and the node's reading aggregated over its racks.

Pure bookkeeping, no I/O: the driver feeds `RackTracker.update` with decoded
frames and the receive time; a model profile turns a tracker's frames into
`RackValues`; `aggregate` merges the values of the racks that are online into
the node's `BmsReading`.

Aggregation rules (racks are strings in parallel on one DC bus):
- pack voltage: mean of the racks; pack current: sum (positive = discharge);
- SOC and SOH: weighted by each rack's usable energy (capacity x SOH) when every
  online rack reports its capacity, else the plain mean;
- cell voltage/temperature: min and max over all racks, average = mean of the
  racks' averages; a cell index is `rack * CELL_INDEX_STRIDE + cell number`
  (cell numbers are 1-based inside the rack, 0 = unknown), so 2005 reads
  "rack 2, cell 5";
- current limits: the sum of the racks' limits (each limit >= 0);
- contactor closed only if every online rack reports closed;
- alarms and faults: the union of the racks' names;
- t: the oldest receive time among the frames used, so staleness is judged
  on the oldest piece of data in the reading.
"""
from __future__ import annotations

from dataclasses import dataclass

from ...process_image import BmsReading

CELL_INDEX_STRIDE = 1000


@dataclass(frozen=True, slots=True)
class RackValues:
    """One rack in project units (V, A with + = discharge, fractions, degC)."""

    t: float
    pack_v: float
    pack_a: float
    soc: float
    soh: float
    cell_v_min_v: float
    cell_v_max_v: float
    cell_v_avg_v: float
    cell_t_min_c: float
    cell_t_max_c: float
    charge_limit_a: float
    discharge_limit_a: float
    contactor_closed: bool
    cell_v_min_no: int = 0
    cell_v_max_no: int = 0
    balancing: bool = False
    sleeping: bool = False
    alarms: frozenset[str] = frozenset()
    faults: frozenset[str] = frozenset()
    capacity_wh: float | None = None
    cells_derived: bool = False  # cell figures derived from the pack, not measured by the BMS


class RackTracker:
    """The latest decoded frames of one rack, when each arrived, and its alive counter."""

    __slots__ = ("index", "frames", "stamps", "version", "alive", "alive_t", "_values", "_values_version")

    def __init__(self, index: int):
        self.index = index
        self.frames: dict[str, dict] = {}
        self.stamps: dict[str, float] = {}
        self.version = 0
        self.alive: int | None = None
        self.alive_t: float | None = None  # when the alive counter last changed (or was first seen)
        self._values: RackValues | None = None
        self._values_version = -1

    def update(self, name: str, values: dict, now: float, alive_signal: str | None = None) -> None:
        self.frames[name] = values
        self.stamps[name] = now
        self.version += 1
        if alive_signal is not None:
            counter = values.get(alive_signal)
            if counter != self.alive or self.alive_t is None:
                self.alive = counter
                self.alive_t = now

    def last_rx(self) -> float | None:
        return max(self.stamps.values()) if self.stamps else None

    def oldest(self, names) -> float:
        return min(self.stamps[n] for n in names)

    def fresh(self, names, now: float, timeout_s: float) -> bool:
        """Every frame in `names` has arrived, the oldest within `timeout_s`."""
        stamps = self.stamps
        for n in names:
            t = stamps.get(n)
            if t is None or now - t > timeout_s:
                return False
        return True

    def alive_stuck(self, now: float, limit_s: float) -> bool:
        return self.alive_t is not None and now - self.alive_t > limit_s

    def values(self, build) -> RackValues:
        """`build(frames, stamps)` (the profile's), cached until the next frame."""
        if self._values_version != self.version:
            self._values = build(self.frames, self.stamps)
            self._values_version = self.version
        return self._values


def _weighted(pairs) -> float:
    total = sum(w for _, w in pairs)
    if total <= 0:
        return sum(v for v, _ in pairs) / len(pairs)
    return sum(v * w for v, w in pairs) / total


def aggregate(racks: dict[int, RackValues], racks_total: int) -> BmsReading | None:
    """The node's reading from its online racks (index -> values); None when none is online."""
    if not racks:
        return None
    items = sorted(racks.items())
    vals = [v for _, v in items]
    n = len(vals)
    caps = [v.capacity_wh for v in vals]
    if all(c is not None and c > 0 for c in caps):
        weights = [c * max(v.soh, 0.0) for c, v in zip(caps, vals)]
        capacity_wh = sum(caps)
    else:
        weights = [1.0] * n
        capacity_wh = None
    vmin_rack, vmin = min(items, key=lambda kv: kv[1].cell_v_min_v)
    vmax_rack, vmax = max(items, key=lambda kv: kv[1].cell_v_max_v)
    return BmsReading(
        t=min(v.t for v in vals),
        soc=_weighted([(v.soc, w) for v, w in zip(vals, weights)]),
        soh=_weighted([(v.soh, c or 1.0) for v, c in zip(vals, caps)]) if capacity_wh else sum(v.soh for v in vals) / n,
        pack_v=sum(v.pack_v for v in vals) / n,
        pack_a=sum(v.pack_a for v in vals),
        cell_v_min_v=vmin.cell_v_min_v,
        cell_v_max_v=vmax.cell_v_max_v,
        cell_v_avg_v=sum(v.cell_v_avg_v for v in vals) / n,
        cell_t_min_c=min(v.cell_t_min_c for v in vals),
        cell_t_max_c=max(v.cell_t_max_c for v in vals),
        # parallel racks share the current about evenly: the weakest rack bounds every rack's share
        charge_limit_a=n * min(max(0.0, v.charge_limit_a) for v in vals),
        discharge_limit_a=n * min(max(0.0, v.discharge_limit_a) for v in vals),
        contactor_closed=all(v.contactor_closed for v in vals),
        cell_v_min_idx=vmin_rack * CELL_INDEX_STRIDE + vmin.cell_v_min_no,
        cell_v_max_idx=vmax_rack * CELL_INDEX_STRIDE + vmax.cell_v_max_no,
        racks_online=n,
        racks_total=racks_total,
        alarms=frozenset().union(*(v.alarms for v in vals)),
        faults=frozenset().union(*(v.faults for v in vals)),
        capacity_wh=capacity_wh,
    )
