"""One rack's state as seen on the bus, and the node's reading aggregated over its racks.

Pure bookkeeping, no I/O: the driver feeds `RackTracker.update` with decoded
frames and the receive time; a model profile turns a tracker's frames into
`RackValues`; `aggregate` merges the values of the racks that are online into
the node's `BmsReading`.

Aggregation rules (racks are strings in parallel on one DC bus):
- pack voltage: mean of the racks; pack current: sum (positive = discharge);
- SOC and SOH: weighted by each rack's usable energy (capacity x SOH) when every
  online rack reports its capacity, else the plain mean;
- SOC extremes (`soc_min`, `soc_max`): the emptiest and the fullest rack, over
  the online racks AND the last known values of configured racks that are
  offline (a silent rack may still be connected: it must not be drained below
  the reserve because its frames stopped);
- cell voltage/temperature: min and max over all racks, average = mean of the
  racks' averages; a cell index is `rack * CELL_INDEX_STRIDE + cell number`
  (cell numbers are 1-based inside the rack, 0 = unknown), so 2005 reads
  "rack 2, cell 5";
- current limits: online racks x the weakest online rack's limit (parallel racks
  share the current about evenly); an offline rack adds nothing;
- voltage limits: the lowest charge and the highest discharge voltage limit;
- charge/discharge enabled only if every online rack enables it; force charge
  if any rack requests it;
- contactor closed only if every online rack reports closed;
- alarms and faults: the union of the racks' names;
- t: the oldest receive time among the frames used, so staleness is judged
  on the oldest piece of data in the reading.

Nothing is laundered: a NaN anywhere stays NaN in the aggregate (Python's
min/max would silently skip it), and a negative limit stays negative, so the
node's protection sees an impossible value instead of a plausible one.
"""
from __future__ import annotations

import math
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
    charge_v_max_v: float | None = None  # the BMS's charge voltage limit (string volts), None = not sent
    discharge_v_min_v: float | None = None  # the BMS's discharge voltage limit (string volts)
    charge_enabled: bool = True
    discharge_enabled: bool = True
    force_charge: bool = False


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

    def complete(self, names) -> bool:
        """Every frame in `names` has arrived at least once (its values can be built, however old)."""
        return all(n in self.stamps for n in names)

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


def _lowest(values) -> float:
    """min() that returns NaN if any value is NaN (built-in min skips NaN depending on its position)."""
    values = list(values)
    return math.nan if any(math.isnan(v) for v in values) else min(values)


def _highest(values) -> float:
    values = list(values)
    return math.nan if any(math.isnan(v) for v in values) else max(values)


def _extreme_rack(items, key, pick):
    """(rack index, values) of the rack whose `key` is the extreme (`pick` = min/max); a NaN rack wins."""
    for kv in items:
        if math.isnan(key(kv[1])):
            return kv
    return pick(items, key=lambda kv: key(kv[1]))


def _limit(values, pick) -> float | None:
    """The binding voltage limit over the racks that send one (None if none does; NaN if any is NaN)."""
    sent = [v for v in values if v is not None]
    return pick(sent) if sent else None


def aggregate(racks: dict[int, RackValues], racks_total: int,
              offline: dict[int, RackValues] | None = None) -> BmsReading | None:
    """The node's reading from its online racks (index -> values); None when none is online.

    `offline`: the last known values of configured racks that are offline now; only their SOC is used,
    in the extremes `soc_min` / `soc_max` (see the module docstring).
    """
    if not racks:
        return None
    items = sorted(racks.items())
    vals = [v for _, v in items]
    n = len(vals)
    caps = [v.capacity_wh for v in vals]
    if all(c is not None and c > 0 for c in caps):
        weights = [c * max(v.soh, 0.0) if not math.isnan(v.soh) else math.nan for c, v in zip(caps, vals)]
        capacity_wh = sum(caps)
    else:
        weights = [1.0] * n
        capacity_wh = None
    vmin_rack, vmin = _extreme_rack(items, lambda v: v.cell_v_min_v, min)
    vmax_rack, vmax = _extreme_rack(items, lambda v: v.cell_v_max_v, max)
    socs = [v.soc for v in vals] + [v.soc for v in (offline or {}).values()]
    return BmsReading(
        t=min(v.t for v in vals),
        soc=_weighted([(v.soc, w) for v, w in zip(vals, weights)]),  # a NaN SOC or SOH makes it NaN
        soh=_weighted([(v.soh, c or 1.0) for v, c in zip(vals, caps)]) if capacity_wh else sum(v.soh for v in vals) / n,
        pack_v=sum(v.pack_v for v in vals) / n,
        pack_a=sum(v.pack_a for v in vals),
        cell_v_min_v=vmin.cell_v_min_v,
        cell_v_max_v=vmax.cell_v_max_v,
        cell_v_avg_v=sum(v.cell_v_avg_v for v in vals) / n,
        cell_t_min_c=_lowest(v.cell_t_min_c for v in vals),
        cell_t_max_c=_highest(v.cell_t_max_c for v in vals),
        # parallel racks share the current about evenly: the weakest rack bounds every rack's share;
        # a negative or NaN limit is passed on as it is (the node's protection flags it)
        charge_limit_a=n * _lowest(v.charge_limit_a for v in vals),
        discharge_limit_a=n * _lowest(v.discharge_limit_a for v in vals),
        contactor_closed=all(v.contactor_closed for v in vals),
        cell_v_min_idx=vmin_rack * CELL_INDEX_STRIDE + vmin.cell_v_min_no,
        cell_v_max_idx=vmax_rack * CELL_INDEX_STRIDE + vmax.cell_v_max_no,
        racks_online=n,
        racks_total=racks_total,
        alarms=frozenset().union(*(v.alarms for v in vals)),
        faults=frozenset().union(*(v.faults for v in vals)),
        capacity_wh=capacity_wh,
        soc_min=_lowest(socs),
        soc_max=_highest(socs),
        charge_v_max_v=_limit((v.charge_v_max_v for v in vals), _lowest),
        discharge_v_min_v=_limit((v.discharge_v_min_v for v in vals), _highest),
        charge_enabled=all(v.charge_enabled for v in vals),
        discharge_enabled=all(v.discharge_enabled for v in vals),
        force_charge=any(v.force_charge for v in vals),
    )
